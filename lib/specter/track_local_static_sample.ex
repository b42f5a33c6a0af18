defmodule Specter.TrackLocalStaticSample do
  @moduledoc """
  A local track fed with encoded media samples (Opus, VP8, H264, ...), packetized into RTP
  by Specter. A track is added to connections with `Specter.PeerConnection.add_track/3`;
  each connection gets its own sender.
  """

  @typedoc "A local track, named by a UUID."
  @type t() :: Specter.uuid()

  @doc """
  Creates a track with a codec, a track id and a stream id.

      iex> {:ok, specter} = Specter.init()
      iex> codec = %Specter.RtpCodecCapability{mime_type: "video/VP8", clock_rate: 90_000}
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, codec, "video", "stream")
      iex> Specter.TrackLocalStaticSample.exists?(specter, track)
      true
      iex> Specter.TrackLocalStaticSample.new(specter, %Specter.RtpCodecCapability{mime_type: "text/plain"}, "t", "s")
      {:error, {:invalid_codec, "mime_type \\"text/plain\\" is neither audio nor video"}}
  """
  @spec new(Specter.t(), Specter.RtpCodecCapability.t(), String.t(), String.t()) ::
          {:ok, t()} | {:error, Specter.error()}
  def new(specter, codec, track_id, stream_id) do
    with {:ok, codec} <- Specter.RtpCodecCapability.to_native(codec) do
      Specter.Native.track_local_new(Specter.native(specter), codec, track_id, stream_id)
    end
  end

  @doc """
  Whether a track exists.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackLocalStaticSample.exists?(specter, "invalid_track")
      false
  """
  @spec exists?(Specter.t(), t()) :: boolean()
  def exists?(specter, track),
    do: Specter.Native.track_local_exists(Specter.native(specter), track)

  @doc """
  Queues one encoded sample (an Opus packet, a VP8/VP9/AV1 frame, an H.264 access unit in
  Annex-B) lasting `duration` for every connection the track is on. Specter packetizes it
  and advances the RTP timestamp by `duration`.

  `duration` is in microseconds, or `{amount, unit}` with a `t:System.time_unit/0`
  (`{20, :millisecond}`). Returns at once; `{:error, :buffer_full}` if 512 writes are already
  waiting. Samples written before a connection has negotiated the track are dropped for
  that connection.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, %Specter.RtpCodecCapability{mime_type: "audio"}, "a", "s")
      iex> Specter.TrackLocalStaticSample.write_sample(specter, track, <<0xFC, 0xFF, 0xFE>>, {20, :millisecond})
      :ok
      iex> Specter.TrackLocalStaticSample.write_sample(specter, track, <<0xFC>>, 0)
      {:error, {:invalid_argument, :duration}}
  """
  @spec write_sample(
          Specter.t(),
          t(),
          binary(),
          pos_integer() | {pos_integer(), System.time_unit()}
        ) :: :ok | {:error, Specter.error()}
  def write_sample(specter, track, data, duration) do
    with {:ok, us} <- duration_us(duration) do
      Specter.Native.track_local_write_sample(Specter.native(specter), track, data, us)
    end
  end

  defp duration_us(us) when is_integer(us), do: {:ok, us}

  defp duration_us({amount, unit}) when is_integer(amount) do
    {:ok, System.convert_time_unit(amount, unit, :microsecond)}
  rescue
    ArgumentError -> {:error, {:invalid_argument, :duration}}
  end

  defp duration_us(_), do: {:error, {:invalid_argument, :duration}}

  @doc """
  Forgets the track. Its senders stay on their connections but send nothing until
  `Specter.PeerConnection.replace_track/4` gives them another track.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, %Specter.RtpCodecCapability{mime_type: "audio"}, "a", "s")
      iex> Specter.TrackLocalStaticSample.close(specter, track)
      :ok
      iex> Specter.TrackLocalStaticSample.exists?(specter, track)
      false
  """
  @spec close(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def close(specter, track), do: Specter.Native.track_local_close(Specter.native(specter), track)
end
