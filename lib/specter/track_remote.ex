defmodule Specter.TrackRemote do
  @moduledoc """
  Tracks the remote peer sends (`RTCRtpReceiver.track`).

  When a remote track's first packet arrives, the connection's owner gets
  `{:track, pc, track, info}` with `t:info_t/0`: kind, codec, SSRC, RID, stream and track
  ids. From then on the owner may receive, per track:

    * `{:rtp, track, packet}`: a marshalled RTP packet, **only while the owner grants
      credit** with `set_active/3`, as `:gen_tcp`'s `active` option (`true`, `:once`, a
      count, or `false`, the default). `{:track_passive, track}` says a count ran out.
      Media is real time: a packet that arrives with no credit is not kept for later;
    * `{:track_rtcp, track, [rtcp]}`: sender reports about the track (`t:rtcp_t/0`);
    * `{:track_mute, track}`, `{:track_unmute, track}`, `{:track_ended, track}`.

  Packets need not come through the BEAM at all: `forward/3` sends a remote track's packets
  to a `Specter.TrackLocalStaticRTP` inside the NIF, to every connection that track is on,
  and relays those subscribers' keyframe requests back to the publisher.
  `Specter.MediaFile.record/4` writes a track to a file.

  RTCP the other way: `request_keyframe/3` sends a PLI or FIR to the remote sender; the
  feedback a local sender receives (PLI, FIR, NACK, receiver reports, REMB) reaches the
  owner as `{:sender_rtcp, sender, [rtcp]}`.
  """

  alias Specter.Native

  @typedoc "A remote track, named by a UUID."
  @type t() :: Specter.uuid()

  @typedoc "What `{:track, pc, track, info}` and `info/2` say about a remote track."
  @type info_t() :: %{
          required(:kind) => :audio | :video | :unspecified,
          required(:codec) =>
            %{
              mime_type: String.t(),
              clock_rate: non_neg_integer(),
              channels: non_neg_integer(),
              sdp_fmtp_line: String.t()
            }
            | nil,
          required(:ssrc) => non_neg_integer(),
          required(:rid) => String.t() | nil,
          required(:stream_id) => String.t(),
          required(:track_id) => String.t(),
          optional(:peer_connection) => Specter.PeerConnection.t(),
          optional(:packet_count) => non_neg_integer(),
          optional(:duplicates) => non_neg_integer(),
          optional(:forwarded) => non_neg_integer(),
          optional(:forward_time_us) => non_neg_integer()
        }

  @typedoc """
  An RTCP packet as a map, by `:type`: `:pli` and `:fir` (`sender_ssrc`, `media_ssrc`),
  `:nack` (`sender_ssrc`, `media_ssrc`, `lost`: sequence numbers), `:receiver_report`
  (`ssrc`, `reports`), `:sender_report` (`ssrc`, `ntp_time`, `rtp_time`, `packet_count`,
  `octet_count`, `reports`) and `:remb` (`bitrate` in bit/s, `ssrcs`). A report is
  `%{ssrc, fraction_lost, total_lost, last_sequence_number, jitter}`.
  """
  @type rtcp_t() :: %{required(:type) => atom(), optional(atom()) => term()}

  @doc """
  Whether a remote track exists (it is forgotten when it ends or its connection closes).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.exists?(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3")
      false
  """
  @spec exists?(Specter.t(), t()) :: boolean()
  def exists?(specter, track), do: Native.track_remote_exists(Specter.native(specter), track)

  @doc """
  Sets how the owner receives the track's RTP packets: `true` (every packet), `:once`, a
  positive count (added to what is left, like `:inet.setopts/2`), or `false` (none, the
  default).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.set_active(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", true)
      {:error, :not_found}
      iex> Specter.TrackRemote.set_active(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", :often)
      {:error, {:invalid_option, :active}}
  """
  @spec set_active(Specter.t(), t(), boolean() | :once | pos_integer()) ::
          :ok | {:error, Specter.error()}
  def set_active(specter, track, active) do
    if active in [true, false, :once] or (is_integer(active) and active > 0) do
      Native.track_remote_set_active(Specter.native(specter), track, active)
    else
      {:error, {:invalid_option, :active}}
    end
  end

  @doc """
  Returns what is known about the track (`t:info_t/0`) with its connection, the packets
  received (`packet_count`, each sequence number once), the copies of packets already
  received that were left out (`duplicates`: retransmissions of packets that were not lost,
  Chromium's RTX bandwidth probes), the packets forwarded so far and the time spent
  forwarding them (`forward_time_us`: the native forwarding loop, for cost accounting).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.info(specter, "not a track")
      {:error, :not_found}
  """
  @spec info(Specter.t(), t()) :: {:ok, info_t()} | {:error, Specter.error()}
  def info(specter, track), do: Native.track_remote_info(Specter.native(specter), track)

  @doc """
  Asks the remote sender for a keyframe: a PLI, or a FIR with `fir: true`.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.request_keyframe(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3")
      {:error, :not_found}
  """
  @spec request_keyframe(Specter.t(), t(), [{:fir, boolean()}]) ::
          :ok | {:error, Specter.error()}
  def request_keyframe(specter, track, opts \\ []) do
    case opts do
      [] ->
        Native.track_remote_request_keyframe(Specter.native(specter), track, false)

      [fir: fir] when is_boolean(fir) ->
        Native.track_remote_request_keyframe(Specter.native(specter), track, fir)

      _ ->
        {:error, {:invalid_option, :fir}}
    end
  end

  @doc """
  Forwards the remote track's RTP packets, inside the NIF, to a `Specter.TrackLocalStaticRTP`
  of the same codec: every connection that local track is on receives them, each with its
  own SSRC and payload type. A remote track can feed any number of local tracks (one per
  subscriber, or one shared by many connections). A subscriber whose send queue is full
  loses the packet; no one else waits. Keyframe requests from the subscribers come back to
  the publisher as PLIs (merged, at most one per 250 ms), and one is sent when forwarding
  starts.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, local} = Specter.TrackLocalStaticRTP.new(specter, %Specter.RtpCodecCapability{mime_type: "video/VP8"}, "v", "s")
      iex> Specter.TrackRemote.forward(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", local)
      {:error, :not_found}
  """
  @spec forward(Specter.t(), t(), Specter.TrackLocalStaticRTP.t()) ::
          :ok | {:error, Specter.error()}
  def forward(specter, track, local),
    do: Native.track_remote_forward(Specter.native(specter), track, local)

  @doc """
  Stops forwarding the remote track to a local track.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, local} = Specter.TrackLocalStaticRTP.new(specter, %Specter.RtpCodecCapability{mime_type: "video/VP8"}, "v", "s")
      iex> Specter.TrackRemote.unforward(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", local)
      {:error, :not_found}
  """
  @spec unforward(Specter.t(), t(), Specter.TrackLocalStaticRTP.t()) ::
          :ok | {:error, Specter.error()}
  def unforward(specter, track, local),
    do: Native.track_remote_unforward(Specter.native(specter), track, local)

  @doc """
  Sends every RTP packet of the track to `pid` as `{:rtp, track, packet}` (as the owner's
  messages, but with no credit: every packet, for as long as the relay stands), and
  `{:track_ended, track}` when the track ends. For processes that move packets on, such as
  `Specter.Room`'s relay of a track to another node; `pid` must keep up, its mailbox is the
  only buffer. A process that has exited is dropped at the next packet. Adding the same pid
  twice relays once.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.relay(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", self())
      {:error, :not_found}
      iex> Specter.TrackRemote.relay(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", :me)
      {:error, {:invalid_argument, :pid}}
  """
  @spec relay(Specter.t(), t(), pid()) :: :ok | {:error, Specter.error()}
  def relay(specter, track, pid) when is_pid(pid) and node(pid) == node(),
    do: Native.track_remote_relay(Specter.native(specter), track, pid)

  def relay(_specter, _track, _pid), do: {:error, {:invalid_argument, :pid}}

  @doc """
  Stops relaying the track's packets to `pid`.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackRemote.unrelay(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", self())
      {:error, :not_found}
  """
  @spec unrelay(Specter.t(), t(), pid()) :: :ok | {:error, Specter.error()}
  def unrelay(specter, track, pid) when is_pid(pid),
    do: Native.track_remote_unrelay(Specter.native(specter), track, pid)

  def unrelay(_specter, _track, _pid), do: {:error, {:invalid_argument, :pid}}
end
