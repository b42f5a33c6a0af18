defmodule Specter.TrackRemoteTest do
  use ExUnit.Case, async: true
  doctest Specter.TrackRemote

  import Specter.TestSupport

  alias Specter.{PeerConnection, RTP, TrackLocalStaticRTP, TrackRemote}

  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  defp packet(n, opts \\ []) do
    RTP.encode(%RTP{
      marker: true,
      payload_type: 96,
      sequence_number: Keyword.get(opts, :seq, n),
      timestamp: n * 3000,
      ssrc: 1,
      payload: <<0x10, n::32>>
    })
  end

  # A publisher connection sending an RTP track to a server connection; returns once the
  # server has the remote track. Packets are written by a linked process until stopped.
  defp publish!(specter) do
    pub = new_pc!(specter)
    srv = new_pc!(specter)
    {:ok, source} = TrackLocalStaticRTP.new(specter, @vp8, "cam", "pub")
    pub_sender = add_track!(specter, pub, source)
    connect_media!(specter, pub, srv)
    writer = start_writer(specter, source)
    assert_receive {:track, ^srv, remote, _info}, 5_000
    %{pub: pub, srv: srv, source: source, pub_sender: pub_sender, remote: remote, writer: writer}
  end

  defp start_writer(specter, track) do
    spawn_link(fn -> writer_loop(specter, track, 0) end)
  end

  defp writer_loop(specter, track, n) do
    receive do
      {:stop, from} -> send(from, :writer_stopped)
    after
      10 ->
        :ok = TrackLocalStaticRTP.write_rtp(specter, track, packet(n))
        writer_loop(specter, track, n + 1)
    end
  end

  defp stop_writer(writer) do
    send(writer, {:stop, self()})
    assert_receive :writer_stopped, 5_000
  end

  # A subscriber: a server connection with a local RTP track, connected to a client.
  defp subscribe!(specter) do
    out = new_pc!(specter)
    client = new_pc!(specter)
    {:ok, local} = TrackLocalStaticRTP.new(specter, @vp8, "fwd", "srv")
    sender = add_track!(specter, out, local)
    connect_media!(specter, out, client)
    %{out: out, client: client, local: local, sender: sender}
  end

  defp counters(remote, n, acc \\ []) do
    if length(acc) == n do
      Enum.reverse(acc)
    else
      assert_receive {:rtp, ^remote, bin}, 5_000
      {:ok, %RTP{payload: <<0x10, c::32>>}} = RTP.decode(bin)
      counters(remote, n, [c | acc])
    end
  end

  defp flush_rtp(remote) do
    receive do
      {:rtp, ^remote, _} -> flush_rtp(remote)
    after
      100 -> :ok
    end
  end

  defp await_rtcp(sender, type, timeout \\ 5_000) do
    receive do
      {:sender_rtcp, ^sender, packets} ->
        case Enum.find(packets, &(&1.type == type)) do
          nil -> await_rtcp(sender, type, timeout)
          found -> found
        end
    after
      timeout -> flunk("no #{type} for sender #{sender}")
    end
  end

  test "forwarding: one publisher to two subscribers inside the NIF, start and stop per subscriber",
       %{specter: specter} do
    p = publish!(specter)
    s1 = subscribe!(specter)
    s2 = subscribe!(specter)

    :ok = TrackRemote.forward(specter, p.remote, s1.local)
    :ok = TrackRemote.forward(specter, p.remote, s2.local)
    # Forwarding twice to the same track is one forward.
    :ok = TrackRemote.forward(specter, p.remote, s1.local)

    c1 = s1.client
    c2 = s2.client
    assert_receive {:track, ^c1, r1, i1}, 5_000
    assert_receive {:track, ^c2, r2, i2}, 5_000
    assert i1.codec.mime_type == "video/VP8" and i2.codec.mime_type == "video/VP8"
    assert i1.track_id == "fwd" and i1.stream_id == "srv"

    :ok = TrackRemote.set_active(specter, r1, true)
    :ok = TrackRemote.set_active(specter, r2, true)
    n1 = counters(r1, 20)
    n2 = counters(r2, 20)
    # Consecutive packets of the publisher's stream, nothing duplicated.
    assert n1 == Enum.to_list(hd(n1)..(hd(n1) + 19))
    assert n2 == Enum.to_list(hd(n2)..(hd(n2) + 19))

    {:ok, info} = TrackRemote.info(specter, p.remote)
    assert info.forwarded >= 40

    # The server's owner got nothing of the publisher's track: forwarding does not pass
    # through the BEAM. (The subscribers' own tracks are active and keep delivering.)
    publisher = p.remote
    refute_received {:rtp, ^publisher, _}

    :ok = TrackRemote.unforward(specter, p.remote, s2.local)
    flush_rtp(r2)
    refute_receive {:rtp, ^r2, _}, 300
    assert [_ | _] = counters(r1, 10)

    stop_writer(p.writer)
  end

  test "keyframe requests: forwarding asks for one, subscribers' PLIs reach the publisher, FIR on request",
       %{specter: specter} do
    p = publish!(specter)
    s1 = subscribe!(specter)
    :ok = TrackRemote.forward(specter, p.remote, s1.local)

    # Starting to forward sends the publisher a PLI for the new subscriber.
    pli = await_rtcp(p.pub_sender, :pli)
    assert pli.media_ssrc > 0

    c1 = s1.client
    assert_receive {:track, ^c1, r1, _}, 5_000
    # Past the 250 ms merge window, the subscriber's own PLI travels to the publisher.
    Process.sleep(300)
    :ok = TrackRemote.request_keyframe(specter, r1)
    assert %{type: :pli} = await_rtcp(s1.sender, :pli)
    assert %{type: :pli} = await_rtcp(p.pub_sender, :pli)

    :ok = TrackRemote.request_keyframe(specter, p.remote, fir: true)
    assert %{type: :fir, media_ssrc: ssrc} = await_rtcp(p.pub_sender, :fir)
    assert ssrc > 0

    stop_writer(p.writer)
  end

  test "RTCP both ways: receiver reports and NACKs to the sender, sender reports to the receiver",
       %{specter: specter} do
    pub = new_pc!(specter)
    srv = new_pc!(specter)
    {:ok, source} = TrackLocalStaticRTP.new(specter, @vp8, "cam", "pub")
    sender = add_track!(specter, pub, source)
    connect_media!(specter, pub, srv)

    # A stream with a gap of five sequence numbers: the receiver NACKs them.
    for n <- 0..99 do
      seq = if n < 50, do: n, else: n + 5
      :ok = TrackLocalStaticRTP.write_rtp(specter, source, packet(n, seq: seq))
      Process.sleep(5)
    end

    assert_receive {:track, ^srv, remote, _}, 5_000
    nack = await_rtcp(sender, :nack)
    assert nack.lost != [] and Enum.all?(nack.lost, &(&1 in 50..54))

    writer = start_writer(specter, source)
    report = await_rtcp(sender, :receiver_report)
    assert [%{ssrc: _, fraction_lost: _, total_lost: _, jitter: _} | _] = report.reports

    assert_receive {:track_rtcp, ^remote, packets}, 5_000
    assert Enum.any?(packets, &(&1.type == :sender_report and &1.packet_count > 0))
    stop_writer(writer)
  end

  test "a track ends when its connection closes; recorders and ids are released",
       %{specter: specter} do
    p = publish!(specter)
    path = Path.join(System.tmp_dir!(), "specter-#{System.unique_integer([:positive])}.ivf")
    on_exit(fn -> File.rm(path) end)
    {:ok, recorder} = Specter.MediaFile.record(specter, p.remote, path)
    stop_writer(p.writer)
    :ok = PeerConnection.close(specter, p.srv)
    assert_receive {:peer_connection_closed, srv} when srv == p.srv, 5_000
    assert_receive {:track_ended, remote} when remote == p.remote, 5_000
    assert_receive {:record_finished, ^recorder, %{path: ^path}}, 5_000
    refute TrackRemote.exists?(specter, p.remote)
    assert {:error, :closed} = TrackRemote.info(specter, p.remote)
    assert {:error, :not_found} = Specter.MediaFile.stop_record(specter, recorder)
  end

  test "forwarding checks its arguments", %{specter: specter} do
    p = publish!(specter)

    {:ok, opus} =
      TrackLocalStaticRTP.new(
        specter,
        %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2},
        "a",
        "s"
      )

    assert {:error, {:invalid_codec, _}} = TrackRemote.forward(specter, p.remote, opus)
    assert {:error, :invalid_track} = TrackRemote.forward(specter, p.remote, "nope")
    assert {:error, :not_found} = TrackRemote.forward(specter, "nope", opus)
    assert {:error, {:invalid_option, :active}} = TrackRemote.set_active(specter, p.remote, -1)

    assert {:error, {:invalid_option, :fir}} =
             TrackRemote.request_keyframe(specter, p.remote, fir: 1)

    {:ok, other} = Specter.init()
    refute TrackRemote.exists?(other, p.remote)
    stop_writer(p.writer)
  end
end
