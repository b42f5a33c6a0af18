defmodule Specter.MediaFile do
  @moduledoc """
  Media files in and out of tracks.

    * `play/4` reads an IVF file (VP8, VP9, AV1), an Ogg Opus file or an H.264 Annex-B
      stream and writes its frames into a `Specter.TrackLocalStaticSample`, paced in real
      time by the frames' durations (IVF timestamps, Ogg granule positions, `fps:` for
      H.264), to every connection the track is on.
    * `record/4` writes a `Specter.TrackRemote` to a file as it arrives: IVF for VP8, VP9
      and AV1, Ogg for Opus, Annex-B for H.264. An IVF recording starts on a keyframe,
      keeps the packets' own timing (time base 1/90000 s, each frame's RTP timestamp
      relative to the first) and holds only whole frames: after a lost packet it skips to
      the next keyframe, which it asks the sender for (PLI), so every frame in the file
      decodes. Packets that arrive twice (retransmissions, RTX probes) are written once.

  Both answer the caller when they end: `{:play_finished, player, %{frames: n}}` and
  `{:record_finished, recorder, %{path: path, packet_count: n, bytes: n}}`, where IVF
  recordings add `frames` (written) and `frames_dropped` (incomplete, left out)
  (or `{:record_error, recorder, reason}`).
  """

  alias Specter.Native

  @typedoc "A running file player, named by a UUID."
  @type player_t() :: Specter.uuid()

  @typedoc "A running recorder, named by a UUID."
  @type recorder_t() :: Specter.uuid()

  @typedoc "Message sent to the caller when a player or recorder fails."
  @type error_msg_t() ::
          {:play_error, player_t(), Specter.error()}
          | {:record_error, recorder_t(), Specter.error()}

  @doc """
  Plays a file into a local sample track of the file's codec. Options: `repeat: true` loops
  it until `stop_play/2`; `fps:` is the frame rate of an H.264 file (default 30). The file
  is parsed before this returns (up to 512 MiB); a malformed file gets
  `{:error, {:invalid_codec, detail}}`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, track} = Specter.TrackLocalStaticSample.new(specter, %Specter.RtpCodecCapability{mime_type: "video/VP8"}, "v", "s")
      iex> Specter.MediaFile.play(specter, track, "/nonexistent.ivf")
      {:error, {:invalid_argument, :path}}
  """
  @spec play(Specter.t(), Specter.TrackLocalStaticSample.t(), Path.t(), keyword()) ::
          {:ok, player_t()} | {:error, Specter.error()}
  def play(specter, track, path, opts \\ []) do
    with {:ok, fps, repeat} <- play_opts(opts),
         {:ok, path} <- path(path) do
      Native.media_file_play(Specter.native(specter), track, path, fps, repeat)
    end
  end

  # A path is a string or a charlist (Path.t()); anything else is refused, not raised on.
  defp path(path) when is_binary(path), do: {:ok, path}

  defp path(path) when is_list(path) do
    case :unicode.characters_to_binary(path) do
      bin when is_binary(bin) -> {:ok, bin}
      _ -> {:error, {:invalid_argument, :path}}
    end
  rescue
    ArgumentError -> {:error, {:invalid_argument, :path}}
  end

  defp path(_), do: {:error, {:invalid_argument, :path}}

  defp play_opts(opts) when is_list(opts) do
    Enum.reduce_while(opts, {:ok, 30, false}, fn
      {:fps, fps}, {:ok, _, repeat} when is_integer(fps) and fps in 1..240 ->
        {:cont, {:ok, fps, repeat}}

      {:repeat, repeat}, {:ok, fps, _} when is_boolean(repeat) ->
        {:cont, {:ok, fps, repeat}}

      {key, _}, _ when key in [:fps, :repeat] ->
        {:halt, {:error, {:invalid_option, key}}}

      {key, _}, _ when is_atom(key) ->
        {:halt, {:error, {:invalid_option, key}}}

      _, _ ->
        {:halt, {:error, {:invalid_argument, :opts}}}
    end)
  end

  defp play_opts(_), do: {:error, {:invalid_argument, :opts}}

  @doc """
  Stops a player; the caller of `play/4` gets `{:play_finished, player, %{frames: n}}`.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.MediaFile.stop_play(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3")
      {:error, :not_found}
  """
  @spec stop_play(Specter.t(), player_t()) :: :ok | {:error, Specter.error()}
  def stop_play(specter, player), do: Native.media_file_stop_play(Specter.native(specter), player)

  @doc """
  Records a remote track to `path` until `stop_record/2`, or the track or its connection
  ends. The format follows the track's codec. The caller gets
  `{:record_finished, recorder, info}` when the file is closed.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.MediaFile.record(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3", "/tmp/x.ivf")
      {:error, :not_found}
  """
  @spec record(Specter.t(), Specter.TrackRemote.t(), Path.t(), keyword()) ::
          {:ok, recorder_t()} | {:error, Specter.error()}
  def record(specter, track, path, opts \\ [])

  def record(specter, track, path, []) do
    with {:ok, path} <- path(path),
         do: Native.media_file_record(Specter.native(specter), track, path)
  end

  def record(_specter, _track, _path, [{key, _} | _]) when is_atom(key),
    do: {:error, {:invalid_option, key}}

  def record(_specter, _track, _path, _opts), do: {:error, {:invalid_argument, :opts}}

  @doc """
  Stops a recording and closes its file; the caller of `record/4` gets
  `{:record_finished, recorder, info}`.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.MediaFile.stop_record(specter, "b6cd5e7a-6a43-4d2f-8c46-ef1b32b6e9a3")
      {:error, :not_found}
  """
  @spec stop_record(Specter.t(), recorder_t()) :: :ok | {:error, Specter.error()}
  def stop_record(specter, recorder),
    do: Native.media_file_stop_record(Specter.native(specter), recorder)
end
