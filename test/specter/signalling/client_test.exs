defmodule Specter.Signalling.ClientTest do
  use ExUnit.Case, async: true

  alias Specter.Signalling.{Client, HTTP, Server}

  doctest Specter.Signalling.Codec

  @ip {127, 0, 0, 1}

  setup do
    server = start_supervised!({Server, port: 0, ip: @ip}, id: :server)
    %{server: server, port: Server.port(server)}
  end

  defp client(port, name, opts \\ []) do
    opts = [peer_name: name, port: port, ip: @ip, backoff_min: 20, backoff_max: 200] ++ opts
    {:ok, client} = Client.start_link(opts)
    assert_receive {:specter_signalling, ^client, {:signed_in, id, peers}}
    {client, id, peers}
  end

  # A plain libwebrtc-style peer: raw HTTP, no Specter on its side.
  defp native_sign_in(port, name) do
    {:ok, {200, %{"pragma" => id}, _}} = HTTP.request(@ip, port, "GET", "/sign_in?" <> name)
    id
  end

  defp native_wait(port, id) do
    {:ok, {200, headers, body}} =
      HTTP.request(@ip, port, "GET", "/wait?peer_id=#{id}", timeout: 5_000)

    {headers["pragma"], body}
  end

  defp native_post(port, from, to, body) do
    {:ok, {200, _, _}} =
      HTTP.request(@ip, port, "POST", "/message?peer_id=#{from}&to=#{to}", body: body)

    :ok
  end

  test "sign in, peer list, joins and leaves reach the owner", %{port: port} do
    {alice, alice_id, peers} = client(port, "alice")
    assert peers == %{}
    assert {:ok, ^alice_id} = Client.id(alice)

    {bob, bob_id, peers} = client(port, "bob")
    assert peers == %{alice_id => "alice"}
    assert_receive {:specter_signalling, ^alice, {:peer_joined, ^bob_id, "bob"}}
    assert Client.peers(alice) == %{bob_id => "bob"}
    assert Client.find_peer(alice, "bob") == {:ok, bob_id}
    assert Client.find_peer(alice, "nobody") == {:error, :not_found}

    {carol, carol_id, _} = client(port, "carol")
    assert_receive {:specter_signalling, ^alice, {:peer_joined, ^carol_id, "carol"}}
    assert_receive {:specter_signalling, ^bob, {:peer_joined, ^carol_id, "carol"}}

    assert :ok = Client.sign_out(carol)
    refute Process.alive?(carol)
    assert_receive {:specter_signalling, ^alice, {:peer_left, ^carol_id, "carol"}}
    assert_receive {:specter_signalling, ^bob, {:peer_left, ^carol_id, "carol"}}
    assert Client.peers(bob) == %{alice_id => "alice"}
  end

  test "two clients relay control, SDP and candidates as Specter.Signaller messages", %{
    port: port
  } do
    {alice, alice_id, _} = client(port, "alice")
    {bob, bob_id, _} = client(port, "bob")
    me = self()
    # bob's session: forwards what it receives to the test process
    bob_session =
      spawn_link(fn ->
        send(me, {:registered, Client.register(bob, "bob", self())})
        forward(me)
      end)

    assert_receive {:registered, {:ok, ^bob}}
    assert {:ok, ^alice} = Client.register(alice, alice_id, self())

    assert Client.register(alice, "someone else", spawn(fn -> :ok end)) ==
             {:error, :already_registered}

    signaller = {Client, alice}

    candidate = %{
      "candidate" => "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
      "sdpMid" => "0",
      "sdpMLineIndex" => 0
    }

    messages = [
      {:control, :init, nil},
      {:control, :accept, "ok"},
      {:sdp, %{"type" => "offer", "sdp" => "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}},
      {:candidate, candidate},
      {:candidate, nil},
      {:sdp, %{"type" => "answer", "sdp" => "v=0\r\n"}},
      {:control, :reject, "busy"},
      {:control, :hangup, nil}
    ]

    {module, config} = signaller

    for message <- messages do
      assert :ok = module.send_signal(config, alice_id, bob_id, message)
    end

    for message <- messages do
      assert_receive {:from_session, {:specter_signal, ^alice_id, ^message}}
    end

    # and back, to the session registered on alice
    assert :ok = Client.send_signal(bob, bob_id, alice_id, {:control, :init, "call me"})
    assert_receive {:specter_signal, ^bob_id, {:control, :init, "call me"}}

    assert Client.send_signal(alice, alice_id, "999", {:control, :init, nil}) ==
             {:error, :unknown_peer}

    assert Client.send_signal(alice, alice_id, bob_id, {:nonsense}) == {:error, :invalid_message}
    assert :ok = Client.unregister(alice, alice_id)
    assert :ok = Client.send_signal(bob, bob_id, alice_id, {:control, :hangup, nil})
    # no session: the owner gets it
    assert_receive {:specter_signalling, ^alice, {:signal, ^bob_id, {:control, :hangup, nil}}}
    Process.unlink(bob_session)
  end

  test "a plain libwebrtc peer: offer without init, BYE, candidates in libwebrtc's JSON", %{
    port: port
  } do
    {alice, alice_id, _} = client(port, "alice")
    assert {:ok, _} = Client.register(alice, "alice", self())
    native = native_sign_in(port, "native@host")
    assert_receive {:specter_signalling, ^alice, {:peer_joined, ^native, "native@host"}}
    assert {:ok, ^native} = Client.find_peer(alice, "native@host")

    offer = ~s({"type":"offer","sdp":"v=0\\r\\n"})
    native_post(port, native, alice_id, offer)
    assert_receive {:specter_signal, ^native, {:control, :init, nil}}
    assert_receive {:specter_signal, ^native, {:sdp, %{"type" => "offer", "sdp" => "v=0\r\n"}}}

    # a renegotiation offer in the same call: no second init
    native_post(port, native, alice_id, offer)
    assert_receive {:specter_signal, ^native, {:sdp, %{"type" => "offer"}}}
    refute_received {:specter_signal, ^native, {:control, :init, nil}}

    candidate =
      ~s({"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"})

    native_post(port, native, alice_id, candidate)

    assert_receive {:specter_signal, ^native,
                    {:candidate, %{"sdpMid" => "0", "sdpMLineIndex" => 0}}}

    # what alice sends is what libwebrtc's Conductor parses
    :ok =
      Client.send_signal(
        alice,
        alice_id,
        native,
        {:sdp, %{"type" => "answer", "sdp" => "v=0\r\n"}}
      )

    assert {^alice_id, body} = native_wait(port, native)
    assert {:ok, %{"type" => "answer", "sdp" => "v=0\r\n"}} == Specter.JSON.decode(body)

    c = %{
      "candidate" => "candidate:2 1 udp 1 127.0.0.1 7 typ host",
      "sdpMid" => "0",
      "sdpMLineIndex" => 0
    }

    :ok = Client.send_signal(alice, alice_id, native, {:candidate, c})
    assert {^alice_id, body} = native_wait(port, native)
    assert Specter.JSON.decode(body) == {:ok, c}

    native_post(port, native, alice_id, "BYE")
    assert_receive {:specter_signal, ^native, {:control, :hangup, nil}}

    :ok = Client.send_signal(alice, alice_id, native, {:control, :hangup, "done"})
    assert {^alice_id, "BYE"} = native_wait(port, native)

    # after BYE, a new offer is a new call again
    native_post(port, native, alice_id, offer)
    assert_receive {:specter_signal, ^native, {:control, :init, nil}}
    assert_receive {:specter_signal, ^native, {:sdp, _}}

    # and when the peer leaves mid-call, the session hears a hangup
    {:ok, {200, _, _}} = HTTP.request(@ip, port, "GET", "/sign_out?peer_id=#{native}")
    assert_receive {:specter_signal, ^native, {:control, :hangup, "peer_left"}}
    assert_receive {:specter_signalling, ^alice, {:peer_left, ^native, "native@host"}}
  end

  test "an answer from a peer that never accepted comes with a made-up accept", %{port: port} do
    {alice, alice_id, _} = client(port, "alice")
    assert {:ok, _} = Client.register(alice, alice_id, self())
    native = native_sign_in(port, "native")
    :ok = Client.send_signal(alice, alice_id, native, {:control, :init, nil})

    :ok =
      Client.send_signal(
        alice,
        alice_id,
        native,
        {:sdp, %{"type" => "offer", "sdp" => "v=0\r\n"}}
      )

    native_post(port, native, alice_id, ~s({"type":"answer","sdp":"v=0\\r\\n"}))
    assert_receive {:specter_signal, ^native, {:control, :accept, nil}}
    assert_receive {:specter_signal, ^native, {:sdp, %{"type" => "answer"}}}
  end

  test "raw messages reach the owner with their content type", %{port: port} do
    {alice, alice_id, _} = client(port, "alice")
    {bob, bob_id, _} = client(port, "bob")
    assert :ok = Client.send_message(bob, alice_id, "hello", "text/x-greeting")
    assert_receive {:specter_signalling, ^alice, {:message, ^bob_id, "text/x-greeting", "hello"}}
    assert Client.send_message(bob, "12345", "hello") == {:error, :unknown_peer}
    assert Client.send_message(bob, "not an id", "hello") == {:error, :unknown_peer}
  end

  test "reconnects with backoff after a server restart", %{port: port} do
    {alice, alice_id, _} = client(port, "alice")
    {bob, _bob_id, _} = client(port, "bob")
    assert {:ok, _} = Client.register(alice, "alice", self())
    assert :ok = stop_supervised(:server)

    assert_receive {:specter_signalling, ^alice, {:disconnected, _}}
    assert_receive {:specter_signalling, ^bob, {:disconnected, _}}
    assert Client.id(alice) == {:error, :not_signed_in}
    assert Client.send_message(alice, "1", "x") == {:error, :not_signed_in}
    Process.sleep(300)

    server = start_supervised!({Server, port: port, ip: @ip}, id: :server)
    assert_receive {:specter_signalling, ^alice, {:signed_in, new_alice, _}}, 5_000
    assert_receive {:specter_signalling, ^bob, {:signed_in, new_bob, _}}, 5_000
    assert Enum.sort(Enum.map(Server.members(server), &elem(&1, 1))) == ["alice", "bob"]
    assert {:ok, _} = Client.await_signed_in(alice)

    # the session stays registered (by name) across the new id
    assert :ok = Client.send_signal(bob, new_bob, new_alice, {:control, :init, nil})
    assert_receive {:specter_signal, ^new_bob, {:control, :init, nil}}
    refute_received {:specter_signalling, ^alice, {:disconnected, _}}
    assert is_binary(alice_id)
  end

  test "a client whose server is not there keeps trying, then signs in" do
    {:ok, listen} = :gen_tcp.listen(0, ip: @ip)
    {:ok, free} = :inet.port(listen)
    :gen_tcp.close(listen)

    {:ok, client} =
      Client.start_link(peer_name: "late", port: free, backoff_min: 20, backoff_max: 100)

    assert_receive {:specter_signalling, ^client, {:disconnected, :econnrefused}}
    assert Client.await_signed_in(client, 100) == {:error, :timeout}
    start_supervised!({Server, port: free, ip: @ip}, id: :late_server)
    assert {:ok, "1"} = Client.await_signed_in(client, 5_000)
  end

  test "a client leaves the server when its owner exits", %{port: port, server: server} do
    me = self()

    owner =
      spawn(fn ->
        {:ok, client} = Client.start_link(peer_name: "short-lived", port: port)
        {:ok, _} = Client.await_signed_in(client)
        send(me, {:client, client})
        receive do: (:stop -> :ok)
      end)

    assert_receive {:client, client}
    assert [{_, "short-lived"}] = Server.members(server)
    ref = Process.monitor(client)
    send(owner, :stop)
    assert_receive {:DOWN, ^ref, :process, ^client, _}
    assert Server.members(server) == []
  end

  test "reconnect: false stops the client when the server goes away", %{port: port} do
    Process.flag(:trap_exit, true)
    {client, _, _} = client(port, "once", reconnect: false)
    assert :ok = stop_supervised(:server)
    assert_receive {:specter_signalling, ^client, {:disconnected, _}}
    assert_receive {:EXIT, ^client, {:shutdown, _}}
  end

  test "calls on a client that is gone are errors, not exits" do
    Process.flag(:trap_exit, true)
    {:ok, client} = Client.start_link(peer_name: "x", port: 1, reconnect: false)
    ref = Process.monitor(client)
    assert_receive {:DOWN, ^ref, :process, _, _}
    assert Client.id(client) == {:error, :noproc}
    assert Client.register(client, "x", self()) == {:error, :signaller_down}

    assert Client.send_signal(client, "1", "2", {:control, :init, nil}) ==
             {:error, :signaller_down}

    assert Client.unregister(client, "x") == :ok
  end

  defp forward(to) do
    receive do
      message ->
        send(to, {:from_session, message})
        forward(to)
    end
  end
end
