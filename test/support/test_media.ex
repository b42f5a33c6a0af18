defmodule Specter.TestMedia do
  @moduledoc false
  # Small media files for the tests, made with ffmpeg (scripts/test installs it), and
  # ffprobe's view of a file.

  @doc "Whether ffmpeg and ffprobe are installed."
  def available?,
    do: System.find_executable("ffmpeg") != nil and System.find_executable("ffprobe") != nil

  @doc """
  Writes a test file of `kind` into `dir` and returns its path: `:vp8`, `:vp9`, `:av1` (IVF),
  `:h264` (Annex-B), `:opus` (Ogg). Video is a 320x240 (160x120 for AV1) test pattern at
  30 fps with a keyframe every second; audio a 440 Hz tone.
  """
  def generate!(kind, dir, opts \\ []) do
    frames = Keyword.get(opts, :frames, 60)
    seconds = Keyword.get(opts, :seconds, 2)
    path = Path.join(dir, "#{kind}.#{ext(kind)}")
    pattern = ~w(-f lavfi -i testsrc=size=320x240:rate=30 -frames:v #{frames} -g 30)

    args =
      case kind do
        :vp8 ->
          pattern ++ ~w(-c:v libvpx -b:v 500k -f ivf)

        :vp9 ->
          pattern ++ ~w(-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 300k -f ivf)

        :av1 ->
          ~w(-f lavfi -i testsrc=size=160x120:rate=30 -frames:v #{frames} -g 30) ++
            ~w(-c:v libaom-av1 -cpu-used 8 -b:v 200k -f ivf)

        :h264 ->
          pattern ++
            ~w(-c:v libx264 -profile:v baseline -pix_fmt yuv420p -bsf:v h264_mp4toannexb -f h264)

        :opus ->
          ~w(-f lavfi -i sine=frequency=440:duration=#{seconds} -c:a libopus -b:a 48k -f ogg)
      end

    {out, status} =
      System.cmd("ffmpeg", ~w(-v error -y) ++ args ++ [path], stderr_to_stdout: true)

    if status != 0, do: raise("ffmpeg failed for #{kind}: #{out}")
    path
  end

  defp ext(kind) when kind in [:vp8, :vp9, :av1], do: "ivf"
  defp ext(:h264), do: "h264"
  defp ext(:opus), do: "ogg"

  @doc "`{codec_name, frames, width, height}` of a file's first stream, as ffprobe counts them."
  def probe(path) do
    {out, 0} =
      System.cmd(
        "ffprobe",
        ~w(-v error -count_frames -select_streams 0 -show_entries stream=codec_name,nb_read_frames,width,height -of default=noprint_wrappers=1) ++
          [path],
        stderr_to_stdout: true
      )

    fields =
      for line <- String.split(out, "\n", trim: true),
          [k, v] <- [String.split(line, "=", parts: 2)],
          into: %{},
          do: {k, v}

    int = fn k ->
      case Integer.parse(fields[k] || "") do
        {n, _} -> n
        :error -> nil
      end
    end

    {fields["codec_name"], int.("nb_read_frames"), int.("width"), int.("height")}
  end

  @doc "A file's duration in seconds, as ffprobe reads it from the container."
  def duration(path) do
    {out, 0} =
      System.cmd(
        "ffprobe",
        ~w(-v error -show_entries format=duration -of default=noprint_wrappers=1:nokey=1) ++
          [path],
        stderr_to_stdout: true
      )

    {seconds, _} = Float.parse(String.trim(out))
    seconds
  end

  @doc "Decoding errors ffmpeg reports for the whole file (\"\" when it decodes cleanly)."
  def decode_errors(path) do
    {out, _} =
      System.cmd("ffmpeg", ~w(-v error -i) ++ [path] ++ ~w(-f null -), stderr_to_stdout: true)

    out
  end
end
