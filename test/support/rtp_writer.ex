defmodule Specter.Test.RtpWriter do
  @moduledoc """
  Writes VP8-shaped RTP packets (a keyframe every 30) to a `Specter.TrackLocalStaticRTP`
  every `:interval` ms until a write fails (the track was closed) or it is stopped. Usable
  on any node (`Specter.Test.Cluster.Agent.start_child/3`).
  """

  alias Specter.{RTP, TrackLocalStaticRTP}

  @doc "Options: `:specter`, `:track`, `:interval` (10 ms), `:ssrc` (1)."
  @spec start_link(keyword()) :: {:ok, pid()}
  def start_link(opts) do
    specter = Keyword.fetch!(opts, :specter)
    track = Keyword.fetch!(opts, :track)
    interval = Keyword.get(opts, :interval, 10)
    ssrc = Keyword.get(opts, :ssrc, 1)
    {:ok, spawn_link(fn -> loop(specter, track, interval, ssrc, 1) end)}
  end

  @doc "The `n`th packet."
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

  defp loop(specter, track, interval, ssrc, n) do
    case TrackLocalStaticRTP.write_rtp(specter, track, packet(n, ssrc)) do
      :ok ->
        Process.sleep(interval)
        loop(specter, track, interval, ssrc, n + 1)

      _ ->
        :done
    end
  end
end
