defmodule Specter.Config do
  @moduledoc """
  The options of one Specter instance, as given to `Specter.init/1`.

  Options are read from the `:specter` application environment first, then from the
  keyword list passed to `Specter.init/1`, which wins.

  | option | default | meaning |
  |---|---|---|
  | `:ice_servers` | `[]` | STUN/TURN servers: URL strings, or maps with `:urls` (one or a list), `:username`, `:credential` |
  | `:loopback_only` | `false` | bind 127.0.0.1 only, refuse datagrams to any other address, never resolve a host name |
  | `:bind_addresses` | `[]` | IP addresses (strings or tuples) to gather host candidates on; `[]` means every non-loopback IPv4 interface |
  | `:interfaces` | `[]` | interface names (e.g. `"eth0"`); their addresses are added to `:bind_addresses` |
  | `:udp_port_range` | `nil` | `{min, max}`: ports each connection binds from |
  | `:mdns` | `:disabled` | `:disabled`, `:query_only` or `:query_and_gather` |
  | `:answering_dtls_role` | `:auto` | DTLS role of a connection that answers: `:client` (`a=setup:active`), `:server` (`a=setup:passive`, the offerer becomes the client) or `:auto` (`:client`, as browsers) |
  | `:socket_buffer_size` | `4_194_304` | `SO_RCVBUF`/`SO_SNDBUF` of every UDP socket, bytes (`0` = kernel default) |
  | `:driver_wakeup` | `true` | let a received datagram cut the connection driver's sleep short (setup in ~3 ms instead of ~600 ms) |
  | `:answer_early_checks` | `true` | answer STUN checks that arrive before the remote description as soon as it is applied (RFC 8445 §7.3; webrtc-rs 0.21.1 drops them, and the remote retransmits on its own timer, often 500 ms later); `false` is webrtc-rs's behaviour |
  | `:ice_disconnected_timeout` | `nil` (5 s) | ms without traffic before ICE reports `:disconnected` |
  | `:ice_failed_timeout` | `nil` (25 s) | ms after `:disconnected` before ICE reports `:failed` |
  | `:ice_keepalive_interval` | `nil` (2 s) | ms between ICE keepalives |
  | `:dtls_handshake_timeout` | `10_000` | ms the DTLS handshake may take once ICE is connected; past it the connection reports `:failed` and is shut down (webrtc-rs 0.21.1 leaves a connection whose handshake failed, e.g. on a certificate that does not match the remote description's fingerprint, `:connecting` for ever) |
  | `:ice_prflx_acceptance_wait` | `0` | ms ICE waits before nominating a peer-reflexive pair (webrtc-rs waits 1 s by default, which stalls setup whenever a check beats the trickled candidate) |
  | `:ice_check_interval` | `50` | ms between connectivity checks while ICE is checking (RFC 8445's Ta; webrtc-rs uses 200) |
  | `:ice_max_binding_requests` | `28` | checks per candidate pair before it fails (28 x 50 ms keeps webrtc-rs's 1.4 s window) |
  | `:data_channel_send_buffer_limit` | `16_777_216` | bytes a data channel may have queued before `send` answers `{:error, :buffer_full}` |
  | `:data_channel_receive_buffer` | `1_048_576` | bytes of incoming messages a data channel holds for an owner that has no credit (like a socket's receive buffer) before SCTP's window closes |
  | `:sctp_receive_buffer` | `1_048_576` | bytes of a connection's SCTP receive window (webrtc-rs's default; at least 1500): how far its data channels' readers may fall behind before the window closes. webrtc-rs 0.21.1 recovers a closed window only after a 200 ms delayed acknowledgement, often after a 1 s retransmission timeout (see bench/results/dc_two_vm.md), so bulk transfers to a slower receiver gain from a larger one, at the cost of that much memory per lagging connection |
  | `:data_channel_active` | `true` | how a new data channel delivers incoming messages: `true`, `false`, `:once` or a count (see `Specter.DataChannel.set_active/3`) |

  ## Examples

      iex> {:ok, config} = Specter.Config.new(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> config.ice_servers
      [%{urls: ["stun:stun.l.google.com:19302"], username: nil, credential: nil}]

      iex> Specter.Config.new(mdns: :sometimes)
      {:error, {:invalid_option, :mdns}}
  """

  @type ice_server :: %{
          urls: [String.t()],
          username: String.t() | nil,
          credential: String.t() | nil
        }

  @type t :: %__MODULE__{
          ice_servers: [ice_server()],
          loopback_only: boolean(),
          bind_addresses: [String.t()],
          interfaces: [String.t()],
          udp_port_range: {1..65_535, 1..65_535} | nil,
          mdns: :disabled | :query_only | :query_and_gather,
          answering_dtls_role: :auto | :client | :server,
          socket_buffer_size: non_neg_integer(),
          driver_wakeup: boolean(),
          answer_early_checks: boolean(),
          ice_disconnected_timeout: pos_integer() | nil,
          ice_failed_timeout: pos_integer() | nil,
          dtls_handshake_timeout: pos_integer(),
          ice_keepalive_interval: pos_integer() | nil,
          ice_prflx_acceptance_wait: non_neg_integer() | nil,
          ice_check_interval: pos_integer() | nil,
          ice_max_binding_requests: pos_integer() | nil,
          data_channel_send_buffer_limit: pos_integer(),
          data_channel_active: boolean() | :once | pos_integer(),
          data_channel_receive_buffer: non_neg_integer(),
          sctp_receive_buffer: 1500..1_073_741_824
        }

  defstruct ice_servers: [],
            loopback_only: false,
            bind_addresses: [],
            interfaces: [],
            udp_port_range: nil,
            mdns: :disabled,
            answering_dtls_role: :auto,
            socket_buffer_size: 4 * 1024 * 1024,
            driver_wakeup: true,
            answer_early_checks: true,
            ice_disconnected_timeout: nil,
            ice_failed_timeout: nil,
            dtls_handshake_timeout: 10_000,
            ice_keepalive_interval: nil,
            ice_prflx_acceptance_wait: 0,
            ice_check_interval: 50,
            ice_max_binding_requests: 28,
            data_channel_send_buffer_limit: 16 * 1024 * 1024,
            data_channel_active: true,
            data_channel_receive_buffer: 1024 * 1024,
            sctp_receive_buffer: 1024 * 1024

  @doc """
  Builds and validates a configuration from the application environment and `opts`.

  Returns `{:error, {:invalid_option, key}}` for an unknown key or a bad value, and
  `{:error, {:invalid_argument, :options}}` for anything but a keyword list (the rules of
  `Specter.Options`).

      iex> {:ok, config} = Specter.Config.new(loopback_only: true, udp_port_range: {40_000, 40_100})
      iex> {config.loopback_only, config.udp_port_range}
      {true, {40_000, 40_100}}

      iex> Specter.Config.new(colour: :blue)
      {:error, {:invalid_option, :colour}}
  """
  @spec new(keyword()) ::
          {:ok, t()} | {:error, {:invalid_option, atom()} | {:invalid_argument, :options}}
  def new(opts \\ []) do
    schema = schema()
    env = Application.get_all_env(:specter) |> Keyword.take(Keyword.keys(schema))
    opts = if Keyword.keyword?(opts), do: Keyword.merge(env, opts), else: opts

    with {:ok, opts} <- Specter.Options.validate(opts, schema) do
      opts |> Enum.reduce(%__MODULE__{}, &put/2) |> finish()
    end
  end

  # The values every key accepts (Specter.Options types; the table above says what they
  # mean). `:ice_servers` and `:bind_addresses` are normalized on the way.
  defp schema do
    [
      ice_servers: [type: {:list, {:custom, &ice_server/1}}],
      loopback_only: [type: :boolean],
      bind_addresses: [type: {:list, {:custom, &ip_string/1}}],
      interfaces: [type: {:list, :string}],
      udp_port_range: [type: {:or, [nil, {:custom, &port_range?/1}]}],
      mdns: [type: {:in, [:disabled, :query_only, :query_and_gather]}],
      answering_dtls_role: [type: {:in, [:auto, :client, :server]}],
      socket_buffer_size: [type: {:in, 0..1_073_741_824}],
      driver_wakeup: [type: :boolean],
      answer_early_checks: [type: :boolean],
      ice_disconnected_timeout: [type: {:or, [nil, {:in, 1..86_399_999}]}],
      ice_failed_timeout: [type: {:or, [nil, {:in, 1..86_399_999}]}],
      dtls_handshake_timeout: [type: {:in, 1..86_399_999}],
      ice_keepalive_interval: [type: {:or, [nil, {:in, 1..86_399_999}]}],
      ice_prflx_acceptance_wait: [type: {:or, [nil, {:in, 0..86_399_999}]}],
      ice_check_interval: [type: {:or, [nil, {:in, 1..59_999}]}],
      ice_max_binding_requests: [type: {:or, [nil, {:in, 1..65_535}]}],
      data_channel_send_buffer_limit: [type: :pos_integer],
      data_channel_active: [type: {:or, [:boolean, {:in, [:once]}, {:in, 1..2_147_483_647}]}],
      data_channel_receive_buffer: [type: {:in, 0..1_073_741_824}],
      sctp_receive_buffer: [type: {:in, 1500..1_073_741_824}]
    ]
  end

  defp port_range?({lo, hi}) when is_integer(lo) and is_integer(hi),
    do: lo in 1..65_535 and hi in 1..65_535 and lo <= hi

  defp port_range?(_), do: false

  @doc """
  Normalizes a list of ICE servers (URL strings or maps) to maps with `:urls`,
  `:username` and `:credential`.

      iex> Specter.Config.normalize_ice_servers(["stun:127.0.0.1:3478", %{"urls" => "turn:127.0.0.1", "username" => "u", "credential" => "p"}])
      {:ok, [%{urls: ["stun:127.0.0.1:3478"], username: nil, credential: nil}, %{urls: ["turn:127.0.0.1"], username: "u", credential: "p"}]}
  """
  @spec normalize_ice_servers(term()) :: {:ok, [ice_server()]} | :error
  def normalize_ice_servers(servers),
    do: Specter.Options.check(servers, {:list, {:custom, &ice_server/1}})

  defp ice_server(url) when is_binary(url), do: ice_server(%{urls: [url]})

  defp ice_server(%{} = map) do
    get = fn key -> Map.get(map, key, Map.get(map, Atom.to_string(key))) end
    urls = get.(:urls)
    urls = if is_binary(urls), do: [urls], else: urls
    username = get.(:username)
    credential = get.(:credential)

    if is_list(urls) and urls != [] and Enum.all?(urls, &url?/1) and
         (is_nil(username) or is_binary(username)) and
         (is_nil(credential) or is_binary(credential)) do
      {:ok, %{urls: urls, username: username, credential: credential}}
    else
      :error
    end
  end

  defp ice_server(_), do: :error

  defp url?(url), do: is_binary(url) and String.match?(url, ~r/^(stun|stuns|turn|turns):/)

  # Bind addresses accumulate (`:interfaces` adds to them too); any other key is set.
  defp put({:bind_addresses, ips}, config),
    do: %{config | bind_addresses: Enum.uniq(config.bind_addresses ++ ips)}

  defp put({key, value}, config), do: Map.replace!(config, key, value)

  defp finish(config) do
    with {:ok, config} <- resolve_interfaces(config) do
      if config.loopback_only and not Enum.all?(config.bind_addresses, &loopback?/1) do
        {:error, {:invalid_option, :bind_addresses}}
      else
        {:ok, config}
      end
    end
  end

  defp resolve_interfaces(%{interfaces: []} = config), do: {:ok, config}

  defp resolve_interfaces(%{interfaces: names} = config) do
    {:ok, ifaddrs} = :inet.getifaddrs()
    by_name = Map.new(ifaddrs, fn {name, props} -> {List.to_string(name), props} end)

    Enum.reduce_while(names, {:ok, config.bind_addresses}, fn name, {:ok, acc} ->
      case Map.fetch(by_name, name) do
        {:ok, props} ->
          ips = for {:addr, addr} <- props, not link_local?(addr), do: ip_to_string(addr)
          {:cont, {:ok, acc ++ ips}}

        :error ->
          {:halt, :error}
      end
    end)
    |> case do
      {:ok, ips} -> {:ok, %{config | bind_addresses: Enum.uniq(ips)}}
      :error -> {:error, {:invalid_option, :interfaces}}
    end
  end

  defp loopback?(ip) do
    case :inet.parse_address(String.to_charlist(ip)) do
      {:ok, {127, _, _, _}} -> true
      {:ok, {0, 0, 0, 0, 0, 0, 0, 1}} -> true
      _ -> false
    end
  end

  defp link_local?({0xFE80, _, _, _, _, _, _, _}), do: true
  defp link_local?({169, 254, _, _}), do: true
  defp link_local?(_), do: false

  defp ip_string(ip) when is_tuple(ip) do
    if :inet.is_ip_address(ip), do: {:ok, ip_to_string(ip)}, else: :error
  end

  defp ip_string(ip) when is_binary(ip) do
    case :inet.parse_strict_address(String.to_charlist(ip)) do
      {:ok, addr} -> {:ok, ip_to_string(addr)}
      _ -> :error
    end
  end

  defp ip_string(_), do: :error

  defp ip_to_string(addr), do: addr |> :inet.ntoa() |> List.to_string()
end
