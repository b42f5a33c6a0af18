defmodule Specter.TrackLocalStaticRTP do
  @moduledoc """
  A local track fed with whole RTP packets: packets an application builds, or packets
  forwarded natively from a remote track (`Specter.TrackRemote.forward/3`).

  Like `Specter.TrackLocalStaticSample`, a track can be added to any number of connections.
  Each connection's sender rewrites the packet's SSRC and payload type to its own, and drops
  header extensions (their ids are negotiated per connection); sequence numbers, timestamps,
  the marker bit and the payload pass unchanged.
  """

  alias Specter.Native

  @typedoc "A local RTP track, named by a UUID."
  @type t() :: Specter.uuid()

  @doc """
  Creates an RTP track with a codec, a track id and a stream id.

      iex> {:ok, specter} = Specter.init()
      iex> vp8 = %Specter.RtpCodecCapability{mime_type: "video/VP8"}
      iex> {:ok, track} = Specter.TrackLocalStaticRTP.new(specter, vp8, "video", "stream")
      iex> Specter.TrackLocalStaticRTP.exists?(specter, track)
      true
  """
  @spec new(Specter.t(), Specter.RtpCodecCapability.t(), String.t(), String.t()) ::
          {:ok, t()} | {:error, Specter.error()}
  def new(specter, codec, track_id, stream_id) do
    with {:ok, codec} <- Specter.RtpCodecCapability.to_native(codec) do
      Native.track_local_rtp_new(Specter.native(specter), codec, track_id, stream_id)
    end
  end

  @doc """
  Queues one marshalled RTP packet for every connection the track is on. Returns at once;
  `{:error, :buffer_full}` if 512 writes are already waiting, `{:error,
  {:invalid_argument, :packet}}` for bytes that are not an RTP packet. Packets written
  before a connection has negotiated the track are dropped for that connection.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, track} = Specter.TrackLocalStaticRTP.new(specter, %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}, "a", "s")
      iex> packet = <<2::2, 0::1, 0::1, 0::4, 0::1, 111::7, 1::16, 960::32, 1234::32, "opus">>
      iex> Specter.TrackLocalStaticRTP.write_rtp(specter, track, packet)
      :ok
      iex> Specter.TrackLocalStaticRTP.write_rtp(specter, track, <<1, 2>>)
      {:error, {:invalid_argument, :packet}}
  """
  @spec write_rtp(Specter.t(), t(), binary()) :: :ok | {:error, Specter.error()}
  def write_rtp(specter, track, packet),
    do: Native.track_local_rtp_write_rtp(Specter.native(specter), track, packet)

  @doc """
  Whether a track exists.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackLocalStaticRTP.exists?(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3")
      false
  """
  @spec exists?(Specter.t(), t()) :: boolean()
  def exists?(specter, track), do: Native.track_local_exists(Specter.native(specter), track)

  @doc """
  Forgets the track. Its senders stay on their connections but send nothing until
  `Specter.PeerConnection.replace_track/4` gives them another track.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, track} = Specter.TrackLocalStaticRTP.new(specter, %Specter.RtpCodecCapability{mime_type: "video/VP8"}, "v", "s")
      iex> Specter.TrackLocalStaticRTP.close(specter, track)
      :ok
      iex> Specter.TrackLocalStaticRTP.close(specter, track)
      {:error, :invalid_track}
  """
  @spec close(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def close(specter, track), do: Native.track_local_close(Specter.native(specter), track)
end
