defmodule Specter.Signalling.ServerTest do
  # Wire-level tests: raw :gen_tcp requests against a server on a free loopback port.
  use ExUnit.Case, async: true

  alias Specter.Signalling.Server

  doctest Specter.Signalling.HTTP
  doctest Specter.Signalling.Server

  @ip {127, 0, 0, 1}
  @sorry "<html><body>Sorry, not yet implemented</body></html>"

  setup context do
    opts = [port: 0, ip: @ip, read_timeout: 500] ++ Map.get(context, :server_opts, [])
    server = start_supervised!({Server, opts})
    %{server: server, port: Server.port(server)}
  end

  ## Helpers

  defp connect(port) do
    {:ok, sock} = :gen_tcp.connect(@ip, port, [:binary, active: false])
    sock
  end

  # Sends `data` on a fresh connection and reads until the server closes it.
  defp raw(port, data) do
    sock = connect(port)
    :ok = :gen_tcp.send(sock, data)
    read_all(sock)
  end

  defp read_all(sock, acc \\ "") do
    case :gen_tcp.recv(sock, 0, 5_000) do
      {:ok, data} -> read_all(sock, acc <> data)
      {:error, :closed} -> parse(acc)
    end
  end

  defp parse(""), do: :closed

  defp parse(response) do
    [head, body] = String.split(response, "\r\n\r\n", parts: 2)
    ["HTTP/1.1 " <> status | lines] = String.split(head, "\r\n")

    headers =
      Map.new(lines, fn line ->
        [name, value] = String.split(line, ": ", parts: 2)
        {name, value}
      end)

    assert headers["Content-Length"] == Integer.to_string(byte_size(body))
    {status, headers, body}
  end

  defp get(port, target), do: raw(port, "GET #{target} HTTP/1.0\r\n\r\n")

  defp post(port, target, body, type \\ "text/plain") do
    raw(
      port,
      "POST #{target} HTTP/1.0\r\nContent-Type: #{type}\r\n" <>
        "Content-Length: #{byte_size(body)}\r\n\r\n" <> body
    )
  end

  defp sign_in(port, name) do
    {"200 Added", %{"Pragma" => id}, _body} = get(port, "/sign_in?#{name}")
    id
  end

  # A /wait whose response has not been read yet.
  defp open_wait(port, id) do
    sock = connect(port)
    :ok = :gen_tcp.send(sock, "GET /wait?peer_id=#{id} HTTP/1.0\r\n\r\n")
    sock
  end

  defp wait(port, id), do: port |> open_wait(id) |> read_all()

  defp pending?(sock), do: :gen_tcp.recv(sock, 0, 150) == {:error, :timeout}

  defp eventually(fun, tries \\ 100) do
    if fun.() or tries == 0, do: fun.(), else: Process.sleep(20) && eventually(fun, tries - 1)
  end

  ## Sign in

  test "sign_in answers 200 Added, the id in Pragma, the caller first", %{port: port} do
    assert {"200 Added", headers, "alice,1,1\n"} = get(port, "/sign_in?alice")
    assert headers["Pragma"] == "1"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Connection"] == "close"

    assert {"200 Added", %{"Pragma" => "2"}, "bob,2,1\nalice,1,1\n"} = get(port, "/sign_in?bob")

    assert {"200 Added", %{"Pragma" => "3"}, "carol,3,1\nalice,1,1\nbob,2,1\n"} =
             get(port, "/sign_in?carol")
  end

  test "names: empty becomes peer_<id>, commas replaced, cut to 512 bytes", %{
    port: port,
    server: server
  } do
    assert {_, _, "peer_1,1,1\n"} = get(port, "/sign_in")
    assert {_, _, "a_b_c,2,1\n" <> _} = get(port, "/sign_in?a,b,c")
    {_, _, body} = get(port, "/sign_in?" <> String.duplicate("n", 1_000))
    assert [long | _] = String.split(body, "\n")
    assert long == String.duplicate("n", 512) <> ",3,1"
    assert [{1, "peer_1"}, {2, "a_b_c"}, {3, _}] = Server.members(server)
  end

  ## Wait, relay, notifications

  test "a wait gets join and leave notifications with its own id in Pragma", %{port: port} do
    alice = sign_in(port, "alice")
    sock = open_wait(port, alice)
    assert pending?(sock)
    bob = sign_in(port, "bob")
    assert {"200 OK", headers, body} = read_all(sock)
    assert body == "bob,#{bob},1\n"
    assert headers["Pragma"] == alice
    assert headers["Content-Type"] == "text/plain"

    sock = open_wait(port, alice)
    assert {"200 OK", _, ""} = get(port, "/sign_out?peer_id=#{bob}")
    assert {"200 OK", %{"Pragma" => ^alice}, "bob,2,0\n"} = read_all(sock)
  end

  test "a message is relayed with its content type and the sender's id", %{port: port} do
    alice = sign_in(port, "alice")
    bob = sign_in(port, "bob")
    # alice's queue holds bob's join notification first
    assert {"200 OK", _, "bob,2,1\n"} = wait(port, alice)

    sock = open_wait(port, alice)
    assert pending?(sock)
    body = ~s({"type":"offer","sdp":"v=0\\r\\n"})

    assert {"200 OK", reply, ""} =
             post(port, "/message?peer_id=#{bob}&to=#{alice}", body, "application/json")

    refute Map.has_key?(reply, "Pragma")

    assert {"200 OK", headers, ^body} = read_all(sock)
    assert headers["Pragma"] == bob
    assert headers["Content-Type"] == "application/json"
  end

  test "messages queued while no wait is pending come in order, one per wait", %{port: port} do
    alice = sign_in(port, "alice")
    bob = sign_in(port, "bob")

    for n <- 1..3,
        do: {"200 OK", _, ""} = post(port, "/message?peer_id=#{bob}&to=#{alice}", "m#{n}")

    carol = sign_in(port, "carol")
    {"200 OK", _, ""} = post(port, "/message?to=#{alice}&peer_id=#{carol}", "from carol")

    assert {_, %{"Pragma" => ^alice}, "bob,2,1\n"} = wait(port, alice)
    assert {_, %{"Pragma" => ^bob}, "m1"} = wait(port, alice)
    assert {_, %{"Pragma" => ^bob}, "m2"} = wait(port, alice)
    assert {_, %{"Pragma" => ^bob}, "m3"} = wait(port, alice)
    assert {_, %{"Pragma" => ^alice}, "carol,3,1\n"} = wait(port, alice)
    assert {_, %{"Pragma" => ^carol}, "from carol"} = wait(port, alice)
    assert pending?(open_wait(port, alice))
  end

  test "a message to oneself comes back in the response", %{port: port} do
    alice = sign_in(port, "alice")

    assert {"200 OK", %{"Pragma" => ^alice, "Content-Type" => "text/x"}, "echo"} =
             post(port, "/message?peer_id=#{alice}&to=#{alice}", "echo", "text/x")
  end

  test "a newer wait replaces a pending one, which is closed", %{port: port} do
    alice = sign_in(port, "alice")
    first = open_wait(port, alice)
    assert pending?(first)
    second = open_wait(port, alice)
    assert read_all(first) == :closed
    sign_in(port, "bob")
    assert {"200 OK", _, "bob,2,1\n"} = read_all(second)
  end

  ## Sign out, unknown ids, time-outs

  test "sign_out leaves: the id is unknown afterwards", %{port: port, server: server} do
    alice = sign_in(port, "alice")
    assert {"200 OK", _, ""} = get(port, "/sign_out?peer_id=#{alice}")
    assert Server.members(server) == []
    assert {"500 Sorry", _, @sorry} = get(port, "/wait?peer_id=#{alice}")
    assert {"500 Sorry", _, @sorry} = get(port, "/sign_out?peer_id=#{alice}")
  end

  # peerconnection_server attributes a GET /wait or /sign_out to a member by its peer_id;
  # one it cannot attribute falls through to its browser-request handler, which answers
  # `500 Sorry` (text/html). A POST /message with a body it cannot attribute or route gets
  # `500 Error`, "Peer most likely gone.".
  test "unknown or malformed ids: 500 Sorry for waits and sign-outs, 500 Error for messages, like peerconnection_server",
       %{port: port} do
    alice = sign_in(port, "alice")
    gone = {"500 Error", "Peer most likely gone."}

    for target <- [
          "/wait?peer_id=99",
          "/wait",
          "/wait?peer_id=abc",
          "/sign_out?peer_id=-1",
          "/sign_out?peer_id=99",
          "/sign_out"
        ] do
      assert {status, headers, body} = get(port, target)
      assert {status, headers["Content-Type"], body} == {"500 Sorry", "text/html", @sorry}, target
    end

    # the member is still there and its own waits still work
    sock = open_wait(port, alice)
    bob = sign_in(port, "bob")
    assert {"200 OK", %{"Pragma" => ^alice}, body} = read_all(sock)
    assert body == "bob,#{bob},1\n"

    for target <- [
          "/message?peer_id=99&to=#{alice}",
          "/message?peer_id=#{alice}&to=99",
          "/message?peer_id=#{alice}",
          "/message?to=#{alice}"
        ] do
      assert {status, _, body} = post(port, target, "hello")
      assert {status, body} == gone, target
    end
  end

  @tag server_opts: [member_timeout: 200]
  test "a member with no pending wait times out; the others are told", %{
    port: port,
    server: server
  } do
    alice = sign_in(port, "alice")
    bob = sign_in(port, "bob")
    assert {_, _, "bob,2,1\n"} = wait(port, alice)
    sock = open_wait(port, alice)

    # alice keeps a wait pending for longer than the timeout, bob never waits
    assert {"200 OK", %{"Pragma" => ^alice}, body} = read_all(sock)
    assert body == "bob,#{bob},0\n"
    assert Server.members(server) == [{1, "alice"}]

    # the time-out counts from the end of the last wait
    Process.sleep(100)
    sock = open_wait(port, alice)
    Process.sleep(250)
    assert pending?(sock)
    :gen_tcp.close(sock)
    assert eventually(fn -> Server.members(server) == [] end)
  end

  @tag server_opts: [max_queue: 2]
  test "a full queue answers 503", %{port: port} do
    alice = sign_in(port, "alice")
    bob = sign_in(port, "bob")
    assert {"200 OK", _, _} = post(port, "/message?peer_id=#{bob}&to=#{alice}", "1")
    assert {"200 OK", _, _} = post(port, "/message?peer_id=#{bob}&to=#{alice}", "2")

    assert {"503 Service Unavailable", _, _} =
             post(port, "/message?peer_id=#{bob}&to=#{alice}", "3")
  end

  ## HTTP

  test "CORS: OPTIONS preflight and the headers on every response", %{port: port} do
    preflight =
      "OPTIONS /message?peer_id=1&to=2 HTTP/1.1\r\nHost: x\r\nOrigin: http://example.test\r\n" <>
        "Access-Control-Request-Method: POST\r\n\r\n"

    assert {"200 OK", headers, ""} = raw(port, preflight)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] =~ "Content-Type"
    refute Map.has_key?(headers, "Content-Type")

    for {_, headers, _} <- [
          get(port, "/sign_in?x"),
          get(port, "/nowhere"),
          raw(port, "x\r\n\r\n")
        ] do
      assert headers["Access-Control-Allow-Origin"] == "*"
      assert headers["Connection"] == "close"
    end
  end

  # The asterisk form (RFC 9112 §3.2.4): peerconnection_server answers any OPTIONS with
  # 200, an empty body and its CORS headers.
  test "OPTIONS * answers 200 with the CORS headers, like peerconnection_server", %{port: port} do
    for request <- ["OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "OPTIONS * HTTP/1.0\r\n\r\n"] do
      assert {"200 OK", headers, ""} = raw(port, request)
      assert headers["Access-Control-Allow-Origin"] == "*"
      assert headers["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"
      assert headers["Connection"] == "close"
      refute Map.has_key?(headers, "Content-Type")
    end

    # another method with the asterisk form is a request the original cannot attribute
    assert {"500 Sorry", _, @sorry} = raw(port, "GET * HTTP/1.1\r\n\r\n")
  end

  test "keep-alive requests are answered with Connection: close and closed", %{port: port} do
    sock = connect(port)
    req = "GET /sign_in?ka HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    :ok = :gen_tcp.send(sock, req)
    assert {"200 Added", %{"Connection" => "close"}, _} = read_all(sock)
  end

  test "malformed requests get a clear error", %{port: port} do
    assert {"400 Bad Request", _, _} = raw(port, "garbage\r\n\r\n")
    assert {"400 Bad Request", _, _} = raw(port, "GET /wait HTTP/1.1\r\nno colon here\r\n\r\n")
    assert {"500 Sorry", %{"Content-Type" => "text/html"}, _} = get(port, "/nowhere")
    assert {"500 Sorry", _, _} = raw(port, "BREW /pot HTTP/1.1\r\n\r\n")
    assert {"405 Method Not Allowed", %{"Allow" => "POST, OPTIONS"}, _} = get(port, "/message")
    assert {"405 Method Not Allowed", _, _} = post(port, "/sign_in?x", "x")

    assert {"411 Length Required", _, _} =
             raw(port, "POST /message?peer_id=1&to=1 HTTP/1.1\r\n\r\n")

    assert {"411 Length Required", _, _} =
             raw(port, "POST /message HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    assert {"400 Bad Request", _, _} =
             raw(port, "POST /message HTTP/1.1\r\nContent-Length: -4\r\n\r\n")

    alice = sign_in(port, "alice")

    assert {"400 Bad Request", _, "Empty message"} =
             post(port, "/message?peer_id=#{alice}&to=#{alice}", "")
  end

  test "oversized requests: 413 for a body over 64 KiB, 431 for huge headers", %{port: port} do
    alice = sign_in(port, "alice")
    target = "/message?peer_id=#{alice}&to=#{alice}"
    big = :binary.copy("x", 65_537)
    assert {"413 Payload Too Large", _, _} = post(port, target, big)
    assert {"200 OK", _, echoed} = post(port, target, binary_part(big, 0, 65_536))
    assert byte_size(echoed) == 65_536

    assert {"431 Request Header Fields Too Large", _, _} =
             get(port, "/sign_in?" <> :binary.copy("n", 20_000))

    many = for n <- 1..120, into: "", do: "X-H#{n}: v\r\n"

    assert {"431 Request Header Fields Too Large", _, _} =
             raw(port, "GET /sign_in?x HTTP/1.1\r\n" <> many <> "\r\n")
  end

  test "a partial request times out with 408; others are served meanwhile", %{port: port} do
    slow = connect(port)
    :ok = :gen_tcp.send(slow, "POST /message?peer_id=1&to=1 HTTP/1.1\r\nContent-Le")
    stalled_body = connect(port)

    :ok =
      :gen_tcp.send(
        stalled_body,
        "POST /message?peer_id=1&to=1 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
      )

    assert sign_in(port, "alice") == "1"
    assert {"408 Request Timeout", _, _} = read_all(slow)
    assert {"408 Request Timeout", _, _} = read_all(stalled_body)
  end

  test "clients vanishing mid-request or mid-wait: nothing is lost, others keep working", %{
    port: port,
    server: server
  } do
    alice = sign_in(port, "alice")
    bob = sign_in(port, "bob")
    assert {_, _, "bob,2,1\n"} = wait(port, alice)

    # a sender vanishes halfway through its body: nothing is relayed
    half = connect(port)
    msg = "POST /message?peer_id=#{bob}&to=#{alice} HTTP/1.0\r\nContent-Length: 100\r\n\r\nhalf"
    :ok = :gen_tcp.send(half, msg)
    :gen_tcp.close(half)

    # a waiter vanishes: its wait is dropped, the next message is queued for the next wait
    sock = open_wait(port, alice)
    assert pending?(sock)
    :gen_tcp.close(sock)
    Process.sleep(50)
    assert {"200 OK", _, ""} = post(port, "/message?peer_id=#{bob}&to=#{alice}", "kept")
    assert {"200 OK", %{"Pragma" => ^bob}, "kept"} = wait(port, alice)

    # a connection process killed mid-wait does not take the server down
    sock = open_wait(port, alice)
    assert pending?(sock)
    {_, tasks, _, _} = server |> Supervisor.which_children() |> List.keyfind(:connections, 0)
    for pid <- Task.Supervisor.children(tasks), do: Process.exit(pid, :kill)
    assert read_all(sock) == :closed
    assert {"200 OK", _, ""} = post(port, "/message?peer_id=#{bob}&to=#{alice}", "after kill")
    assert {"200 OK", %{"Pragma" => ^bob}, "after kill"} = wait(port, alice)
    assert [{1, "alice"}, {2, "bob"}] = Server.members(server)
  end

  test "many waiters and senders at once", %{port: port} do
    ids = for n <- 1..30, do: sign_in(port, "p#{n}")
    # drain the join notifications
    for {id, n} <- Enum.with_index(ids, 1), _ <- n..29//1, do: {"200 OK", _, _} = wait(port, id)

    waits = Map.new(ids, fn id -> {id, Task.async(fn -> wait(port, id) end)} end)
    Process.sleep(100)
    [first | _] = ids

    ids
    |> Enum.map(fn id ->
      Task.async(fn -> post(port, "/message?peer_id=#{first}&to=#{id}", "to #{id}") end)
    end)
    |> Enum.each(&({"200 OK", _, _} = Task.await(&1)))

    for {id, task} <- waits, id != first do
      assert {"200 OK", %{"Pragma" => ^first}, body} = Task.await(task)
      assert body == "to #{id}"
    end
  end

  test "the port is in use: start_link answers {:error, :eaddrinuse}", %{port: port} do
    Process.flag(:trap_exit, true)
    assert {:error, :eaddrinuse} = Server.start_link(port: port, ip: @ip)
  end
end
