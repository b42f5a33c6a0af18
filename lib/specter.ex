defmodule Specter do
  @moduledoc """
  Server-side WebRTC for Elixir: peer connections, data channels and media tracks hosted in
  a Rust NIF (webrtc-rs 0.21.1 on tokio).

  `init/1` starts a Specter instance, a NIF resource that hosts media engines, registries,
  APIs, peer connections, data channels and tracks, each named by a UUID string. Several
  instances may coexist; an id from one cannot reach another's objects.

  ## Messages

  Every function returns at once. Work that takes time runs on Specter's runtime and is
  answered with a message:

    * results go to the **calling** process (`{:offer, pc, json}`,
      `{:ok, pc, :set_local_description}`, `{:offer_error, pc, reason}`, ...). Replies for one
      connection arrive in the order its functions were called;
    * events of a connection go to its **owner**, the process that created it (see
      `Specter.PeerConnection.controlling_process/3`): state changes, local ICE candidates,
      negotiation-needed, data channels.

  The owner is monitored: when it exits, its connections are closed and every socket,
  task and buffer they held is released. When the last reference to a `t:t/0` is garbage
  collected, every connection it hosts is closed too.

  ## Errors

  Functions return `{:error, reason}`, never raise on bad input:

  | reason | meaning |
  |---|---|
  | `:not_found` | no object with that id in this instance |
  | `:closed` | the object was closed |
  | `{:invalid_argument, name}` | an argument of the wrong type (`:specter`, `:peer_connection`, ...) |
  | `{:invalid_option, name}` | an unknown option, or a bad value |
  | `{:missing_option, name}` | a required option of a constructor left out (`Specter.Options`: the rules every `start_link/1` follows) |
  | `:invalid_json` | text that is not JSON |
  | `:invalid_session_description` | JSON that is not `{"type": ..., "sdp": ...}` |
  | `{:invalid_sdp, detail}` | SDP that does not parse or apply |
  | `{:invalid_candidate, detail}` | an ICE candidate that does not parse or apply |
  | `{:invalid_state, detail}` | the operation is not valid in the current state |
  | `:invalid_track` | not a track of this instance |
  | `{:invalid_codec, detail}` | a codec webrtc-rs cannot use |
  | `:too_large` | input over a documented size limit |
  | `:buffer_full` | a data channel's send buffer is full |
  | `:not_owner` | only the owner may hand an object to another process |
  | `{:runtime_unavailable, detail}` | Specter's runtime could not be started (`init/1`, `runtime_info/0`) |
  | `{:webrtc, detail}` | any other webrtc-rs error |

  ## Example

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> Specter.PeerConnection.exists?(specter, pc)
      true
  """

  alias Specter.Native

  @enforce_keys [:native]
  defstruct [:native]

  @typedoc "A Specter instance: a NIF resource hosting WebRTC objects."
  @opaque t :: %__MODULE__{native: reference()}

  @typedoc "A UUID string naming an object hosted by a Specter instance."
  @type uuid() :: String.t()

  @typedoc "A media engine: the codecs connections may negotiate."
  @type media_engine_t() :: uuid()

  @typedoc "An interceptor registry: NACK, RTCP reports, TWCC, simulcast headers."
  @type registry_t() :: uuid()

  @typedoc "An API: the template (media engine + registry) connections are built from."
  @type api_t() :: uuid()

  @typedoc "See the error table in the module documentation."
  @type error() ::
          :not_found
          | :closed
          | :invalid_json
          | :invalid_session_description
          | :invalid_track
          | :too_large
          | :buffer_full
          | :not_owner
          | {:invalid_argument, atom()}
          | {:invalid_option, atom()}
          | {:invalid_sdp, String.t()}
          | {:invalid_candidate, String.t()}
          | {:invalid_state, String.t()}
          | {:invalid_codec, String.t()}
          | {:webrtc, String.t()}

  @doc """
  Starts a Specter instance. See `Specter.Config` for the options.

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, config} = Specter.config(specter)
      iex> hd(config.ice_servers).urls
      ["stun:stun.l.google.com:19302"]

      iex> Specter.init(udp_port_range: {9, 2})
      {:error, {:invalid_option, :udp_port_range}}
  """
  @spec init(keyword()) :: {:ok, t()} | {:error, error()}
  def init(opts \\ []) do
    with {:ok, config} <- Specter.Config.new(opts),
         {:ok, native} <- Native.init(config) do
      {:ok, %__MODULE__{native: native}}
    end
  end

  @doc """
  Returns the configuration of an instance.

      iex> {:ok, specter} = Specter.init(mdns: :disabled)
      iex> {:ok, %Specter.Config{mdns: :disabled}} = Specter.config(specter)
      iex> Specter.config(:not_a_specter)
      {:error, {:invalid_argument, :specter}}
  """
  @spec config(t()) :: {:ok, Specter.Config.t()} | {:error, error()}
  def config(specter), do: Native.config(native(specter))

  @doc """
  Creates a media engine: the codecs connections built from it may negotiate.

  By default it holds webrtc-rs's default codecs: Opus (payload type 111), G722 (9), PCMU (0),
  PCMA (8), VP8 (96), VP9 (98, 100), H264 (102, 108, 123, 125, 127), AV1 (41) and H265, with
  RTX for the video codecs. With `default_codecs: false` it starts empty; add codecs with
  `register_codec/4`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> Specter.media_engine_exists?(specter, media_engine)
      true
      iex> {:ok, _empty} = Specter.new_media_engine(specter, default_codecs: false)
      iex> Specter.new_media_engine(specter, colour: :blue)
      {:error, {:invalid_option, :colour}}
  """
  @spec new_media_engine(t(), [{:default_codecs, boolean()}]) ::
          {:ok, media_engine_t()} | {:error, error()}
  def new_media_engine(specter, opts \\ []) do
    case opts do
      [] ->
        Native.new_media_engine(native(specter), true)

      [default_codecs: default] when is_boolean(default) ->
        Native.new_media_engine(native(specter), default)

      [{key, _} | _] when is_atom(key) ->
        {:error, {:invalid_option, key}}

      _ ->
        {:error, {:invalid_argument, :opts}}
    end
  end

  @doc """
  Registers a codec with a media engine under an RTP payload type (1..127), before an API is
  built from it. The codec's `mime_type` prefix decides whether it is an audio or a video
  codec; its `rtcp_feedback` is offered with it. A payload type already used by another
  codec of the engine must not be reused (see `new_media_engine/2` for the defaults').

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter, default_codecs: false)
      iex> opus = %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2, sdp_fmtp_line: "minptime=10;useinbandfec=1"}
      iex> Specter.register_codec(specter, media_engine, opus, 111)
      :ok
      iex> Specter.register_codec(specter, media_engine, opus, 300)
      {:error, {:invalid_argument, :payload_type}}
  """
  @spec register_codec(t(), media_engine_t(), Specter.RtpCodecCapability.t(), 1..127) ::
          :ok | {:error, error()}
  def register_codec(specter, media_engine, codec, payload_type) do
    with {:ok, codec} <- Specter.RtpCodecCapability.to_native(codec) do
      Native.media_engine_register_codec(native(specter), media_engine, codec, payload_type)
    end
  end

  @doc """
  Creates an interceptor registry for a media engine: NACK generator and responder, RTCP
  sender and receiver reports, TWCC, and the simulcast header extensions.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> Specter.registry_exists?(specter, registry)
      true
      iex> Specter.new_registry(specter, "9b0bd41a-4c1e-4f0e-9d4f-8c9f0e1b2a3c")
      {:error, :not_found}
  """
  @spec new_registry(t(), media_engine_t()) :: {:ok, registry_t()} | {:error, error()}
  def new_registry(specter, media_engine),
    do: Native.new_registry(native(specter), media_engine)

  @doc """
  Creates an API from a media engine and a registry made for it. Both are consumed: they no
  longer exist afterwards, and every connection built from the API gets its own copy.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {Specter.media_engine_exists?(specter, media_engine), Specter.registry_exists?(specter, registry)}
      {false, false}
      iex> Specter.api_exists?(specter, api)
      true
  """
  @spec new_api(t(), media_engine_t(), registry_t()) :: {:ok, api_t()} | {:error, error()}
  def new_api(specter, media_engine, registry),
    do: Native.new_api(native(specter), media_engine, registry)

  @doc """
  Whether a media engine exists (it stops existing once `new_api/3` consumes it).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.media_engine_exists?(specter, "not-a-uuid")
      false
  """
  @spec media_engine_exists?(t(), media_engine_t()) :: boolean()
  def media_engine_exists?(specter, media_engine),
    do: Native.media_engine_exists(native(specter), media_engine)

  @doc """
  Whether a registry exists (it stops existing once `new_api/3` consumes it).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.registry_exists?(specter, "9b0bd41a-4c1e-4f0e-9d4f-8c9f0e1b2a3c")
      false
  """
  @spec registry_exists?(t(), registry_t()) :: boolean()
  def registry_exists?(specter, registry),
    do: Native.registry_exists(native(specter), registry)

  @doc """
  Whether an API exists.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.api_exists?(specter, "9b0bd41a-4c1e-4f0e-9d4f-8c9f0e1b2a3c")
      false
  """
  @spec api_exists?(t(), api_t()) :: boolean()
  def api_exists?(specter, api), do: Native.api_exists(native(specter), api)

  @doc """
  Counts of the objects an instance hosts.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.instance_info(specter)
      {:ok, %{apis: 0, data_channels: 0, media_engines: 0, peer_connections: 0, players: 0, recorders: 0, registries: 0, remote_tracks: 0, tracks: 0}}
  """
  @spec instance_info(t()) :: {:ok, %{atom() => non_neg_integer()}} | {:error, error()}
  def instance_info(specter), do: Native.instance_info(native(specter))

  @doc """
  Figures of the runtime shared by every instance: `:workers` (OS threads), `:alive_tasks`,
  `:effective_socket_buffer` (bytes the kernel granted the last UDP socket),
  `:refused_sends` and `:refused_resolutions` (datagrams and name resolutions refused by
  loopback confinement), `:nudges` (synthetic wake-ups of connection drivers) and
  `:replayed_checks` (STUN Binding requests that arrived before their connection's remote
  description and were answered once it was applied).
  Counters since the VM started, over all connections: `:datagrams_sent` and
  `:datagrams_received`; `:driver_sleeps_fired_10ms`, `_100ms` and `_1s`: sleeps of the
  connection drivers of at least that length that ran to their end (nothing arrived
  meanwhile), and `:driver_sleep_fired_ms`, their summed length. A driver that waits out a
  protocol timer in the middle of a transfer, such as SCTP's 200 ms delayed acknowledgement
  or its 1 s retransmission timeout, shows there.

      iex> {:ok, _specter} = Specter.init()
      iex> {:ok, %{workers: workers}} = Specter.runtime_info()
      iex> workers > 0
      true
  """
  @spec runtime_info() :: {:ok, %{atom() => non_neg_integer()}} | {:error, error()}
  def runtime_info, do: Native.runtime_info()

  @doc false
  @spec native(t() | term()) :: reference() | term()
  def native(%__MODULE__{native: native}), do: native
  def native(other), do: other
end
