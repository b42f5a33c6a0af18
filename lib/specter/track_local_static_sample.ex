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
      Specter.Native.track_new(Specter.native(specter), codec, track_id, stream_id)
    end
  end

  @doc """
  Whether a track exists.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.TrackLocalStaticSample.exists?(specter, "invalid_track")
      false
  """
  @spec exists?(Specter.t(), t()) :: boolean()
  def exists?(specter, track), do: Specter.Native.track_exists(Specter.native(specter), track)
end
