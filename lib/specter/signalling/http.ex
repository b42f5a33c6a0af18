defmodule Specter.Signalling.HTTP do
  @moduledoc """
  The small amount of HTTP/1.x that libwebrtc's peerconnection protocol needs, shared by
  `Specter.Signalling.Server` and `Specter.Signalling.Client`: building responses the way
  `peerconnection_server` writes them, parsing query strings, member entries and names,
  and a one-request-per-connection client over `:gen_tcp`.

  Every response carries `Connection: close` (the original server closes every connection
  after one response, and its clients open one connection per request) and the CORS
  headers that let a browser page on another origin use the server.
  """

  @max_name_length 512

  @cors_headers [
    "Access-Control-Allow-Origin: *\r\n",
    "Access-Control-Allow-Credentials: true\r\n",
    "Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n",
    "Access-Control-Allow-Headers: Content-Type, Content-Length, Connection, Cache-Control\r\n",
    "Access-Control-Expose-Headers: Content-Length, Pragma\r\n"
  ]

  @typedoc "A response status line's text after the version, such as `\"200 OK\"`."
  @type status() :: String.t()

  @typedoc "Response of `request/5`: status code, lower-cased header names, body."
  @type response() :: {non_neg_integer(), %{String.t() => String.t()}, binary()}

  @doc """
  Builds a complete response: status line, the fixed headers, `Content-Type` (left out
  when `nil` or empty), `Content-Length`, `extra` headers, the CORS headers and `body`.

      iex> Specter.Signalling.HTTP.response("200 OK", "text/plain", [{"Pragma", "7"}], "hi")
      ...> |> IO.iodata_to_binary()
      ...> |> String.split("\\r\\n")
      ...> |> Enum.take(6)
      ["HTTP/1.1 200 OK", "Server: PeerConnectionTestServer/0.1 (Specter)",
       "Cache-Control: no-cache", "Connection: close", "Content-Type: text/plain",
       "Content-Length: 2"]
  """
  @spec response(status(), String.t() | nil, [{String.t(), String.t()}], iodata()) :: iodata()
  def response(status, content_type, extra, body) do
    type = if content_type in [nil, ""], do: [], else: ["Content-Type: ", content_type, "\r\n"]

    [
      "HTTP/1.1 ",
      status,
      "\r\nServer: PeerConnectionTestServer/0.1 (Specter)\r\n",
      "Cache-Control: no-cache\r\n",
      "Connection: close\r\n",
      type,
      "Content-Length: ",
      Integer.to_string(IO.iodata_length(body)),
      "\r\n",
      Enum.map(extra, fn {name, value} -> [name, ": ", value, "\r\n"] end),
      @cors_headers,
      "\r\n",
      body
    ]
  end

  @doc """
  Splits a query string into a map. Values are taken as they are (no percent-decoding:
  the protocol only carries integer ids in parameters); the first occurrence of a key wins.

      iex> Specter.Signalling.HTTP.parse_query("peer_id=3&to=12")
      %{"peer_id" => "3", "to" => "12"}
      iex> Specter.Signalling.HTTP.parse_query("to=1&to=2&flag")
      %{"flag" => "", "to" => "1"}
  """
  @spec parse_query(String.t()) :: %{String.t() => String.t()}
  def parse_query(query) do
    query
    |> String.split("&", trim: true)
    |> Enum.reduce(%{}, fn pair, acc ->
      {key, value} =
        case String.split(pair, "=", parts: 2) do
          [key, value] -> {key, value}
          [key] -> {key, ""}
        end

      Map.put_new(acc, key, value)
    end)
  end

  @doc """
  Parses a member id: a positive decimal integer and nothing else.

      iex> Specter.Signalling.HTTP.parse_id("42")
      {:ok, 42}
      iex> Specter.Signalling.HTTP.parse_id("42x")
      :error
      iex> Specter.Signalling.HTTP.parse_id(nil)
      :error
  """
  @spec parse_id(String.t() | nil) :: {:ok, pos_integer()} | :error
  def parse_id(text) when is_binary(text) and byte_size(text) in 1..18 do
    case Integer.parse(text) do
      {id, ""} when id > 0 -> {:ok, id}
      _ -> :error
    end
  end

  def parse_id(_), do: :error

  @doc """
  The name a member signs in with, as `peerconnection_server` stores it: the raw query
  string, `peer_<id>` when empty, cut to #{@max_name_length} bytes, commas replaced by `_`
  (a comma separates the fields of a member entry).

      iex> Specter.Signalling.HTTP.member_name("alice,smith", 1)
      "alice_smith"
      iex> Specter.Signalling.HTTP.member_name("", 9)
      "peer_9"
      iex> byte_size(Specter.Signalling.HTTP.member_name(String.duplicate("x", 600), 1))
      512
  """
  @spec member_name(binary(), pos_integer()) :: String.t()
  def member_name("", id), do: "peer_" <> Integer.to_string(id)

  def member_name(raw, _id) do
    raw
    |> binary_part(0, min(byte_size(raw), @max_name_length))
    |> String.replace(",", "_")
  end

  @doc """
  Formats a member entry, `name,id,connected` and a newline.

      iex> Specter.Signalling.HTTP.entry("bob", 2, true)
      "bob,2,1\\n"
  """
  @spec entry(String.t(), pos_integer(), boolean()) :: String.t()
  def entry(name, id, connected?),
    do: "#{name},#{id},#{if connected?, do: 1, else: 0}\n"

  @doc """
  Parses the member entries of a sign-in body or a notification into
  `{id, name, connected?}` tuples, ids as strings; malformed lines are skipped.

      iex> Specter.Signalling.HTTP.parse_entries("alice,1,1\\nbob,2,1\\n")
      [{"1", "alice", true}, {"2", "bob", true}]
      iex> Specter.Signalling.HTTP.parse_entries("bob,2,0\\nnonsense\\n")
      [{"2", "bob", false}]
  """
  @spec parse_entries(binary()) :: [{String.t(), String.t(), boolean()}]
  def parse_entries(body) do
    body
    |> String.split("\n", trim: true)
    |> Enum.flat_map(fn line ->
      case String.split(String.trim_trailing(line, "\r"), ",") do
        [name, id, connected] when connected in ["0", "1"] ->
          case parse_id(id) do
            {:ok, _} -> [{id, name, connected == "1"}]
            :error -> []
          end

        _ ->
          []
      end
    end)
  end

  @doc """
  Sends one request on a fresh connection and reads the whole response (the server closes
  the connection after it). `target` is the path with its query string.

  Options: `:content_type` and `:body` (a POST body), `:timeout` (ms or `:infinity`, for the
  whole exchange; 5 000 by default), `:connect_timeout` (5 000).

  Returns `{:ok, {status, headers, body}}` with lower-cased header names, or
  `{:error, reason}` (`:econnrefused`, `:timeout`, `:closed`, `{:bad_response, term}`, ...).
  """
  @spec request(
          :inet.socket_address() | charlist(),
          :inet.port_number(),
          String.t(),
          String.t(),
          keyword()
        ) :: {:ok, response()} | {:error, term()}
  def request(ip, port, method, target, opts \\ []) do
    timeout = Keyword.get(opts, :timeout, 5_000)
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout
    body = Keyword.get(opts, :body)

    headers =
      case body do
        nil ->
          []

        _ ->
          [
            "Content-Type: ",
            Keyword.get(opts, :content_type, "text/plain"),
            "\r\nContent-Length: ",
            Integer.to_string(IO.iodata_length(body)),
            "\r\n"
          ]
      end

    request = [method, " ", target, " HTTP/1.0\r\n", headers, "\r\n", body || ""]
    sock_opts = [:binary, active: false, packet: :raw, nodelay: true]

    case :gen_tcp.connect(ip, port, sock_opts, Keyword.get(opts, :connect_timeout, 5_000)) do
      {:ok, sock} ->
        try do
          with :ok <- :gen_tcp.send(sock, request) do
            read_response(sock, deadline)
          end
        after
          :gen_tcp.close(sock)
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp read_response(sock, deadline) do
    :ok = :inet.setopts(sock, packet: :http_bin, packet_size: 65_536)

    with {:ok, {:http_response, _version, status, _reason}} <- recv(sock, deadline),
         {:ok, headers} <- read_headers(sock, deadline, %{}),
         :ok <- :inet.setopts(sock, packet: :raw),
         {:ok, body} <- read_body(sock, headers, deadline) do
      {:ok, {status, headers, body}}
    else
      {:ok, other} -> {:error, {:bad_response, other}}
      {:error, reason} -> {:error, reason}
    end
  end

  defp read_headers(sock, deadline, acc) do
    case recv(sock, deadline) do
      {:ok, {:http_header, _, _, name, value}} ->
        read_headers(sock, deadline, Map.put(acc, String.downcase(name), value))

      {:ok, :http_eoh} ->
        {:ok, acc}

      {:ok, other} ->
        {:error, {:bad_response, other}}

      error ->
        error
    end
  end

  defp read_body(sock, headers, deadline) do
    case Map.fetch(headers, "content-length") do
      {:ok, length} ->
        case Integer.parse(length) do
          {0, ""} -> {:ok, ""}
          {n, ""} when n > 0 -> recv_raw(sock, n, deadline)
          _ -> {:error, {:bad_response, {:content_length, length}}}
        end

      :error ->
        read_until_closed(sock, deadline, [])
    end
  end

  defp read_until_closed(sock, deadline, acc) do
    case recv_raw(sock, 0, deadline) do
      {:ok, data} -> read_until_closed(sock, deadline, [acc | data])
      {:error, :closed} -> {:ok, IO.iodata_to_binary(acc)}
      error -> error
    end
  end

  defp recv(sock, deadline), do: :gen_tcp.recv(sock, 0, remaining(deadline))
  defp recv_raw(sock, n, deadline), do: :gen_tcp.recv(sock, n, remaining(deadline))

  @doc false
  @spec remaining(integer() | :infinity) :: timeout()
  def remaining(:infinity), do: :infinity
  def remaining(deadline), do: max(deadline - now(), 0)

  defp now, do: System.monotonic_time(:millisecond)
end
