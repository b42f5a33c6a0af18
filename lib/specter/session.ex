defmodule Specter.Session do
  @moduledoc """
  One peer's call lifecycle (icey's `PeerSession`) over any `Specter.Signaller`: an OTP
  process that owns the call state, the peer connection, its data channel and its media.
  Application code asks for calls and reacts to events; it never rebuilds the state
  machine on the side.

  ## States

  | state | meaning |
  |---|---|
  | `:idle` | no call |
  | `:outgoing_init` | `call/2` sent `init`; waiting for the remote peer's `accept` or `reject` |
  | `:incoming_init` | the remote peer sent `init`; waiting for `accept/1` or `reject/2` |
  | `:negotiating` | the connection exists; SDP and ICE are being exchanged |
  | `:active` | the transport is up: media and data can flow |
  | `:ending` | local teardown (the connection is closing) |
  | `:ended` | the call is over (transient: the session returns to `:idle` at once) |

  A call in the wrong state answers `{:error, {:invalid_state, state}}`. `hangup/2` works
  from every state but `:idle` and `:ended` (in `:ending` it is a no-op).

  ## Events

  Subscribers (`subscriber:` when starting, or `subscribe/1`) receive
  `{:specter_session, session, event}`:

    * `{:state, state}` - every transition, in order
    * `{:incoming_call, peer_id}` - the remote peer called (the state is `:incoming_init`)
    * `{:incoming_call_rejected, peer_id, reason}` - a call that came while busy, rejected
    * `{:media_attached, media}` right after `{:state, :active}`, and
      `{:media_detached, media}` right after `{:state, :ended}` when it was attached: start
      and stop the media pipelines here (`t:media_t/0`), symmetrically
    * `{:track, track, info}` - a remote track is ready (`Specter.TrackRemote`; webrtc-rs
      announces one when its first packet arrives, so this may follow `:active`)
    * `{:data_channel_open, dc}` / `{:data_channel_close, dc}`
    * `{:data, {:text, binary} | {:binary, binary}}` - a data channel message
    * `{:call_ended, peer_id, reason}` - right before `{:state, :ended}`

  Reasons a call ends: `{:hangup, reason}` (local `hangup/2`), `{:remote_hangup, reason}`,
  `{:rejected, reason}` (the remote peer rejected our call), `{:local_reject, reason}`,
  `:ice_failed`, `:disconnected` (the connection stayed disconnected longer than
  `:disconnect_timeout`), `:closed`, `:negotiation_timeout`, `{:negotiation_failed, step,
  detail}`, `{:signal_failed, detail}` and `:signaller_down`.

  ## Rules (from icey)

    * `accept/1` creates the connection. The caller creates its connection when the remote
      peer accepts, adds its tracks and data channel, and offers; the callee adds its tracks
      to the transceivers offered, and answers.
    * Remote ICE candidates that arrive before the remote description are queued, never
      dropped.
    * Media is attached on `:active` and detached on `:ended`; a data channel being open does
      not make the call active, and the call being active does not open a data channel.
    * Glare (both peers call each other at once) is resolved deterministically: the peer
      with the smaller id accepts the other's call and drops its own.
    * A second incoming call while busy is rejected with the reason `"busy"`.
    * When the signaller's process exits, the call ends (`:signaller_down`) and the session
      stops with `{:shutdown, :signaller_down}`, for its supervisor to restart it.

  ## Example

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_calls)
      iex> {:ok, specter} = Specter.init()
      iex> opts = [specter: specter, signaller: {Specter.Signaller.Local, :doc_calls}, subscriber: self()]
      iex> {:ok, alice} = Specter.Session.start_link([peer_id: "alice"] ++ opts)
      iex> {:ok, bob} = Specter.Session.start_link([peer_id: "bob"] ++ opts)
      iex> :ok = Specter.Session.call(alice, "bob")
      iex> assert_receive {:specter_session, ^bob, {:incoming_call, "alice"}}, 5_000
      iex> :ok = Specter.Session.accept(bob)
      iex> assert_receive {:specter_session, ^alice, {:state, :active}}, 5_000
      iex> assert_receive {:specter_session, ^bob, {:data_channel_open, _}}, 5_000
      iex> assert_receive {:specter_session, ^alice, {:data_channel_open, _}}, 5_000
      iex> :ok = Specter.Session.send_data(alice, {:text, "hi bob"})
      iex> assert_receive {:specter_session, ^bob, {:data, {:text, "hi bob"}}}, 5_000
      iex> :ok = Specter.Session.hangup(bob, "bye")
      iex> assert_receive {:specter_session, ^alice, {:call_ended, "bob", {:remote_hangup, "bye"}}}, 5_000
      iex> assert_receive {:specter_session, ^alice, {:state, :idle}}, 5_000
      iex> Specter.Session.state(alice)
      :idle
  """

  use GenServer

  alias Specter.{DataChannel, Negotiation, PeerConnection, RtpCodecCapability}
  alias Specter.TrackLocalStaticSample

  require Negotiation

  @typedoc "A session process."
  @type t() :: GenServer.server()

  @typedoc "A session's state."
  @type state_t() ::
          :idle | :outgoing_init | :incoming_init | :negotiating | :active | :ending | :ended

  @typedoc "Direction of one kind of media in a call."
  @type direction_t() :: :sendrecv | :sendonly | :recvonly

  @typedoc """
  The session's media (icey's `MediaBridge`): up to one local audio and one local video
  track (`Specter.TrackLocalStaticSample`, created when the session starts and kept
  across calls: write samples to them once the call is `:active`), and the remote audio
  and video tracks of the current call (`Specter.TrackRemote`, once announced). With
  `local_tracks: :rtp` the local tracks are `Specter.TrackLocalStaticRTP`s.
  """
  @type media_t() :: %{
          audio: Specter.TrackLocalStaticSample.t() | Specter.TrackLocalStaticRTP.t() | nil,
          video: Specter.TrackLocalStaticSample.t() | Specter.TrackLocalStaticRTP.t() | nil,
          remote_audio: Specter.TrackRemote.t() | nil,
          remote_video: Specter.TrackRemote.t() | nil
        }

  @typedoc "Events sent to subscribers as `{:specter_session, session, event}`."
  @type event_t() ::
          {:state, state_t()}
          | {:incoming_call, Specter.Signaller.peer_id()}
          | {:incoming_call_rejected, Specter.Signaller.peer_id(), String.t()}
          | {:media_attached, media_t()}
          | {:media_detached, media_t()}
          | {:track, Specter.TrackRemote.t(), Specter.TrackRemote.info_t()}
          | {:data_channel_open, Specter.DataChannel.t()}
          | {:data_channel_close, Specter.DataChannel.t()}
          | {:data, {:text | :binary, binary()}}
          | {:call_ended, Specter.Signaller.peer_id(), term()}

  @typedoc """
  Options of `start_link/1`:

    * `:specter` (required) - the `Specter.init/1` instance
    * `:signaller` (required) - `{module, config}` of a `Specter.Signaller`
    * `:peer_id` (required) - this session's id on the signaller
    * `:subscriber` - a pid to receive events (more with `subscribe/1`)
    * `:data_channel` - open a data channel in each call (`true`); the caller creates it
    * `:data_channel_label` - its label (`"data"`)
    * `:audio`, `:video` - `t:direction_t/0` or `nil` (default) for no such media
    * `:audio_codec`, `:video_codec` - `%Specter.RtpCodecCapability{}` of the local tracks
      (Opus, VP8)
    * `:local_tracks` - `:sample` (default: `Specter.TrackLocalStaticSample`, for encoded
      frames and `Specter.MediaFile.play/4`) or `:rtp` (`Specter.TrackLocalStaticRTP`, for
      whole packets and `Specter.TrackRemote.forward/3`, e.g. an echo or an SFU)
    * `:ice_servers` - for this session's connections (default: the instance's)
    * `:api` - the `Specter.new_api/3` API for the connections (default: a fresh one)
    * `:negotiation_timeout` - ms that `:outgoing_init` and `:negotiating` may last (30 000)
    * `:disconnect_timeout` - ms an active connection may stay `:disconnected` (5 000)
    * `:name` - registers the process
  """
  @type option() ::
          {:specter, Specter.t()}
          | {:signaller, Specter.Signaller.t()}
          | {:peer_id, Specter.Signaller.peer_id()}
          | {:subscriber, pid()}
          | {:data_channel, boolean()}
          | {:data_channel_label, String.t()}
          | {:audio, direction_t() | nil}
          | {:video, direction_t() | nil}
          | {:audio_codec, RtpCodecCapability.t()}
          | {:video_codec, RtpCodecCapability.t()}
          | {:local_tracks, :sample | :rtp}
          | {:ice_servers, [String.t() | map()]}
          | {:api, Specter.api_t()}
          | {:negotiation_timeout, pos_integer()}
          | {:disconnect_timeout, pos_integer()}
          | {:name, GenServer.name()}

  @opus %RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
  @vp8 %RtpCodecCapability{mime_type: "video/VP8", clock_rate: 90_000}
  @close_timeout 5_000

  ## API

  @doc """
  Starts a session linked to the caller (see `t:option/0`). Options are checked before the
  process starts, by the rules of `Specter.Options`: `{:error, {:missing_option, key}}`,
  `{:error, {:invalid_option, key}}` (a value of the wrong type or shape, a signaller
  module without `register/3`, an unknown key), `{:error, {:invalid_argument, :options}}`
  (not a keyword list) or `{:error, :nothing_to_negotiate}` (no data channel and no
  media). Once it has started, a session whose peer id is taken on the signaller stops
  with the signaller's reason (`:already_registered`, `:signaller_down`), and one whose
  codec the instance refuses with `{:invalid_option, {:audio_codec | :video_codec,
  reason}}`: `start_link/1` returns `{:error, reason}` and, as for any `GenServer`, the
  caller receives the exit signal unless it traps exits.

      iex> Specter.Session.start_link(peer_id: "x")
      {:error, {:missing_option, :specter}}
      iex> Specter.Session.start_link(:not_a_list)
      {:error, {:invalid_argument, :options}}
  """
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts) do
    with {:ok, opts} <- Specter.Options.validate(opts, schema()),
         {name, opts} = Keyword.pop(opts, :name),
         {:ok, config} <- config(opts) do
      gen_opts = if name, do: [name: name], else: []
      GenServer.start_link(__MODULE__, config, gen_opts)
    end
  end

  @doc """
  A child spec: `{Specter.Session, opts}` in a supervisor (`id` is the peer id).

      iex> %{id: {Specter.Session, "alice"}, start: {Specter.Session, :start_link, [_]}} =
      ...>   Specter.Session.child_spec(peer_id: "alice")
  """
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: {__MODULE__, Keyword.get(opts, :peer_id)},
      start: {__MODULE__, :start_link, [opts]},
      restart: :transient
    }
  end

  @doc """
  Calls `peer_id`: sends `init` and moves to `:outgoing_init`. The call proceeds when the
  remote peer accepts. `{:error, :unknown_peer}` when the signaller does not know it.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_call)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_call}, peer_id: "a")
      iex> Specter.Session.call(s, "nobody")
      {:error, :unknown_peer}
      iex> Specter.Session.call(s, "a")
      {:error, :self_call}
  """
  @spec call(t(), Specter.Signaller.peer_id()) :: :ok | {:error, term()}
  def call(session, peer_id) when is_binary(peer_id),
    do: GenServer.call(session, {:call, peer_id})

  def call(_session, _peer_id), do: {:error, {:invalid_argument, :peer_id}}

  @doc """
  Accepts the incoming call: creates the connection, sends `accept`, moves to
  `:negotiating`.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_accept)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_accept}, peer_id: "a")
      iex> Specter.Session.accept(s)
      {:error, {:invalid_state, :idle}}
  """
  @spec accept(t()) :: :ok | {:error, term()}
  def accept(session), do: GenServer.call(session, :accept)

  @doc """
  Rejects the incoming call with a reason the remote peer receives; the call ends
  (`{:local_reject, reason}`).

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_reject)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_reject}, peer_id: "a")
      iex> Specter.Session.reject(s, "busy")
      {:error, {:invalid_state, :idle}}
  """
  @spec reject(t(), String.t() | nil) :: :ok | {:error, term()}
  def reject(session, reason \\ nil), do: GenServer.call(session, {:reject, reason})

  @doc """
  Ends the call from any state but `:idle` and `:ended`: sends `hangup` with the reason,
  closes the connection (`:ending`), then `:ended` and `:idle`.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_hangup)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_hangup}, peer_id: "a")
      iex> Specter.Session.hangup(s)
      {:error, {:invalid_state, :idle}}
  """
  @spec hangup(t(), String.t() | nil) :: :ok | {:error, term()}
  def hangup(session, reason \\ nil), do: GenServer.call(session, {:hangup, reason})

  @doc """
  Sends a message on the call's data channel: `{:text, string}`, `{:binary, bytes}`, or a
  binary (sent as binary). Unlike icey's `sendData`, nothing is dropped silently:
  `{:error, :data_channel_not_open}` when there is no open channel, and the data channel's
  own errors (`:buffer_full`, `:too_large`) otherwise.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_send)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_send}, peer_id: "a")
      iex> Specter.Session.send_data(s, "hello")
      {:error, :data_channel_not_open}
  """
  @spec send_data(t(), binary() | {:text | :binary, binary()}) :: :ok | {:error, term()}
  def send_data(session, {kind, data} = message)
      when kind in [:text, :binary] and is_binary(data),
      do: GenServer.call(session, {:send_data, message})

  def send_data(session, data) when is_binary(data), do: send_data(session, {:binary, data})
  def send_data(_session, _data), do: {:error, {:invalid_argument, :data}}

  @doc """
  The current state.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_state)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_state}, peer_id: "a")
      iex> Specter.Session.state(s)
      :idle
  """
  @spec state(t()) :: state_t()
  def state(session), do: GenServer.call(session, :state)

  @doc """
  The remote peer of the current call; `nil` when idle.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_remote)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_remote}, peer_id: "a")
      iex> Specter.Session.remote_peer_id(s)
      nil
  """
  @spec remote_peer_id(t()) :: Specter.Signaller.peer_id() | nil
  def remote_peer_id(session), do: GenServer.call(session, :remote_peer_id)

  @doc """
  The call's `Specter.PeerConnection` (owned by the session), or `nil` when there is none
  (`:idle`, `:outgoing_init`, `:incoming_init`, `:ended`).

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_pc)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_pc}, peer_id: "a")
      iex> Specter.Session.peer_connection(s)
      nil
  """
  @spec peer_connection(t()) :: Specter.PeerConnection.t() | nil
  def peer_connection(session), do: GenServer.call(session, :peer_connection)

  @doc """
  The call's data channel while it is open, else `nil`.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_dc)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_dc}, peer_id: "a")
      iex> Specter.Session.data_channel(s)
      nil
  """
  @spec data_channel(t()) :: Specter.DataChannel.t() | nil
  def data_channel(session), do: GenServer.call(session, :data_channel)

  @doc """
  The session's media (`t:media_t/0`).

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_media)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_media}, peer_id: "a", audio: :sendrecv)
      iex> %{audio: audio, video: nil, remote_audio: nil, remote_video: nil} = Specter.Session.media(s)
      iex> is_binary(audio)
      true
  """
  @spec media(t()) :: media_t()
  def media(session), do: GenServer.call(session, :media)

  @doc """
  Sends the session's events to the calling process (or `pid`) until it exits or
  `unsubscribe/2`.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_sub)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_sub}, peer_id: "a")
      iex> Specter.Session.subscribe(s)
      :ok
  """
  @spec subscribe(t(), pid()) :: :ok
  def subscribe(session, pid \\ self()), do: GenServer.call(session, {:subscribe, pid})

  @doc """
  Stops sending events to `pid`.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_unsub)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, s} = Specter.Session.start_link(specter: specter, signaller: {Specter.Signaller.Local, :doc_unsub}, peer_id: "a")
      iex> Specter.Session.unsubscribe(s)
      :ok
  """
  @spec unsubscribe(t(), pid()) :: :ok
  def unsubscribe(session, pid \\ self()), do: GenServer.call(session, {:unsubscribe, pid})

  ## Options

  defp schema do
    direction = {:in, [nil, :sendrecv, :sendonly, :recvonly]}
    codec = {:custom, &match?({:ok, _}, RtpCodecCapability.to_native(&1))}
    ice_servers = {:custom, &match?({:ok, _}, Specter.Config.normalize_ice_servers(&1))}

    [
      specter: [type: {:struct, Specter}, required: true],
      signaller: [type: {:custom, &signaller?/1}, required: true],
      peer_id: [type: :string, required: true],
      subscriber: [type: {:or, [nil, :pid]}, default: nil],
      data_channel: [type: :boolean, default: true],
      data_channel_label: [type: :string, default: "data"],
      audio: [type: direction, default: nil],
      video: [type: direction, default: nil],
      audio_codec: [type: codec, default: @opus],
      video_codec: [type: codec, default: @vp8],
      local_tracks: [type: {:custom, &track_type/1}, default: :sample],
      ice_servers: [type: {:or, [nil, ice_servers]}, default: nil],
      api: [type: {:or, [nil, :string]}, default: nil],
      negotiation_timeout: [type: :pos_integer, default: 30_000],
      disconnect_timeout: [type: :pos_integer, default: 5_000],
      name: [type: :name]
    ]
  end

  # The first of a key given twice wins, as with `Keyword.get/2`.
  defp config(opts) do
    if opts[:data_channel] or opts[:audio] != nil or opts[:video] != nil do
      {label, opts} = Keyword.pop(opts, :data_channel_label)
      {track_type, opts} = Keyword.pop(opts, :local_tracks)
      config = opts |> Enum.reverse() |> Map.new()
      {:ok, Map.merge(config, %{label: label, track_type: track_type})}
    else
      {:error, :nothing_to_negotiate}
    end
  end

  defp track_type(:sample), do: {:ok, TrackLocalStaticSample}
  defp track_type(:rtp), do: {:ok, Specter.TrackLocalStaticRTP}
  defp track_type(_), do: false

  defp signaller?({mod, _config}) when is_atom(mod),
    do: Code.ensure_loaded?(mod) and function_exported?(mod, :register, 3)

  defp signaller?(_), do: false

  ## Server

  @impl true
  def init(config) do
    # Shutdown by the parent runs terminate/2, which tells the remote peer.
    Process.flag(:trap_exit, true)
    {mod, sig_config} = config.signaller

    with {:ok, sig_pid} <- register(mod, sig_config, config.peer_id),
         {:ok, tracks} <- local_tracks(config),
         {:ok, api} <- session_api(config) do
      s = %{
        config: Map.put(config, :api, api),
        sig_ref: Process.monitor(sig_pid),
        subscribers: %{},
        state: :idle,
        remote: nil,
        role: nil,
        pc: nil,
        pc_ready: false,
        dc: nil,
        dc_open: false,
        nego: Negotiation.new(config.specter),
        pending_offer: nil,
        tracks: tracks,
        remote_tracks: %{audio: nil, video: nil},
        attached: nil,
        timer: nil,
        end_reason: nil
      }

      s = if config.subscriber, do: add_subscriber(s, config.subscriber), else: s
      {:ok, s}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp session_api(%{api: api}) when is_binary(api), do: {:ok, api}

  defp session_api(%{specter: specter}) do
    with {:ok, media_engine} <- Specter.new_media_engine(specter),
         {:ok, registry} <- Specter.new_registry(specter, media_engine) do
      Specter.new_api(specter, media_engine, registry)
    end
  end

  defp register(mod, sig_config, peer_id) do
    case mod.register(sig_config, peer_id, self()) do
      {:ok, pid} when is_pid(pid) -> {:ok, pid}
      {:error, reason} -> {:error, reason}
      other -> {:error, {:signaller, other}}
    end
  end

  defp local_tracks(config) do
    Enum.reduce_while([audio: config.audio_codec, video: config.video_codec], {:ok, %{}}, fn
      {kind, codec}, {:ok, acc} ->
        if config[kind] in [:sendrecv, :sendonly] do
          case config.track_type.new(config.specter, codec, "#{kind}", config.peer_id) do
            {:ok, track} -> {:cont, {:ok, Map.put(acc, kind, track)}}
            {:error, reason} -> {:halt, {:error, {:invalid_option, {:"#{kind}_codec", reason}}}}
          end
        else
          {:cont, {:ok, Map.put(acc, kind, nil)}}
        end
    end)
  end

  @impl true
  def handle_call({:call, peer}, _from, %{state: :idle} = s) do
    cond do
      peer == s.config.peer_id ->
        {:reply, {:error, :self_call}, s}

      true ->
        case signal(s, peer, {:control, :init, nil}) do
          :ok ->
            s = %{s | remote: peer, role: :caller}
            s = s |> transition(:outgoing_init) |> arm_timer(:negotiation)
            {:reply, :ok, s}

          {:error, reason} ->
            {:reply, {:error, reason}, s}
        end
    end
  end

  def handle_call({:call, _peer}, _from, s), do: {:reply, invalid(s), s}

  def handle_call(:accept, _from, %{state: :incoming_init} = s) do
    case signal(s, s.remote, {:control, :accept, nil}) do
      :ok ->
        {:reply, :ok, start_negotiation(s)}

      {:error, reason} ->
        {:reply, {:error, reason}, end_call(s, {:signal_failed, reason}, false)}
    end
  end

  def handle_call(:accept, _from, s), do: {:reply, invalid(s), s}

  def handle_call({:reject, reason}, _from, %{state: :incoming_init} = s) do
    _ = signal(s, s.remote, {:control, :reject, reason_string(reason)})
    {:reply, :ok, end_call(s, {:local_reject, reason}, false)}
  end

  def handle_call({:reject, _}, _from, s), do: {:reply, invalid(s), s}

  def handle_call({:hangup, _reason}, _from, %{state: state} = s)
      when state in [:idle, :ended],
      do: {:reply, invalid(s), s}

  def handle_call({:hangup, _reason}, _from, %{state: :ending} = s), do: {:reply, :ok, s}

  def handle_call({:hangup, reason}, _from, s),
    do: {:reply, :ok, end_call(s, {:hangup, reason}, true)}

  def handle_call({:send_data, message}, _from, %{dc_open: true, dc: dc} = s) do
    result =
      case message do
        {:text, text} -> DataChannel.send_text(s.config.specter, dc, text)
        {:binary, data} -> DataChannel.send(s.config.specter, dc, data)
      end

    {:reply, result, s}
  end

  def handle_call({:send_data, _}, _from, s), do: {:reply, {:error, :data_channel_not_open}, s}
  def handle_call(:state, _from, s), do: {:reply, s.state, s}
  def handle_call(:remote_peer_id, _from, s), do: {:reply, s.remote, s}
  def handle_call(:peer_connection, _from, s), do: {:reply, s.pc, s}
  def handle_call(:data_channel, _from, s), do: {:reply, if(s.dc_open, do: s.dc), s}
  def handle_call(:media, _from, s), do: {:reply, media_of(s), s}
  def handle_call({:subscribe, pid}, _from, s), do: {:reply, :ok, add_subscriber(s, pid)}

  def handle_call({:unsubscribe, pid}, _from, s) do
    case Map.pop(s.subscribers, pid) do
      {nil, _} ->
        {:reply, :ok, s}

      {ref, rest} ->
        Process.demonitor(ref, [:flush])
        {:reply, :ok, %{s | subscribers: rest}}
    end
  end

  ## Signalling in

  @impl true
  def handle_info({:specter_signal, from, message}, s) do
    if Specter.Signaller.valid_message?(message) do
      {:noreply, on_signal(s, from, message)}
    else
      {:noreply, s}
    end
  end

  ## The connection's events and replies

  def handle_info({:peer_connection_ready, pc}, %{pc: pc} = s), do: {:noreply, pc_ready(s)}

  def handle_info({:peer_connection_error, pc, reason}, %{pc: pc} = s),
    do: {:noreply, fail(s, :new_peer_connection, reason)}

  def handle_info(message, %{pc: pc} = s) when Negotiation.is_message(message, pc) do
    {action, nego} = Negotiation.handle_message(s.nego, message)
    s = %{s | nego: nego}

    case action do
      {:local_description, sdp} ->
        {:noreply, send_or_end(s, {:sdp, sdp})}

      {:remote_description, :offer} ->
        # The callee's tracks take the transceivers the offer made, then it answers.
        add_senders(s)
        _ = PeerConnection.create_answer(s.config.specter, pc)
        {:noreply, s}

      {:error, :no_local_description} ->
        {:noreply, fail(s, :set_local_description, :no_description)}

      {:error, {tag, reason}} ->
        {:noreply, fail(s, tag, reason)}

      _ ->
        {:noreply, s}
    end
  end

  def handle_info({:ice_candidate, pc, candidate}, %{pc: pc} = s),
    do: {:noreply, send_or_end(s, Specter.Signaller.candidate_message(candidate))}

  def handle_info({:connection_state_change, pc, state}, %{pc: pc} = s),
    do: {:noreply, on_connection_state(s, state)}

  def handle_info({:peer_connection_closed, pc}, %{pc: pc, state: :ending} = s),
    do: {:noreply, finish(s)}

  def handle_info({:peer_connection_closed, pc}, %{pc: pc} = s),
    do: {:noreply, end_call(%{s | pc: nil}, :closed, true)}

  def handle_info({:data_channel_created, pc, dc}, %{pc: pc} = s), do: {:noreply, %{s | dc: dc}}

  def handle_info({:data_channel, pc, dc}, %{pc: pc, dc: nil} = s), do: {:noreply, %{s | dc: dc}}

  def handle_info({:data_channel_open, dc}, %{dc: dc} = s) do
    emit(s, {:data_channel_open, dc})
    {:noreply, %{s | dc_open: true}}
  end

  def handle_info({:data_channel_close, dc}, %{dc: dc} = s) do
    if s.dc_open, do: emit(s, {:data_channel_close, dc})
    {:noreply, %{s | dc_open: false}}
  end

  def handle_info({:data_channel_message, dc, message}, %{dc: dc} = s) do
    emit(s, {:data, message})
    {:noreply, s}
  end

  def handle_info({:track, pc, track, info}, %{pc: pc} = s) do
    s =
      case info.kind do
        kind when kind in [:audio, :video] ->
          put_in(s.remote_tracks[kind], track)

        _ ->
          s
      end

    emit(s, {:track, track, info})
    {:noreply, s}
  end

  ## Timers, monitors

  def handle_info({:timeout, ref, :negotiation}, %{timer: ref} = s)
      when s.state in [:outgoing_init, :negotiating],
      do: {:noreply, end_call(%{s | timer: nil}, :negotiation_timeout, true)}

  def handle_info({:timeout, ref, :disconnected}, %{timer: ref, state: :active} = s),
    do: {:noreply, end_call(%{s | timer: nil}, :disconnected, true)}

  def handle_info({:timeout, ref, :closing}, %{timer: ref, state: :ending} = s),
    do: {:noreply, finish(s)}

  def handle_info(:to_idle, %{state: :ended} = s), do: {:noreply, to_idle(s)}

  def handle_info({:DOWN, ref, :process, _, _}, %{sig_ref: ref} = s) do
    s = if s.state in [:idle, :ended], do: s, else: end_call(s, :signaller_down, false)
    s = if s.state == :ending, do: finish(s), else: s
    s = if s.state == :ended, do: to_idle(s), else: s
    {:stop, {:shutdown, :signaller_down}, s}
  end

  def handle_info({:DOWN, ref, :process, pid, _}, s) do
    case s.subscribers do
      %{^pid => ^ref} -> {:noreply, %{s | subscribers: Map.delete(s.subscribers, pid)}}
      _ -> {:noreply, s}
    end
  end

  # Replies and events of connections of earlier calls, timers that were cancelled, and
  # the replies to calls made for their side effects.
  def handle_info(_message, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    {mod, sig_config} = s.config.signaller

    if s.remote && s.state not in [:idle, :ended, :ending] do
      _ = safe_signal(s, s.remote, {:control, :hangup, "session stopped"})
    end

    _ = safe(fn -> mod.unregister(sig_config, s.config.peer_id) end)

    for {_kind, track} <- s.tracks,
        track,
        do: _ = s.config.track_type.close(s.config.specter, track)

    :ok
  end

  ## The state machine

  defp on_signal(s, from, {:control, :init, _}) do
    cond do
      s.state == :idle ->
        s = %{s | remote: from, role: :callee}
        s = transition(s, :incoming_init)
        emit(s, {:incoming_call, from})
        s

      s.state == :outgoing_init and from == s.remote ->
        # Glare: both called each other. The smaller id accepts the other's call.
        if s.config.peer_id < from do
          case signal(s, from, {:control, :accept, nil}) do
            :ok -> start_negotiation(%{s | role: :callee})
            {:error, reason} -> end_call(s, {:signal_failed, reason}, false)
          end
        else
          s
        end

      true ->
        _ = signal(s, from, {:control, :reject, "busy"})
        emit(s, {:incoming_call_rejected, from, "busy"})
        s
    end
  end

  defp on_signal(%{remote: from} = s, from, {:control, :accept, _}) do
    case s.state do
      :outgoing_init -> start_negotiation(s)
      _ -> s
    end
  end

  defp on_signal(%{remote: from, state: :outgoing_init} = s, from, {:control, :reject, reason}),
    do: end_call(s, {:rejected, reason}, false)

  defp on_signal(%{remote: from, state: state} = s, from, {:control, :hangup, reason})
       when state not in [:idle, :ended, :ending],
       do: end_call(s, {:remote_hangup, reason}, false)

  defp on_signal(%{remote: from, state: state} = s, from, {:sdp, sdp})
       when state in [:incoming_init, :negotiating, :active] do
    cond do
      s.role == :callee and sdp["type"] == "offer" and (s.pc == nil or not s.pc_ready) ->
        # A libwebrtc-style peer offers right away: hold the offer until the connection
        # exists (after accept/1).
        %{s | pending_offer: sdp}

      s.role == :callee and sdp["type"] == "offer" ->
        apply_remote(s, sdp)

      s.role == :caller and sdp["type"] == "answer" and s.pc != nil ->
        apply_remote(s, sdp)

      true ->
        s
    end
  end

  # Before the remote description (and the connection): queued, never dropped.
  defp on_signal(%{remote: from, state: state} = s, from, {:candidate, candidate})
       when state in [:incoming_init, :negotiating, :active],
       do: %{s | nego: Negotiation.remote_candidate(s.nego, candidate)}

  defp on_signal(s, _from, _message), do: s

  defp start_negotiation(s) do
    case PeerConnection.new(s.config.specter, s.config.api) do
      {:ok, pc} ->
        s = %{s | pc: pc, pc_ready: false, nego: Negotiation.put_peer_connection(s.nego, pc)}
        s |> transition(:negotiating) |> arm_timer(:negotiation)

      {:error, reason} ->
        end_call(s, {:negotiation_failed, :new_peer_connection, reason}, true)
    end
  end

  defp pc_ready(s) do
    specter = s.config.specter
    pc = s.pc
    s = %{s | pc_ready: true}

    if s.config.ice_servers,
      do: _ = PeerConnection.set_configuration(specter, pc, ice_servers: s.config.ice_servers)

    case s.role do
      :caller ->
        add_senders(s)

        for kind <- [:audio, :video],
            s.config[kind] == :recvonly,
            do:
              _ =
                PeerConnection.add_transceiver_from_kind(specter, pc, kind, direction: :recvonly)

        s =
          if s.config.data_channel do
            case DataChannel.create(specter, pc, s.config.label) do
              {:ok, dc} -> %{s | dc: dc}
              {:error, _} -> s
            end
          else
            s
          end

        _ = PeerConnection.create_offer(specter, pc)
        s

      :callee ->
        case s.pending_offer do
          nil -> s
          offer -> apply_remote(%{s | pending_offer: nil}, offer)
        end
    end
  end

  defp add_senders(s) do
    for {kind, track} <- s.tracks, track do
      _ =
        case s.config[kind] do
          :sendonly when s.role == :caller ->
            PeerConnection.add_transceiver_from_track(s.config.specter, s.pc, track,
              direction: :sendonly
            )

          _ ->
            PeerConnection.add_track(s.config.specter, s.pc, track)
        end
    end

    :ok
  end

  defp apply_remote(s, sdp) do
    case Negotiation.set_remote_description(s.nego, sdp) do
      {:ok, nego} -> %{s | nego: nego}
      {{:error, reason}, _} -> fail(s, :set_remote_description, reason)
    end
  end

  defp on_connection_state(s, :connected) do
    s = cancel_timer(s)

    case s.state do
      :negotiating ->
        s = transition(s, :active)
        media = media_of(s)
        emit(s, {:media_attached, media})
        %{s | attached: media}

      _ ->
        s
    end
  end

  defp on_connection_state(%{state: :active} = s, :disconnected),
    do: arm_timer(s, :disconnected)

  defp on_connection_state(%{state: state} = s, :failed) when state in [:negotiating, :active],
    do: end_call(s, :ice_failed, true)

  defp on_connection_state(s, _), do: s

  defp fail(s, step, reason) do
    if s.state in [:idle, :ended, :ending],
      do: s,
      else: end_call(s, {:negotiation_failed, step, reason}, true)
  end

  # Ends the call: tells the remote peer when `notify?`, closes the connection (`:ending`
  # until it is closed), then `:ended` and back to `:idle`.
  defp end_call(s, reason, notify?) do
    if notify? and s.remote,
      do: _ = signal(s, s.remote, {:control, :hangup, reason_string(reason)})

    s = cancel_timer(%{s | end_reason: reason})

    case s.pc do
      nil ->
        finish(s)

      pc ->
        s = transition(s, :ending)
        _ = PeerConnection.close(s.config.specter, pc)
        ref = :erlang.start_timer(@close_timeout, self(), :closing)
        %{s | timer: ref}
    end
  end

  defp finish(s) do
    s = cancel_timer(s)
    emit(s, {:call_ended, s.remote, s.end_reason})
    s = transition(s, :ended)
    if s.attached, do: emit(s, {:media_detached, media_of(s)})
    send(self(), :to_idle)

    %{
      s
      | pc: nil,
        pc_ready: false,
        dc: nil,
        dc_open: false,
        nego: Negotiation.new(s.config.specter),
        pending_offer: nil,
        remote_tracks: %{audio: nil, video: nil},
        attached: nil
    }
  end

  defp to_idle(s), do: transition(%{s | remote: nil, role: nil, end_reason: nil}, :idle)

  defp transition(s, state) do
    s = %{s | state: state}
    emit(s, {:state, state})
    s
  end

  defp arm_timer(s, kind) do
    s = cancel_timer(s)

    ms =
      case kind do
        :negotiation -> s.config.negotiation_timeout
        :disconnected -> s.config.disconnect_timeout
      end

    %{s | timer: :erlang.start_timer(ms, self(), kind)}
  end

  defp cancel_timer(%{timer: nil} = s), do: s

  defp cancel_timer(s) do
    _ = :erlang.cancel_timer(s.timer)
    %{s | timer: nil}
  end

  ## Helpers

  defp media_of(s) do
    %{
      audio: s.tracks[:audio],
      video: s.tracks[:video],
      remote_audio: s.remote_tracks.audio,
      remote_video: s.remote_tracks.video
    }
  end

  defp invalid(s), do: {:error, {:invalid_state, s.state}}

  defp signal(s, to, message) do
    {mod, sig_config} = s.config.signaller
    mod.send_signal(sig_config, s.config.peer_id, to, message)
  end

  defp safe_signal(s, to, message), do: safe(fn -> signal(s, to, message) end)

  defp safe(fun) do
    fun.()
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  defp send_or_end(s, message) do
    case signal(s, s.remote, message) do
      :ok -> s
      {:error, reason} -> end_call(s, {:signal_failed, reason}, false)
    end
  end

  defp reason_string(nil), do: nil
  defp reason_string(reason) when is_binary(reason), do: reason
  defp reason_string({tag, nil}) when is_atom(tag), do: Atom.to_string(tag)
  defp reason_string({tag, reason}) when is_atom(tag) and is_binary(reason), do: reason
  defp reason_string(reason) when is_atom(reason), do: Atom.to_string(reason)
  defp reason_string(reason), do: inspect(reason)

  defp add_subscriber(s, pid) do
    if Map.has_key?(s.subscribers, pid) do
      s
    else
      %{s | subscribers: Map.put(s.subscribers, pid, Process.monitor(pid))}
    end
  end

  defp emit(s, event) do
    for pid <- Map.keys(s.subscribers), do: send(pid, {:specter_session, self(), event})
    :ok
  end
end
