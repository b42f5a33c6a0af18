defmodule Specter.Signalling.Server.Connection do
  @moduledoc """
  One client connection of a `Specter.Signalling.Server`: reads one request (with a deadline
  and size limits), answers it, closes. A `/wait` stays open until the member's next
  response arrives from the `Specter.Signalling.Server.Channel` or the client goes away.

  Errors answered here (then the connection closes):

  | condition | status |
  |---|---|
  | unparsable request line or header | `400 Bad Request` |
  | request not complete within `:read_timeout` | `408 Request Timeout` |
  | POST without `Content-Length` (or chunked) | `411 Length Required` |
  | body larger than `:max_body` | `413 Payload Too Large` |
  | headers over 16 KiB or more than 100 header lines | `431 Request Header Fields Too Large` |
  | known path, wrong method | `405 Method Not Allowed` |
  | `POST /message` with an unknown or missing `peer_id` / `to` | `500 Error`, "Peer most likely gone." (as `peerconnection_server`) |
  | `/wait` or `/sign_out` with an unknown or missing `peer_id`, an unknown path | `500 Sorry` (as `peerconnection_server`, which answers any request it cannot attribute to a member so) |
  | recipient's queue full | `503 Service Unavailable` |
  """

  alias Specter.Signalling.HTTP
  alias Specter.Signalling.Server.Channel

  @max_headers 100
  @max_head 16_384

  @doc false
  @spec run(pid(), map()) :: :ok
  def run(channel, config) do
    receive do
      {:socket, sock} -> serve(sock, channel, config)
    after
      5_000 -> :ok
    end
  end

  defp serve(sock, channel, config) do
    deadline = System.monotonic_time(:millisecond) + config.read_timeout

    case read_request(sock, deadline, config) do
      {:ok, request} ->
        handle(request, sock, channel)

      {:error, :closed} ->
        :ok

      {:error, {status, text}} ->
        send_and_close(sock, status, "text/plain", [], text, true)
    end
  after
    :gen_tcp.close(sock)
  end

  ## Reading

  defp read_request(sock, deadline, config) do
    with {:ok, head, rest} <- read_head(sock, deadline, ""),
         {:ok, method, target, head} <- parse_request_line(head),
         {:ok, headers} <- parse_headers(head, %{}, 0),
         {:ok, body} <- read_body(sock, method, headers, rest, deadline, config.max_body) do
      {path, query} =
        case String.split(target, "?", parts: 2) do
          [path, query] -> {path, query}
          [path] -> {path, ""}
        end

      {:ok,
       %{
         method: method,
         path: path,
         query: query,
         content_type: Map.get(headers, "content-type"),
         body: body
       }}
    end
  end

  # Reads up to the blank line that ends the headers: {:ok, head, bytes after it}.
  defp read_head(sock, deadline, buffer) do
    case :binary.match(buffer, "\r\n\r\n") do
      {at, 4} ->
        size = at + 4
        {:ok, binary_part(buffer, 0, size), binary_part(buffer, size, byte_size(buffer) - size)}

      :nomatch when byte_size(buffer) > @max_head ->
        {:error, {"431 Request Header Fields Too Large", "Headers over #{@max_head} bytes"}}

      :nomatch ->
        case :gen_tcp.recv(sock, 0, HTTP.remaining(deadline)) do
          {:ok, data} -> read_head(sock, deadline, buffer <> data)
          error -> read_error(error)
        end
    end
  end

  defp parse_request_line(head) do
    case :erlang.decode_packet(:http_bin, head, []) do
      {:ok, {:http_request, method, uri, _version}, rest} ->
        case target(uri) do
          {:ok, target} -> {:ok, to_string(method), target, rest}
          :error -> {:error, {"400 Bad Request", "Bad request target"}}
        end

      _ ->
        {:error, {"400 Bad Request", "Bad request line"}}
    end
  end

  defp target({:abs_path, target}), do: {:ok, target}
  # The asterisk form (`OPTIONS * HTTP/1.1`), which `decode_packet` gives as an atom.
  defp target(:*), do: {:ok, "*"}
  defp target({:absoluteURI, _scheme, _host, _port, target}), do: {:ok, target}
  defp target(_), do: :error

  defp parse_headers(_head, _acc, count) when count > @max_headers,
    do: {:error, {"431 Request Header Fields Too Large", "Too many headers"}}

  defp parse_headers(head, acc, count) do
    case :erlang.decode_packet(:httph_bin, head, []) do
      {:ok, {:http_header, _, _, name, value}, rest} ->
        parse_headers(rest, Map.put(acc, String.downcase(name), value), count + 1)

      {:ok, :http_eoh, _} ->
        {:ok, acc}

      _ ->
        {:error, {"400 Bad Request", "Bad header"}}
    end
  end

  defp read_body(sock, method, headers, rest, deadline, max_body) do
    cond do
      Map.has_key?(headers, "transfer-encoding") ->
        {:error, {"411 Length Required", "Chunked bodies are not supported"}}

      not Map.has_key?(headers, "content-length") ->
        if method == "POST",
          do: {:error, {"411 Length Required", "Content-Length required"}},
          else: {:ok, ""}

      true ->
        case Integer.parse(headers["content-length"]) do
          {0, ""} ->
            {:ok, ""}

          {n, ""} when n > max_body ->
            {:error, {"413 Payload Too Large", "Body over #{max_body} bytes"}}

          {n, ""} when n > 0 and byte_size(rest) >= n ->
            {:ok, binary_part(rest, 0, n)}

          {n, ""} when n > 0 ->
            case :gen_tcp.recv(sock, n - byte_size(rest), HTTP.remaining(deadline)) do
              {:ok, more} -> {:ok, rest <> more}
              error -> read_error(error)
            end

          _ ->
            {:error, {"400 Bad Request", "Bad Content-Length"}}
        end
    end
  end

  defp read_error({:error, :timeout}), do: {:error, {"408 Request Timeout", "Request timeout"}}

  defp read_error({:error, _}), do: {:error, :closed}

  ## Routing

  @pages %{
    "/" => {"index.html", "text/html; charset=utf-8"},
    "/demo.js" => {"demo.js", "text/javascript; charset=utf-8"},
    "/room" => {"room.html", "text/html; charset=utf-8"},
    "/room.js" => {"room.js", "text/javascript; charset=utf-8"}
  }

  defp handle(%{method: "OPTIONS"}, sock, _channel),
    do: send_and_close(sock, "200 OK", nil, [], "", false)

  defp handle(%{method: "GET", path: "/sign_in", query: name}, sock, channel) do
    {:ok, id, body} = Channel.sign_in(channel, name)
    send_and_close(sock, "200 Added", "text/plain", pragma(id), body, false)
  end

  defp handle(%{method: "GET", path: "/wait"} = request, sock, channel) do
    with {:ok, id} <- param(request, "peer_id"),
         :ok <- Channel.wait(channel, id) do
      wait(sock, channel)
    else
      _ -> sorry(sock)
    end
  end

  defp handle(%{method: "GET", path: "/sign_out"} = request, sock, channel) do
    with {:ok, id} <- param(request, "peer_id"),
         :ok <- Channel.sign_out(channel, id) do
      send_and_close(sock, "200 OK", "text/plain", [], "", false)
    else
      _ -> sorry(sock)
    end
  end

  defp handle(%{method: "POST", path: "/message", body: ""}, sock, _channel),
    do: send_and_close(sock, "400 Bad Request", "text/plain", [], "Empty message", false)

  defp handle(%{method: "POST", path: "/message"} = request, sock, channel) do
    type = request.content_type || "text/plain"

    with {:ok, from} <- param(request, "peer_id"),
         {:ok, to} <- param(request, "to") do
      case Channel.message(channel, from, to, type, request.body) do
        :ok ->
          send_and_close(sock, "200 OK", "text/plain", [], "", false)

        {:echo, {status, type, pragma, body}} ->
          send_and_close(sock, status, type, pragma(pragma), body, false)

        {:error, :queue_full} ->
          send_and_close(sock, "503 Service Unavailable", "text/plain", [], "Queue full", false)

        {:error, _} ->
          gone(sock)
      end
    else
      _ -> gone(sock)
    end
  end

  # The browser demos (priv/static/demo): sign in, peer list, call, chat; and a room page.
  defp handle(%{method: "GET", path: path}, sock, _channel) when is_map_key(@pages, path) do
    {file, type} = Map.fetch!(@pages, path)

    case File.read(Path.join([:code.priv_dir(:specter), "static", "demo", file])) do
      {:ok, body} -> send_and_close(sock, "200 OK", type, [], body, false)
      {:error, _} -> send_and_close(sock, "404 Not Found", "text/plain", [], "Not found", false)
    end
  end

  defp handle(%{path: path, method: method}, sock, _channel)
       when path in ["/sign_in", "/wait", "/sign_out", "/message"] do
    allow = if path == "/message", do: "POST, OPTIONS", else: "GET, OPTIONS"

    send_and_close(
      sock,
      "405 Method Not Allowed",
      "text/plain",
      [{"Allow", allow}],
      "#{method} not allowed",
      false
    )
  end

  defp handle(_request, sock, _channel), do: sorry(sock)

  # What peerconnection_server answers a request it cannot attribute to a member.
  defp sorry(sock) do
    send_and_close(
      sock,
      "500 Sorry",
      "text/html",
      [],
      "<html><body>Sorry, not yet implemented</body></html>",
      false
    )
  end

  defp gone(sock),
    do: send_and_close(sock, "500 Error", "text/plain", [], "Peer most likely gone.", false)

  defp param(%{query: query}, key),
    do: query |> HTTP.parse_query() |> Map.get(key) |> HTTP.parse_id()

  defp pragma(id), do: [{"Pragma", Integer.to_string(id)}]

  ## Waiting

  defp wait(sock, channel) do
    :ok = :inet.setopts(sock, active: :once)

    receive do
      {:deliver, tag, {status, type, id, body}} ->
        result = :gen_tcp.send(sock, HTTP.response(status, type, pragma(id), body))
        Channel.delivered(channel, tag, result)

      :wait_closed ->
        :ok

      {:tcp, ^sock, _data} ->
        # Nothing may follow a request on this connection; ignore it and keep waiting.
        wait(sock, channel)

      {:tcp_closed, ^sock} ->
        :ok

      {:tcp_error, ^sock, _} ->
        :ok
    end
  end

  ## Writing

  defp send_and_close(sock, status, type, extra, body, drain?) do
    _ = :gen_tcp.send(sock, HTTP.response(status, type, extra, body))

    if drain? do
      # Let the client read the error before the close: a close with unread input would
      # reset the connection and could discard the response.
      _ = :gen_tcp.shutdown(sock, :write)
      drain(sock, System.monotonic_time(:millisecond) + 500, 1_048_576)
    end

    :ok
  end

  defp drain(sock, deadline, budget) when budget > 0 do
    case :gen_tcp.recv(sock, 0, HTTP.remaining(deadline)) do
      {:ok, data} -> drain(sock, deadline, budget - byte_size(data))
      _ -> :ok
    end
  end

  defp drain(_sock, _deadline, _budget), do: :ok
end
