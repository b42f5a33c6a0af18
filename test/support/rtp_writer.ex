defmodule Specter.Test.RtpWriter do
  @moduledoc """
  Writes VP8-shaped RTP packets (a keyframe every 30), or Opus-shaped ones with
  `kind: :audio`, to a `Specter.TrackLocalStaticRTP` every `:interval` ms until a write
  fails (the track was closed) or it is stopped. Usable on any node
  (`Specter.Test.Cluster.Agent.start_child/3`).
  """

  alias Specter.{RTP, TrackLocalStaticRTP}

  @doc "Options: `:specter`, `:track`, `:kind` (`:video`), `:interval` (10 ms), `:ssrc` (1)."
  @spec start_link(keyword()) :: {:ok, pid()}
  def start_link(opts) do
    specter = Keyword.fetch!(opts, :specter)
    track = Keyword.fetch!(opts, :track)
    interval = Keyword.get(opts, :interval, 10)
    ssrc = Keyword.get(opts, :ssrc, 1)
    kind = Keyword.get(opts, :kind, :video)
    {:ok, spawn_link(fn -> loop(specter, track, interval, {kind, ssrc}, 1) end)}
  end

  @doc "The `n`th Opus-shaped packet."
  @spec audio_packet(pos_integer(), non_neg_integer()) :: binary()
  def audio_packet(n, ssrc \\ 2) do
    RTP.encode(%RTP{
      payload_type: 111,
      sequence_number: rem(n, 65_536),
      timestamp: n * 480,
      ssrc: ssrc,
      payload: <<0xFC, n::32>>
    })
  end

  @doc "The `n`th VP8-shaped packet."
  @spec packet(pos_integer(), non_neg_integer()) :: binary()
  def packet(n, ssrc \\ 1) do
    keyframe = if rem(n, 30) == 1, do: 0, else: 1

    RTP.encode(%RTP{
      marker: true,
      payload_type: 96,
      sequence_number: rem(n, 65_536),
      timestamp: n * 3000,
      ssrc: ssrc,
      payload: <<0x10, keyframe, 0x9D, 0x01, 0x2A, n::32>>
    })
  end

  defp loop(specter, track, interval, {kind, ssrc} = how, n) do
    packet = if kind == :audio, do: audio_packet(n, ssrc), else: packet(n, ssrc)

    case TrackLocalStaticRTP.write_rtp(specter, track, packet) do
      :ok ->
        Process.sleep(interval)
        loop(specter, track, interval, how, n + 1)

      _ ->
        :done
    end
  end
end
