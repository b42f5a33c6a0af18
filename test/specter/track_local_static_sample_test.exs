defmodule Specter.TrackLocalStaticSampleTest do
  use ExUnit.Case, async: true
  doctest Specter.TrackLocalStaticSample

  import Specter.TestSupport

  alias Specter.{PeerConnection, RTP, TrackLocalStaticSample, TrackRemote}

  @opus %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  # Writes an Opus "sample" <<0xFC, n::32>> every 20 ms until told to stop; replies with
  # the last n written.
  defp start_writer(specter, track, duration \\ {20, :millisecond}) do
    parent = self()

    spawn_link(fn ->
      writer_loop(specter, track, duration, 0, parent)
    end)
  end

  defp writer_loop(specter, track, duration, n, parent) do
    receive do
      {:stop, from} -> send(from, {:writer_stopped, n - 1})
    after
      20 ->
        :ok = TrackLocalStaticSample.write_sample(specter, track, <<0xFC, n::32>>, duration)
        writer_loop(specter, track, duration, n + 1, parent)
    end
  end

  defp stop_writer(writer) do
    send(writer, {:stop, self()})
    assert_receive {:writer_stopped, last}, 5_000
    last
  end

  defp collect_rtp(track, n, acc \\ []) do
    if length(acc) == n do
      Enum.reverse(acc)
    else
      assert_receive {:rtp, ^track, bin}, 5_000
      {:ok, packet} = RTP.decode(bin)
      collect_rtp(track, n, [packet | acc])
    end
  end

  test "samples reach the remote peer as RTP: one Opus sample per packet, in order, 960 ticks apart",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, track} = TrackLocalStaticSample.new(specter, @opus, "mic", "call")
    sender = add_track!(specter, a, track)
    connect_media!(specter, a, b)
    writer = start_writer(specter, track)

    assert_receive {:track, ^b, remote, info}, 5_000

    assert %{
             kind: :audio,
             codec: %{mime_type: "audio/opus", clock_rate: 48_000, channels: 2},
             stream_id: "call",
             track_id: "mic",
             rid: nil
           } = info

    assert info.ssrc > 0
    assert TrackRemote.exists?(specter, remote)

    :ok = TrackRemote.set_active(specter, remote, true)
    packets = collect_rtp(remote, 30)
    stop_writer(writer)

    assert Enum.all?(packets, &(&1.ssrc == info.ssrc))
    assert Enum.all?(packets, &(&1.payload_type == 111))
    counters = for %{payload: <<0xFC, n::32>>} <- packets, do: n
    assert length(counters) == 30, "every payload is one whole sample"
    assert counters == Enum.to_list(hd(counters)..(hd(counters) + 29))

    [first | _] = packets

    for {p, i} <- Enum.with_index(packets) do
      assert p.sequence_number == rem(first.sequence_number + i, 65_536)
      assert p.timestamp == rem(first.timestamp + i * 960, 4_294_967_296)
    end

    {:ok, stats} = TrackRemote.info(specter, remote)
    assert stats.peer_connection == b
    assert stats.packet_count >= 30

    :ok = PeerConnection.get_senders(specter, a)
    assert_receive {:senders, ^a, [%{id: ^sender, track: ^track}]}
  end

  test "RTP reaches the owner only while it grants credit, like :gen_tcp's active",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, track} = TrackLocalStaticSample.new(specter, @opus, "mic", "call")
    add_track!(specter, a, track)
    connect_media!(specter, a, b)
    writer = start_writer(specter, track)
    assert_receive {:track, ^b, remote, _info}, 5_000

    # Passive by default: packets flow (the counter grows) but none is delivered.
    assert eventually(fn ->
             match?({:ok, %{packet_count: n}} when n >= 10, TrackRemote.info(specter, remote))
           end)

    refute_received {:rtp, ^remote, _}

    # :once: exactly one, then passive again.
    :ok = TrackRemote.set_active(specter, remote, :once)
    assert_receive {:rtp, ^remote, _}, 5_000
    refute_receive {:rtp, ^remote, _}, 200

    # A count: that many, then {:track_passive, track}.
    :ok = TrackRemote.set_active(specter, remote, 5)
    for _ <- 1..5, do: assert_receive({:rtp, ^remote, _}, 5_000)
    assert_receive {:track_passive, ^remote}, 5_000
    refute_receive {:rtp, ^remote, _}, 200

    # Back to false stops a true flow.
    :ok = TrackRemote.set_active(specter, remote, true)
    assert_receive {:rtp, ^remote, _}, 5_000
    :ok = TrackRemote.set_active(specter, remote, false)
    flush_rtp(remote)
    refute_receive {:rtp, ^remote, _}, 200
    stop_writer(writer)
  end

  defp flush_rtp(remote) do
    receive do
      {:rtp, ^remote, _} -> flush_rtp(remote)
    after
      50 -> :ok
    end
  end

  test "one track on two connections: both receive the same samples, each with its own SSRC",
       %{specter: specter} do
    {:ok, track} = TrackLocalStaticSample.new(specter, @opus, "mic", "call")

    pairs =
      for _ <- 1..2 do
        a = new_pc!(specter)
        b = new_pc!(specter)
        add_track!(specter, a, track)
        connect_media!(specter, a, b)
        b
      end

    writer = start_writer(specter, track)

    remotes =
      for b <- pairs do
        assert_receive {:track, ^b, remote, info}, 5_000
        :ok = TrackRemote.set_active(specter, remote, 20)
        {remote, info.ssrc}
      end

    [{r1, ssrc1}, {r2, ssrc2}] = remotes
    assert ssrc1 != ssrc2
    p1 = collect_rtp(r1, 20)
    p2 = collect_rtp(r2, 20)
    stop_writer(writer)
    c1 = MapSet.new(for %{payload: <<0xFC, n::32>>} <- p1, do: n)
    c2 = MapSet.new(for %{payload: <<0xFC, n::32>>} <- p2, do: n)
    assert MapSet.size(MapSet.intersection(c1, c2)) >= 15
  end

  test "codecs without a packetizer are refused; writes are checked", %{specter: specter} do
    h265 = %Specter.RtpCodecCapability{mime_type: "video/H265"}

    assert {:ok, _} = Specter.TrackLocalStaticRTP.new(specter, h265, "v", "s")

    {:ok, track} = TrackLocalStaticSample.new(specter, @opus, "a", "s")

    assert {:error, {:invalid_argument, :duration}} =
             TrackLocalStaticSample.write_sample(specter, track, "x", -5)

    assert {:error, {:invalid_argument, :duration}} =
             TrackLocalStaticSample.write_sample(specter, track, "x", {1, :fortnight})

    assert {:error, {:invalid_argument, :data}} =
             TrackLocalStaticSample.write_sample(specter, track, :data, 20_000)

    assert {:error, :invalid_track} =
             TrackLocalStaticSample.write_sample(specter, "nope", "x", 20_000)

    {:ok, rtp_track} = Specter.TrackLocalStaticRTP.new(specter, @opus, "r", "s")

    assert {:error, :invalid_track} =
             TrackLocalStaticSample.write_sample(specter, rtp_track, "x", 20_000)
  end
end
