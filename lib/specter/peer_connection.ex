defmodule Specter.PeerConnection do
  @moduledoc """
  Represents an RTCPeerConnection managed in the NIF. A running Specter instance may have 0
  or more peer connections at any time.

  Users of Specter might choose between different topologies based on their use cases: a
  Specter might be initialized per connection, and signaling messages passed between
  different instances of the NIF; a Specter may be initialized per "room," and all peer
  connections for that room created within the single NIF instance; a "room" may be split
  across Erlang nodes, with tracks forwarded between the nodes.

  ## Replies and events

  Functions return `:ok` (or `{:error, reason}` for bad input) at once, and answer with a
  message to the caller: `t:offer_msg_t/0`, `t:local_description_msg_t/0`, ... A failure
  of the asynchronous part arrives as `{:<operation>_error, pc, reason}`, for example
  `{:offer_error, pc, {:invalid_state, "..."}}`. Replies for one connection arrive in the
  order its functions were called.

  The connection's owner (its creator, or the process given to `controlling_process/3`)
  receives its events, `t:event_t/0`:

    * `{:connection_state_change, pc, state}`, `{:ice_connection_state_change, pc, state}`,
      `{:ice_gathering_state_change, pc, state}`, `{:signaling_state_change, pc, state}`
    * `{:ice_candidate, pc, json}` for each local candidate, in the browser's
      `RTCIceCandidateInit` JSON, and `{:ice_candidate, pc, nil}` when gathering completes
    * `{:ice_candidate_error, pc, map}`
    * `{:negotiation_needed, pc}`
    * `{:data_channel, pc, dc}` when the remote peer opens a data channel (see
      `Specter.DataChannel` for channel events)
    * `{:peer_connection_closed, pc}` when it is closed

  ## Negotiating two connections

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc_a} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, pc_b} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> assert_receive {:peer_connection_ready, ^pc_a}
      iex> assert_receive {:peer_connection_ready, ^pc_b}
      iex> :ok = Specter.PeerConnection.create_data_channel(specter, pc_a, "chat")
      iex> assert_receive {:data_channel_created, ^pc_a}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc_a)
      iex> assert_receive {:offer, ^pc_a, offer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc_a, offer)
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_b, offer)
      iex> :ok = Specter.PeerConnection.create_answer(specter, pc_b)
      iex> assert_receive {:answer, ^pc_b, answer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc_b, answer)
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_a, answer)
      iex> Specter.PeerConnection.await_connected(specter, [pc_a, pc_b], 5_000)
      :ok
  """

  alias Specter.Native

  @typedoc "An RTCPeerConnection managed in the NIF, named by a UUID."
  @type t() :: Specter.uuid()

  @typedoc "Options for creating a webrtc answer. Values default to false."
  @type answer_options_t() :: [] | [{:voice_activity_detection, bool()}]

  @typedoc "Options for creating a webrtc offer. Values default to false."
  @type offer_options_t() :: [] | [voice_activity_detection: bool(), ice_restart: bool()]

  @typedoc "Possible states of peer connection."
  @type connection_state_t() ::
          :closed | :connected | :connecting | :disconnected | :failed | :new | :unspecified

  @typedoc "Possible states of ICE connection."
  @type ice_connection_state_t() ::
          :unspecified
          | :new
          | :checking
          | :connected
          | :completed
          | :disconnected
          | :failed
          | :closed

  @typedoc "Possible states of ICE gathering process."
  @type ice_gathering_state_t() :: :complete | :gathering | :new | :unspecified

  @typedoc "Possible states of session parameters negotiation."
  @type signaling_state_t() ::
          :closed
          | :have_local_offer
          | :have_local_pranswer
          | :have_remote_offer
          | :have_remote_pranswer
          | :stable
          | :unspecified

  @typedoc """
  An ICE candidate as JSON: the browser's `RTCIceCandidateInit` (`candidate`, `sdpMid`,
  `sdpMLineIndex`, `usernameFragment`) or Specter 0.5's snake_case keys (`candidate`,
  `sdp_mid`, `sdp_mline_index`, `username_fragment`). A decoded map with string or atom keys
  is accepted too, so a browser's `candidate.toJSON()` can be passed straight through.
  """
  @type ice_candidate_t() :: String.t() | map()

  @typedoc "A UTF-8 encoded string encapsulating either an offer or an answer."
  @type sdp_t() :: String.t()

  @typedoc "The type of an SDP message, either an `:offer` or an `:answer`."
  @type sdp_type_t() :: :offer | :answer

  @typedoc """
  A UTF-8 encoded string encapsulating an Offer or an Answer in JSON. The keys are
  `type` (`offer`, `answer`, `pranswer`, `rollback`) and `sdp` (`t:sdp_t/0`). A map with
  those keys (strings or atoms) is accepted too.
  """
  @type session_description_t() :: String.t() | map()

  @typedoc "Message sent as a result of a call to `connection_state/2`."
  @type connection_state_msg_t() :: {:connection_state, t(), connection_state_t()}

  @typedoc "Message sent as a result of a call to `ice_connection_state/2`."
  @type ice_connection_state_msg_t() :: {:ice_connection_state, t(), ice_connection_state_t()}

  @typedoc "Message sent as a result of a call to `ice_gathering_state/2`."
  @type ice_gathering_state_msg_t() :: {:ice_gathering_state, t(), ice_gathering_state_t()}

  @typedoc "Message sent as a result of a call to `signaling_state/2`."
  @type signaling_state_msg_t() :: {:signaling_state, t(), signaling_state_t()}

  @typedoc "Message sent as a result of a call to `add_track/3`."
  @type rtp_sender_msg_t() ::
          {:rtp_sender, t(), local_track_t(), sender_t()}

  @typedoc "A local track of either flavor."
  @type local_track_t() :: Specter.TrackLocalStaticSample.t() | Specter.TrackLocalStaticRTP.t()

  @typedoc "An RTCRtpSender of a connection, named by a UUID."
  @type sender_t() :: Specter.uuid()

  @typedoc "An RTCRtpReceiver of a connection, named by a UUID."
  @type receiver_t() :: Specter.uuid()

  @typedoc """
  A transceiver as `get_transceivers/2` describes it. `kind` is `nil` only for a transceiver
  webrtc-rs has not typed yet; `mid` is `nil` until negotiated.
  """
  @type transceiver_info_t() :: %{
          id: Specter.RtpTransceiver.t(),
          mid: String.t() | nil,
          kind: :audio | :video | nil,
          direction: Specter.RtpTransceiver.direction_t() | :unspecified,
          current_direction: Specter.RtpTransceiver.direction_t() | :unspecified,
          sender: sender_t() | nil,
          receiver: receiver_t() | nil
        }

  @typedoc "Message sent as a result of `create_offer/3` and `create_answer/3`."
  @type offer_msg_t() :: {:offer, t(), String.t()} | {:answer, t(), String.t()}

  @typedoc "Message sent as a result of the description getters."
  @type local_description_msg_t() ::
          {:local_description
           | :current_local_description
           | :pending_local_description
           | :remote_description
           | :current_remote_description
           | :pending_remote_description, t(), String.t() | nil}

  @typedoc "Message sent to the owner when something happens to its connection."
  @type event_t() ::
          {:connection_state_change, t(), connection_state_t()}
          | {:ice_connection_state_change, t(), ice_connection_state_t()}
          | {:ice_gathering_state_change, t(), ice_gathering_state_t()}
          | {:signaling_state_change, t(), signaling_state_t()}
          | {:ice_candidate, t(), String.t() | nil}
          | {:ice_candidate_error, t(), map()}
          | {:negotiation_needed, t()}
          | {:data_channel, t(), Specter.DataChannel.t()}
          | {:track, t(), Specter.TrackRemote.t(), Specter.TrackRemote.info_t()}
          | {:sender_rtcp, sender_t(), [Specter.TrackRemote.rtcp_t()]}
          | {:peer_connection_closed, t()}

  @typedoc """
  Message sent when the asynchronous part of an operation fails: `{tag, pc, reason}`, the
  tag naming the operation. `Specter.RtpTransceiver`, `Specter.DataChannel` and
  `Specter.MediaFile` list theirs; `native/specter_nif/src/atoms.rs` holds the whole set.
  """
  @type error_tag_t() ::
          :peer_connection_error
          | :offer_error
          | :answer_error
          | :set_local_description_error
          | :set_remote_description_error
          | :add_ice_candidate_error
          | :local_description_error
          | :current_local_description_error
          | :pending_local_description_error
          | :remote_description_error
          | :current_remote_description_error
          | :pending_remote_description_error
          | :connection_state_error
          | :ice_connection_state_error
          | :ice_gathering_state_error
          | :signaling_state_error
          | :stats_error
          | :configuration_error
          | :set_configuration_error
          | :restart_ice_error
          | :add_track_error
          | :remove_track_error
          | :replace_track_error
          | :add_transceiver_error
          | :get_transceivers_error
          | :get_senders_error
          | :get_receivers_error

  @typedoc "See `t:error_tag_t/0`."
  @type error_msg_t() :: {error_tag_t(), t(), Specter.error()}

  @doc """
  Creates a new RTCPeerConnection, using an API reference created with `Specter.new_api/3`.
  The functionality wrapped by this function is async, so `{:ok, pc}` is returned
  immediately. Callers should listen for the `{:peer_connection_ready, pc}` message (or
  `{:peer_connection_error, pc, reason}`) to receive the results of this function.

  The caller becomes the connection's owner: it receives the connection's events, and the
  connection is closed when it exits.

  | param | type | default |
  |---|---|---|
  | specter | `t:Specter.t/0` | |
  | api | `t:Specter.api_t/0` | |

  ## Usage

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      ...>
      iex> {:ok, _pc} =
      ...>   receive do
      ...>     {:peer_connection_ready, ^pc} -> {:ok, pc}
      ...>   after
      ...>     500 -> {:error, :timeout}
      ...>   end
  """
  @spec new(Specter.t(), Specter.api_t()) :: {:ok, t()} | {:error, Specter.error()}
  def new(specter, api), do: Native.pc_new(Specter.native(specter), api)

  @doc """
  Closes an open instance of an RTCPeerConnection. The caller (and the owner, if it is
  another process) receives `{:peer_connection_closed, pc}` once it is closed; every
  function called on it afterwards answers `{:error, :closed}`.

  ## Usage

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      ...>
      iex> Specter.PeerConnection.close(specter, pc)
      :ok
      iex> {:ok, _pc} =
      ...>   receive do
      ...>     {:peer_connection_closed, ^pc} -> {:ok, pc}
      ...>   after
      ...>     500 -> {:error, :timeout}
      ...>   end
      ...>
      iex> Specter.PeerConnection.exists?(specter, pc)
      false
      iex> Specter.PeerConnection.create_offer(specter, pc)
      {:error, :closed}
  """
  @spec close(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def close(specter, pc), do: Native.pc_close(Specter.native(specter), pc)

  @doc """
  Returns true or false, depending on whether the RTCPeerConnection is initialized.

  ## Usage

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> Specter.PeerConnection.exists?(specter, pc)
      true

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> Specter.PeerConnection.exists?(specter, "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c")
      false
  """
  @spec exists?(Specter.t(), t()) :: boolean()
  def exists?(specter, pc), do: Native.pc_exists(Specter.native(specter), pc)

  @doc """
  Makes `pid` the connection's owner: it receives the connection's (and its data channels')
  events from now on, and the connection closes when it exits. Only the current owner may
  call this (`{:error, :not_owner}` otherwise), as with `:gen_tcp.controlling_process/2`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> owner = spawn(fn -> Process.sleep(:infinity) end)
      iex> Specter.PeerConnection.controlling_process(specter, pc, owner)
      :ok
      iex> Specter.PeerConnection.controlling_process(specter, pc, self())
      {:error, :not_owner}
  """
  @spec controlling_process(Specter.t(), t(), pid()) :: :ok | {:error, Specter.error()}
  def controlling_process(specter, pc, pid),
    do: Native.pc_controlling_process(Specter.native(specter), pc, pid)

  @doc """
  Given an RTCPeerConnection, create an offer that can be passed to another connection.
  Sends `{:offer, pc, json}` to the caller.

  | param | type | default |
  |---|---|---|
  | specter | `t:Specter.t/0` | |
  | peer_connection | opaque | |
  | options | `t:offer_options_t/0` | voice_activity_detection: false, ice_restart: false |

  `voice_activity_detection` is accepted for compatibility; webrtc-rs has no VAD.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc, ice_restart: false)
      iex> assert_receive {:offer, ^pc, json}
      iex> {:ok, %{"type" => "offer", "sdp" => "v=0" <> _}} = Specter.JSON.decode(json)
      iex> Specter.PeerConnection.create_offer(specter, pc, colour: :blue)
      {:error, {:invalid_option, :colour}}
  """
  @spec create_offer(Specter.t(), t(), offer_options_t()) :: :ok | {:error, Specter.error()}
  def create_offer(specter, pc, options \\ []) do
    with {:ok, opts} <- bool_options(options, [:voice_activity_detection, :ice_restart]) do
      Native.pc_create_offer(Specter.native(specter), pc, opts)
    end
  end

  @doc """
  Given an RTCPeerConnection where the remote description has been assigned via
  `set_remote_description/3`, create an answer that can be passed to another connection.
  Sends `{:answer, pc, json}` to the caller.

  | param | type | default |
  |---|---|---|
  | specter | `t:Specter.t/0` | |
  | peer_connection | opaque | |
  | options | `t:answer_options_t/0` | voice_activity_detection: false |

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> :ok = Specter.PeerConnection.create_answer(specter, pc)
      iex> assert_receive {:answer_error, ^pc, {:invalid_state, _}}
  """
  @spec create_answer(Specter.t(), t(), answer_options_t()) :: :ok | {:error, Specter.error()}
  def create_answer(specter, pc, options \\ []) do
    with {:ok, opts} <- bool_options(options, [:voice_activity_detection]) do
      Native.pc_create_answer(Specter.native(specter), pc, opts)
    end
  end

  @doc """
  Given an offer or an answer session description, sets the local description on a peer
  connection. The description should be in the form of JSON with the keys `type` and
  `sdp`. Sends `{:ok, pc, :set_local_description}` to the caller.

  | param | type | default |
  |---|---|---|
  | specter | `t:Specter.t/0` | |
  | peer_connection | opaque | |
  | description | `t:session_description_t/0` | |

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> Specter.PeerConnection.set_local_description(specter, pc, "{not json")
      {:error, :invalid_json}
      iex> Specter.PeerConnection.set_local_description(specter, pc, ~s({"type": "offer"}))
      {:error, :invalid_session_description}
  """
  @spec set_local_description(Specter.t(), t(), session_description_t()) ::
          :ok | {:error, Specter.error()}
  def set_local_description(specter, pc, description),
    do: Native.pc_set_local_description(Specter.native(specter), pc, description)

  @doc """
  Given an offer or an answer in the form of SDP generated by a remote party, sets the
  remote description on a peer connection. Expects a session description in the form of
  JSON with the keys `type` and `sdp`. Sends `{:ok, pc, :set_remote_description}` to the
  caller.

  | param | type | default |
  |---|---|---|
  | specter | `t:Specter.t/0` | |
  | peer_connection | opaque | |
  | description | `t:session_description_t/0` | |

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:error, {:invalid_sdp, _}} = Specter.PeerConnection.set_remote_description(specter, pc, %{type: "offer", sdp: "not sdp"})
  """
  @spec set_remote_description(Specter.t(), t(), session_description_t()) ::
          :ok | {:error, Specter.error()}
  def set_remote_description(specter, pc, description),
    do: Native.pc_set_remote_description(Specter.native(specter), pc, description)

  @doc """
  Given an ICE candidate, add it to the given peer connection. Assumes trickle ICE.
  Candidates must be JSON, with the keys `candidate`, `sdp_mid`, `sdp_mline_index`, and
  `username_fragment`, or the browser's `candidate`, `sdpMid`, `sdpMLineIndex` and
  `usernameFragment` (see `t:ice_candidate_t/0`). Sends `{:ok, pc, :add_ice_candidate}` to
  the caller, or `{:add_ice_candidate_error, pc, reason}` (for instance before a remote
  description is set).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:error, {:invalid_candidate, _}} = Specter.PeerConnection.add_ice_candidate(specter, pc, ~s({"candidate": "candidate:garbage"}))
      iex> candidate = %{"candidate" => "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid" => "0", "sdpMLineIndex" => 0}
      iex> :ok = Specter.PeerConnection.add_ice_candidate(specter, pc, candidate)
      iex> assert_receive {:add_ice_candidate_error, ^pc, {:invalid_state, _}}
  """
  @spec add_ice_candidate(Specter.t(), t(), ice_candidate_t()) :: :ok | {:error, Specter.error()}
  def add_ice_candidate(specter, pc, candidate),
    do: Native.pc_add_ice_candidate(Specter.native(specter), pc, candidate)

  @doc """
  Sends back the value of the local session description on a peer connection. This will
  send back JSON representing an offer or an answer when the peer connection has had
  `set_local_description/3` called. If ICE has been successfully negotated, the current
  local description will be sent back, otherwise the caller will receive the pending local
  description.

  As W3C's `localDescription`, the description carries every local candidate gathered so
  far and, once gathering is complete (`{:ice_candidate, pc, nil}`,
  `{:ice_gathering_state_change, pc, :complete}`), `a=end-of-candidates`. Sending it then is
  how to negotiate with a peer that does not trickle (a WHIP client, many servers and
  embedded stacks): no `add_ice_candidate/3` call is needed on either side. Candidates are
  listed in the first media section, the BUNDLE transport, for component 1 only (RTCP is
  always multiplexed). Pass `include_candidates: false` to get the description exactly as
  it was applied, without candidates.

  See `current_local_description/2` and `pending_local_description/2`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      ...>
      iex> Specter.PeerConnection.local_description(specter, pc)
      :ok
      iex> assert_receive {:local_description, ^pc, nil}
      ...>
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc)
      iex> assert_receive {:offer, ^pc, offer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc, offer)
      iex> assert_receive {:ok, ^pc, :set_local_description}
      ...>
      iex> Specter.PeerConnection.local_description(specter, pc)
      :ok
      iex> assert_receive {:local_description, ^pc, ^offer}
  """
  @spec local_description(Specter.t(), t(), [{:include_candidates, boolean()}]) ::
          :ok | {:error, Specter.error()}
  def local_description(specter, pc, opts \\ []),
    do: description(specter, pc, :local_description, opts)

  @doc """
  Sends back the value of the current session description on a peer connection. This will
  send back JSON representing an offer or an answer when the peer connection has had
  `set_local_description/3` called and has successfully negotiated ICE. In all other
  cases, `nil` will be sent. Carries the gathered candidates; accepts
  `include_candidates: false` like `local_description/3`.

  See `pending_local_description/2` and `local_description/2`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> Specter.PeerConnection.current_local_description(specter, pc)
      :ok
      iex> assert_receive {:current_local_description, ^pc, nil}
  """
  @spec current_local_description(Specter.t(), t(), [{:include_candidates, boolean()}]) ::
          :ok | {:error, Specter.error()}
  def current_local_description(specter, pc, opts \\ []),
    do: description(specter, pc, :current_local_description, opts)

  @doc """
  Sends back the value of the session description on a peer connection that is pending
  connection, or nil. Carries the gathered candidates; accepts `include_candidates: false`
  like `local_description/3`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      ...>
      iex> Specter.PeerConnection.pending_local_description(specter, pc)
      :ok
      iex> assert_receive {:pending_local_description, ^pc, nil}
      ...>
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc)
      iex> assert_receive {:offer, ^pc, offer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc, offer)
      iex> assert_receive {:ok, ^pc, :set_local_description}
      ...>
      iex> Specter.PeerConnection.pending_local_description(specter, pc)
      :ok
      iex> assert_receive {:pending_local_description, ^pc, ^offer}
  """
  @spec pending_local_description(Specter.t(), t(), [{:include_candidates, boolean()}]) ::
          :ok | {:error, Specter.error()}
  def pending_local_description(specter, pc, opts \\ []),
    do: description(specter, pc, :pending_local_description, opts)

  @doc """
  Sends back the value of the remote session description on a peer connection. This will
  send back JSON representing an offer or an answer when the peer connection has had
  `set_remote_description/3` called. If ICE has been successfully negotated, the current
  remote description will be sent back, otherwise the caller will receive the pending
  remote description.

  See `current_remote_description/2` and `pending_remote_description/2`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc_offer} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc_offer}
      iex> :ok = Specter.PeerConnection.create_data_channel(specter, pc_offer, "foo")
      iex> assert_receive {:data_channel_created, ^pc_offer}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc_offer)
      iex> assert_receive {:offer, ^pc_offer, offer}
      ...>
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc_answer} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc_answer}
      ...>
      iex> Specter.PeerConnection.remote_description(specter, pc_answer)
      :ok
      iex> assert_receive {:remote_description, ^pc_answer, nil}
      ...>
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_answer, offer)
      iex> assert_receive {:ok, ^pc_answer, :set_remote_description}
      ...>
      iex> Specter.PeerConnection.remote_description(specter, pc_answer)
      :ok
      iex> assert_receive {:remote_description, ^pc_answer, ^offer}
  """
  @spec remote_description(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def remote_description(specter, pc), do: description(specter, pc, :remote_description, [])

  @doc """
  Sends back the value of the current remote session description on a peer connection.
  This will send back JSON representing an offer or an answer when the peer connection has
  had `set_remote_description/3` called and has successfully negotiated ICE. In all other
  cases, `nil` will be sent.

  See `remote_description/2` and `pending_remote_description/2`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> Specter.PeerConnection.current_remote_description(specter, pc)
      :ok
      iex> assert_receive {:current_remote_description, ^pc, nil}
  """
  @spec current_remote_description(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def current_remote_description(specter, pc),
    do: description(specter, pc, :current_remote_description, [])

  @doc """
  Sends back the value of the remote session description on a peer connection on a peer
  that is pending connection, or nil.

  See `current_remote_description/2` and `remote_description/2`.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc_offer} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc_offer}
      iex> :ok = Specter.PeerConnection.create_data_channel(specter, pc_offer, "foo")
      iex> assert_receive {:data_channel_created, ^pc_offer}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc_offer)
      iex> assert_receive {:offer, ^pc_offer, offer}
      ...>
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc_answer} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc_answer}
      ...>
      iex> Specter.PeerConnection.pending_remote_description(specter, pc_answer)
      :ok
      iex> assert_receive {:pending_remote_description, ^pc_answer, nil}
      ...>
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_answer, offer)
      iex> assert_receive {:ok, ^pc_answer, :set_remote_description}
      ...>
      iex> Specter.PeerConnection.pending_remote_description(specter, pc_answer)
      :ok
      iex> assert_receive {:pending_remote_description, ^pc_answer, ^offer}
  """
  @spec pending_remote_description(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def pending_remote_description(specter, pc),
    do: description(specter, pc, :pending_remote_description, [])

  defp description(specter, pc, which, opts) do
    case opts do
      [] ->
        Native.pc_description(Specter.native(specter), pc, which, true)

      [include_candidates: flag] when is_boolean(flag) ->
        Native.pc_description(Specter.native(specter), pc, which, flag)

      _ ->
        {:error, {:invalid_option, :include_candidates}}
    end
  end

  @doc """
  Sends back state of peer connection. This will send message `t:connection_state_msg_t/0`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.connection_state(specter, pc)
      iex> assert_receive {:connection_state, ^pc, :new}
  """
  @spec connection_state(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def connection_state(specter, pc),
    do: Native.pc_state(Specter.native(specter), pc, :connection_state)

  @doc """
  Sends back state of ICE connection for given peer connection. This will send message
  `t:ice_connection_state_msg_t/0`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.ice_connection_state(specter, pc)
      iex> assert_receive {:ice_connection_state, ^pc, :new}
  """
  @spec ice_connection_state(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def ice_connection_state(specter, pc),
    do: Native.pc_state(Specter.native(specter), pc, :ice_connection_state)

  @doc """
  Sends back state of ICE gathering process. This will send message
  `t:ice_gathering_state_msg_t/0`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.ice_gathering_state(specter, pc)
      iex> assert_receive {:ice_gathering_state, ^pc, :new}
  """
  @spec ice_gathering_state(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def ice_gathering_state(specter, pc),
    do: Native.pc_state(Specter.native(specter), pc, :ice_gathering_state)

  @doc """
  Sends back state of session parameters negotiation. This will send message
  `t:signaling_state_msg_t/0`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.signaling_state(specter, pc)
      iex> assert_receive {:signaling_state, ^pc, :stable}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc)
      iex> assert_receive {:offer, ^pc, offer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc, offer)
      iex> :ok = Specter.PeerConnection.signaling_state(specter, pc)
      iex> assert_receive {:signaling_state, ^pc, :have_local_offer}
  """
  @spec signaling_state(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def signaling_state(specter, pc),
    do: Native.pc_state(Specter.native(specter), pc, :signaling_state)

  @doc """
  Sends back a JSON encoded string representing the current stats of a peer connection:
  `{:stats, pc, json}`, an object of W3C stats dictionaries keyed by id. With
  `format: :map` the stats arrive as an Elixir map (string keys) instead.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      ...>
      iex> Specter.PeerConnection.get_stats(specter, pc)
      :ok
      iex> assert_receive {:stats, ^pc, json}
      iex> {:ok, _stats} = Specter.JSON.decode(json)
      ...>
      iex> :ok = Specter.PeerConnection.get_stats(specter, pc, format: :map)
      iex> assert_receive {:stats, ^pc, %{} = stats}
      iex> Enum.any?(stats, fn {_id, s} -> s["type"] == "peer-connection" end)
      true
  """
  @spec get_stats(Specter.t(), t(), [{:format, :json | :map}]) :: :ok | {:error, Specter.error()}
  def get_stats(specter, pc, opts \\ []) do
    case opts do
      [] -> Native.pc_get_stats(Specter.native(specter), pc, false)
      [format: :json] -> Native.pc_get_stats(Specter.native(specter), pc, false)
      [format: :map] -> Native.pc_get_stats(Specter.native(specter), pc, true)
      _ -> {:error, {:invalid_option, :format}}
    end
  end

  @doc """
  Creates a data channel on an RTCPeerConnection. Sends `{:data_channel_created, pc}` to
  the caller; the channel's events (`{:data_channel_open, dc}`, messages, ...) go to the
  connection's owner. Use `Specter.DataChannel.create/5` to get the channel's handle and to
  pass `RTCDataChannelInit` options.

  Note: this can be useful when attempting to generate a valid offer, but where no media
  tracks are expected to be sent or received.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.create_data_channel(specter, pc, "foo")
      iex> assert_receive {:data_channel_created, ^pc}
  """
  @spec create_data_channel(Specter.t(), t(), String.t()) :: :ok | {:error, Specter.error()}
  def create_data_channel(specter, pc, label) do
    with {:ok, _dc} <- Native.dc_create(Specter.native(specter), pc, label, %{}, :pc), do: :ok
  end

  @doc """
  Adds track to peer connection.

  Sends back uuid of newly created rtp sender. This will send message
  `t:rtp_sender_msg_t/0`.

  The track may be a `Specter.TrackLocalStaticSample` or a `Specter.TrackLocalStaticRTP`. A
  track can be added to any number of connections; each gets its own sender and SSRC, and
  every write to the track goes to all of them. Adding a track needs a renegotiation
  (`{:negotiation_needed, pc}` tells the owner). If adding fails,
  `{:add_track_error, pc, reason}` is sent instead.

  ## Usage

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, media_engine} = Specter.new_media_engine(specter)
      iex> {:ok, registry} = Specter.new_registry(specter, media_engine)
      iex> {:ok, api} = Specter.new_api(specter, media_engine, registry)
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, api)
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> codec = %Specter.RtpCodecCapability{mime_type: "audio"}
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, codec, "audio", "specter")
      iex> :ok = Specter.PeerConnection.add_track(specter, pc, track)
      iex> assert_receive {:rtp_sender, ^pc, ^track, _rtp_sender}
      ...>
      iex> {:error, :invalid_track} = Specter.PeerConnection.add_track(specter, pc, "invalid_track")
  """
  @spec add_track(Specter.t(), t(), local_track_t()) :: :ok | {:error, Specter.error()}
  def add_track(specter, pc, track), do: Native.pc_add_track(Specter.native(specter), pc, track)

  @doc """
  Stops a sender sending (`RTCPeerConnection.removeTrack`): its transceiver becomes
  `recvonly` (or `inactive`) at the next negotiation, which the owner is told is needed.
  Sends `{:ok, pc, :remove_track}` (or `{:remove_track_error, pc, reason}`) to the caller.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, %Specter.RtpCodecCapability{mime_type: "audio"}, "a", "s")
      iex> :ok = Specter.PeerConnection.add_track(specter, pc, track)
      iex> assert_receive {:rtp_sender, ^pc, ^track, sender}
      iex> :ok = Specter.PeerConnection.remove_track(specter, pc, sender)
      iex> assert_receive {:ok, ^pc, :remove_track}
      iex> :ok = Specter.PeerConnection.remove_track(specter, pc, sender)
      iex> assert_receive {:remove_track_error, ^pc, :not_found}
  """
  @spec remove_track(Specter.t(), t(), sender_t()) :: :ok | {:error, Specter.error()}
  def remove_track(specter, pc, sender),
    do: Native.pc_remove_track(Specter.native(specter), pc, sender)

  @doc """
  Makes a sender send another local track of the same codec, or nothing (`nil`), without
  renegotiation (`RTCRtpSender.replaceTrack`). Sends `{:ok, pc, :replace_track}` or
  `{:replace_track_error, pc, reason}` (`{:invalid_codec, detail}` for another codec).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> vp8 = %Specter.RtpCodecCapability{mime_type: "video/VP8"}
      iex> {:ok, camera} = Specter.TrackLocalStaticSample.new(specter, vp8, "camera", "s")
      iex> {:ok, screen} = Specter.TrackLocalStaticSample.new(specter, vp8, "screen", "s")
      iex> :ok = Specter.PeerConnection.add_track(specter, pc, camera)
      iex> assert_receive {:rtp_sender, ^pc, ^camera, sender}
      iex> :ok = Specter.PeerConnection.replace_track(specter, pc, sender, screen)
      iex> assert_receive {:ok, ^pc, :replace_track}
      iex> :ok = Specter.PeerConnection.get_senders(specter, pc)
      iex> assert_receive {:senders, ^pc, [%{id: ^sender, track: ^screen, dropped: 0}]}
  """
  @spec replace_track(Specter.t(), t(), sender_t(), local_track_t() | nil) ::
          :ok | {:error, Specter.error()}
  def replace_track(specter, pc, sender, track),
    do: Native.pc_replace_track(Specter.native(specter), pc, sender, track)

  @doc """
  Adds a transceiver of a kind (`:audio` or `:video`) with no track to send
  (`addTransceiverFromKind`). `direction:` is `:sendrecv` (default), `:sendonly`,
  `:recvonly` or `:inactive`; a `:recvonly` transceiver asks the remote peer for media. A
  sending transceiver's sender sends nothing until `replace_track/4` gives it a track of
  the kind's default codec (Opus or VP8); use `add_transceiver_from_track/4` for others.
  Sends `{:transceiver, pc, transceiver}` (or `{:add_transceiver_error, pc, reason}`).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.add_transceiver_from_kind(specter, pc, :video, direction: :recvonly)
      iex> assert_receive {:transceiver, ^pc, transceiver}
      iex> :ok = Specter.PeerConnection.get_transceivers(specter, pc)
      iex> assert_receive {:transceivers, ^pc, [%{id: ^transceiver, kind: :video, direction: :recvonly}]}
      iex> Specter.PeerConnection.add_transceiver_from_kind(specter, pc, :smell)
      {:error, {:invalid_argument, :kind}}
  """
  @spec add_transceiver_from_kind(Specter.t(), t(), :audio | :video, [
          {:direction, Specter.RtpTransceiver.direction_t()}
        ]) :: :ok | {:error, Specter.error()}
  def add_transceiver_from_kind(specter, pc, kind, opts \\ []) do
    with :ok <- check_kind(kind),
         {:ok, direction} <- direction_opt(opts) do
      Native.pc_add_transceiver(Specter.native(specter), pc, kind, direction)
    end
  end

  @doc """
  Adds a transceiver that sends a local track (`addTransceiverFromTrack`), with a direction
  as in `add_transceiver_from_kind/4`. Sends `{:transceiver, pc, transceiver}`; the sender's
  id is in `get_transceivers/2`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, track} = Specter.TrackLocalStaticRTP.new(specter, %Specter.RtpCodecCapability{mime_type: "video/VP8"}, "v", "s")
      iex> :ok = Specter.PeerConnection.add_transceiver_from_track(specter, pc, track, direction: :sendonly)
      iex> assert_receive {:transceiver, ^pc, _transceiver}
      iex> :ok = Specter.PeerConnection.get_senders(specter, pc)
      iex> assert_receive {:senders, ^pc, [%{track: ^track}]}
  """
  @spec add_transceiver_from_track(Specter.t(), t(), local_track_t(), [
          {:direction, Specter.RtpTransceiver.direction_t()}
        ]) :: :ok | {:error, Specter.error()}
  def add_transceiver_from_track(specter, pc, track, opts \\ []) do
    cond do
      track in [:audio, :video] or not is_binary(track) ->
        {:error, :invalid_track}

      true ->
        with {:ok, direction} <- direction_opt(opts) do
          Native.pc_add_transceiver(Specter.native(specter), pc, track, direction)
        end
    end
  end

  defp check_kind(kind) when kind in [:audio, :video], do: :ok
  defp check_kind(_), do: {:error, {:invalid_argument, :kind}}

  defp direction_opt(opts) when is_list(opts) do
    if Keyword.keyword?(opts), do: direction_kw(opts), else: {:error, {:invalid_argument, :opts}}
  end

  defp direction_opt(_), do: {:error, {:invalid_argument, :opts}}

  defp direction_kw(opts) do
    case Keyword.pop(opts, :direction, :sendrecv) do
      {direction, []} when direction in [:sendrecv, :sendonly, :recvonly, :inactive] ->
        {:ok, direction}

      {_, []} ->
        {:error, {:invalid_option, :direction}}

      {_, [{key, _} | _]} when is_atom(key) ->
        {:error, {:invalid_option, key}}
    end
  end

  @doc """
  Sends `{:transceivers, pc, [t:transceiver_info_t/0]}` to the caller: every transceiver of
  the connection in order, with its mid, kind, direction, negotiated direction, sender and
  receiver.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.get_transceivers(specter, pc)
      iex> assert_receive {:transceivers, ^pc, []}
  """
  @spec get_transceivers(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def get_transceivers(specter, pc),
    do: Native.pc_get_transceivers(Specter.native(specter), pc)

  @doc """
  Sends `{:senders, pc, [%{id: sender, track: local_track | nil, dropped: n}]}` to the
  caller; `track` is the local track the sender sends now, `dropped` the packets it lost to
  a full send queue (forwarding never waits for a slow subscriber).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.get_senders(specter, pc)
      iex> assert_receive {:senders, ^pc, []}
  """
  @spec get_senders(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def get_senders(specter, pc), do: Native.pc_get_senders(Specter.native(specter), pc)

  @doc """
  Sends `{:receivers, pc, [%{id: receiver, track: remote_track | nil}]}` to the caller;
  `track` is the `Specter.TrackRemote` once it was announced with `{:track, ...}`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.get_receivers(specter, pc)
      iex> assert_receive {:receivers, ^pc, []}
  """
  @spec get_receivers(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def get_receivers(specter, pc), do: Native.pc_get_receivers(Specter.native(specter), pc)

  @doc """
  Restarts ICE: the next `create_offer/3` carries fresh ICE credentials and local
  candidates are gathered again. Sends `{:ok, pc, :restart_ice}` to the caller. (The same
  as `create_offer(specter, pc, ice_restart: true)`.)

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.restart_ice(specter, pc)
      iex> assert_receive {:ok, ^pc, :restart_ice}
  """
  @spec restart_ice(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def restart_ice(specter, pc), do: Native.pc_restart_ice(Specter.native(specter), pc)

  @doc """
  Sends back the connection's configuration: `{:configuration, pc, map}` with
  `:ice_servers`, `:ice_transport_policy`, `:bundle_policy`, `:rtcp_mux_policy` and
  `:ice_candidate_pool_size`.

      iex> {:ok, specter} = Specter.init(ice_servers: ["stun:stun.l.google.com:19302"])
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.get_configuration(specter, pc)
      iex> assert_receive {:configuration, ^pc, %{ice_servers: [%{urls: ["stun:stun.l.google.com:19302"]}]}}
  """
  @spec get_configuration(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def get_configuration(specter, pc),
    do: Native.pc_get_configuration(Specter.native(specter), pc)

  @doc """
  Updates the fields of the configuration W3C lets an application change after
  construction: `:ice_servers` and `:ice_transport_policy` (`:all` or `:relay`). Omitted
  keys keep their current value. Sends `{:ok, pc, :set_configuration}` to the caller.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.set_configuration(specter, pc, ice_servers: ["stun:127.0.0.1:3478"])
      iex> assert_receive {:ok, ^pc, :set_configuration}
      iex> Specter.PeerConnection.set_configuration(specter, pc, ice_transport_policy: :sometimes)
      {:error, {:invalid_option, :ice_transport_policy}}
  """
  @spec set_configuration(Specter.t(), t(),
          ice_servers: [String.t() | map()],
          ice_transport_policy: :all | :relay
        ) :: :ok | {:error, Specter.error()}
  def set_configuration(specter, pc, configuration) when is_list(configuration) do
    with :ok <- config_keys(configuration),
         {:ok, servers} <- config_servers(configuration),
         {:ok, policy} <- config_policy(configuration) do
      Native.pc_set_configuration(Specter.native(specter), pc, servers, policy)
    end
  end

  def set_configuration(_specter, _pc, _configuration),
    do: {:error, {:invalid_argument, :configuration}}

  defp config_keys(configuration) do
    if Keyword.keyword?(configuration) do
      case Enum.find(configuration, fn {k, _} ->
             k not in [:ice_servers, :ice_transport_policy]
           end) do
        nil -> :ok
        {key, _} -> {:error, {:invalid_option, key}}
      end
    else
      {:error, {:invalid_argument, :configuration}}
    end
  end

  defp config_servers(configuration) do
    case Keyword.fetch(configuration, :ice_servers) do
      :error ->
        {:ok, nil}

      {:ok, servers} ->
        case Specter.Config.normalize_ice_servers(servers) do
          {:ok, servers} -> {:ok, servers}
          :error -> {:error, {:invalid_option, :ice_servers}}
        end
    end
  end

  defp config_policy(configuration) do
    case Keyword.get(configuration, :ice_transport_policy) do
      policy when policy in [nil, :all, :relay] -> {:ok, policy}
      _ -> {:error, {:invalid_option, :ice_transport_policy}}
    end
  end

  @doc """
  Creates an API with a fresh media engine and registry: a shortcut for
  `Specter.new_media_engine/1` + `Specter.new_registry/2` + `Specter.new_api/3`.
  Raises `MatchError` if the instance is unusable.

      iex> {:ok, specter} = Specter.init()
      iex> api = Specter.PeerConnection.default_api!(specter)
      iex> Specter.api_exists?(specter, api)
      true
  """
  @spec default_api!(Specter.t()) :: Specter.api_t()
  def default_api!(specter) do
    {:ok, media_engine} = Specter.new_media_engine(specter)
    {:ok, registry} = Specter.new_registry(specter, media_engine)
    {:ok, api} = Specter.new_api(specter, media_engine, registry)
    api
  end

  @doc """
  Waits, in the owner, for every connection in `pcs` to report
  `{:connection_state_change, pc, :connected}`, forwarding their ICE candidates to each
  other meanwhile (for connections negotiated in the same process). Returns `:ok`, or
  `{:error, {:timeout, pending}}` / `{:error, {:failed, pc}}`.

  Messages it does not consume stay in the mailbox.
  """
  @spec await_connected(Specter.t(), [t()], timeout()) :: :ok | {:error, term()}
  # (A timeout other than :infinity or 0..4_294_967_295 ms, the longest `receive` can wait,
  # is {:error, {:invalid_argument, :timeout}}.)
  def await_connected(specter, pcs, timeout \\ 5_000)

  def await_connected(specter, pcs, timeout)
      when is_list(pcs) and
             (timeout == :infinity or (is_integer(timeout) and timeout in 0..4_294_967_295)) do
    if Specter.Options.proper_list?(pcs) do
      deadline =
        if timeout == :infinity,
          do: :infinity,
          else: System.monotonic_time(:millisecond) + timeout

      do_await(specter, pcs, MapSet.new(pcs), deadline)
    else
      {:error, {:invalid_argument, :peer_connections}}
    end
  end

  def await_connected(_specter, pcs, _timeout) when not is_list(pcs),
    do: {:error, {:invalid_argument, :peer_connections}}

  def await_connected(_specter, _pcs, _timeout), do: {:error, {:invalid_argument, :timeout}}

  defp do_await(specter, all, pending, deadline) do
    if MapSet.size(pending) == 0,
      do: :ok,
      else: await_next(specter, all, pending, deadline)
  end

  defp await_next(specter, all, pending, deadline) do
    remaining =
      if deadline == :infinity,
        do: :infinity,
        else: max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:ice_candidate, pc, candidate} when is_binary(candidate) ->
        if pc in all do
          for other <- all, other != pc, do: add_ice_candidate(specter, other, candidate)
        end

        do_await(specter, all, pending, deadline)

      {:connection_state_change, pc, :connected} ->
        do_await(specter, all, MapSet.delete(pending, pc), deadline)

      {:connection_state_change, pc, :failed} ->
        if pc in all, do: {:error, {:failed, pc}}, else: do_await(specter, all, pending, deadline)
    after
      remaining -> {:error, {:timeout, MapSet.to_list(pending)}}
    end
  end

  defp bool_options(options, allowed) when is_list(options) do
    if Specter.Options.proper_list?(options),
      do: bool_options_list(options, allowed),
      else: {:error, {:invalid_argument, :options}}
  end

  defp bool_options(_options, _allowed), do: {:error, {:invalid_argument, :options}}

  defp bool_options_list(options, allowed) do
    Enum.reduce_while(options, {:ok, %{}}, fn
      {key, value}, {:ok, acc} when is_atom(key) and is_boolean(value) ->
        if key in allowed,
          do: {:cont, {:ok, Map.put(acc, key, value)}},
          else: {:halt, {:error, {:invalid_option, key}}}

      {key, _value}, _acc when is_atom(key) ->
        {:halt, {:error, {:invalid_option, key}}}

      _, _acc ->
        {:halt, {:error, {:invalid_argument, :options}}}
    end)
  end
end
