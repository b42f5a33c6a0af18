defmodule Specter.MediaFileTest do
  use ExUnit.Case, async: true
  doctest Specter.MediaFile

  import Specter.TestSupport

  alias Specter.{MediaFile, TestMedia, TrackLocalStaticSample}

  @codecs %{
    vp8: %Specter.RtpCodecCapability{mime_type: "video/VP8"},
    vp9: %Specter.RtpCodecCapability{mime_type: "video/VP9", sdp_fmtp_line: "profile-id=0"},
    av1: %Specter.RtpCodecCapability{mime_type: "video/AV1", sdp_fmtp_line: "profile-id=0"},
    h264: %Specter.RtpCodecCapability{
      mime_type: "video/H264",
      sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    },
    opus: %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
  }

  setup_all do
    unless TestMedia.available?() do
      raise "ffmpeg/ffprobe are missing: run scripts/test (or scripts/setup ffmpeg)"
    end

    dir = Path.join(System.tmp_dir!(), "specter-media-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  # Plays `kind`'s test file from a to b and records b's track; returns what was played and
  # recorded, and how long playing took.
  defp play_and_record(specter, dir, kind, opts \\ []) do
    source = TestMedia.generate!(kind, dir, opts)
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, track} = TrackLocalStaticSample.new(specter, @codecs[kind], "t", "s")
    add_track!(specter, a, track)
    connect_media!(specter, a, b)

    started = System.monotonic_time(:millisecond)
    {:ok, player} = MediaFile.play(specter, track, source)
    assert_receive {:track, ^b, remote, info}, 5_000
    out = Path.join(dir, "#{kind}-out.#{Path.extname(source) |> String.trim_leading(".")}")
    {:ok, recorder} = MediaFile.record(specter, remote, out)
    assert_receive {:play_finished, ^player, %{frames: played}}, 15_000
    elapsed = System.monotonic_time(:millisecond) - started
    # Let the last packets arrive, then close the file.
    Process.sleep(300)
    :ok = MediaFile.stop_record(specter, recorder)

    assert_receive {:record_finished, ^recorder, %{path: ^out, packet_count: packets} = rec},
                   5_000

    assert packets > 0
    %{source: source, out: out, played: played, elapsed: elapsed, info: info, recorded: rec}
  end

  for {kind, name, w, h} <- [
        {:vp8, "vp8", 320, 240},
        {:vp9, "vp9", 320, 240},
        {:av1, "av1", 160, 120},
        {:h264, "h264", 320, 240}
      ] do
    test "#{kind}: a file plays in real time and the remote records every frame", %{
      specter: specter,
      dir: dir
    } do
      r = play_and_record(specter, dir, unquote(kind))
      assert r.played == 60
      assert r.info.kind == :video
      # 60 frames at 30 fps: two seconds, not less.
      assert r.elapsed >= 1_900 and r.elapsed < 6_000, "played in #{r.elapsed} ms"
      assert {unquote(name), frames, width, height} = TestMedia.probe(r.out)
      assert frames in 57..60, "recorded #{frames} of 60 frames"
      assert TestMedia.decode_errors(r.out) == ""

      if unquote(kind) != :h264 do
        assert {width, height} == {unquote(w), unquote(h)}
        # IVF: every frame written was whole, none dropped; the frames keep their timing
        # (2 s, less the first frame's 33 ms).
        assert %{frames: ^frames, frames_dropped: 0} = r.recorded
        duration = TestMedia.duration(r.out)
        assert_in_delta duration, 59 / 30, 0.12
      end
    end
  end

  test "opus: an Ogg file plays in real time and the remote records it", %{
    specter: specter,
    dir: dir
  } do
    r = play_and_record(specter, dir, :opus, seconds: 2)
    assert r.info.kind == :audio
    # ffmpeg's Ogg holds 20 ms packets: 100 for 2 s (+1 for the encoder's delay).
    assert r.played in 100..101
    assert r.elapsed >= 1_900 and r.elapsed < 6_000, "played in #{r.elapsed} ms"
    assert {"opus", frames, _, _} = TestMedia.probe(r.out)
    # The Ogg writer's pre-skip hides the first 80 ms (4 packets) from a decoder.
    assert frames in (r.played - 5)..(r.played - 3), "recorded #{frames} of #{r.played}"
    assert r.recorded.packet_count in (r.played - 1)..r.played
    refute Map.has_key?(r.recorded, :frames)
    assert TestMedia.decode_errors(r.out) == ""
  end

  test "VP8 recordings carry the stream's frame size", %{specter: specter, dir: dir} do
    r = play_and_record(specter, dir, :vp8, frames: 30)
    assert {"vp8", _, 320, 240} = TestMedia.probe(r.out)
  end

  test "stop_play ends a repeating player; the caller learns how many frames went out", %{
    specter: specter,
    dir: dir
  } do
    source = TestMedia.generate!(:opus, dir, seconds: 1)
    {:ok, track} = TrackLocalStaticSample.new(specter, @codecs.opus, "a", "s")
    {:ok, player} = MediaFile.play(specter, track, source, repeat: true)
    Process.sleep(1_500)
    :ok = MediaFile.stop_play(specter, player)
    assert_receive {:play_finished, ^player, %{frames: frames}}, 5_000
    # 1.5 s of 20 ms frames, looping past the 1 s file.
    assert frames in 60..90, "#{frames} frames"
    assert {:error, :not_found} = MediaFile.stop_play(specter, player)
  end

  test "a player stops when its caller exits, or when its track is closed", %{
    specter: specter,
    dir: dir
  } do
    source = TestMedia.generate!(:opus, dir, seconds: 1)
    {:ok, track} = TrackLocalStaticSample.new(specter, @codecs.opus, "a", "s")
    parent = self()

    caller =
      spawn(fn ->
        {:ok, player} = MediaFile.play(specter, track, source, repeat: true)
        send(parent, {:player, player})
        Process.sleep(:infinity)
      end)

    assert_receive {:player, player}, 5_000
    {:ok, again} = MediaFile.play(specter, track, source, repeat: true)
    Process.sleep(100)
    Process.exit(caller, :kill)
    # The caller's player is gone within a frame or two; this process's one plays on.
    assert eventually(fn -> players(specter) == 1 end, 2_000)
    assert {:error, :not_found} = MediaFile.stop_play(specter, player)

    # The track closes under a repeating player of this process: it finishes.
    :ok = TrackLocalStaticSample.close(specter, track)
    assert_receive {:play_finished, ^again, %{frames: _}}, 5_000
  end

  defp players(specter) do
    {:ok, %{players: n}} = Specter.instance_info(specter)
    n
  end

  test "files that do not fit the track, or are not media, are refused", %{
    specter: specter,
    dir: dir
  } do
    vp8 = TestMedia.generate!(:vp8, dir, frames: 5)
    {:ok, opus_track} = TrackLocalStaticSample.new(specter, @codecs.opus, "a", "s")

    assert {:error, {:invalid_codec, "the file is video/VP8, the track audio/opus"}} =
             MediaFile.play(specter, opus_track, vp8)

    junk = Path.join(dir, "junk.bin")
    File.write!(junk, :crypto.strong_rand_bytes(1000))
    assert {:error, {:invalid_codec, _}} = MediaFile.play(specter, opus_track, junk)

    truncated = Path.join(dir, "truncated.ivf")
    File.write!(truncated, binary_part(File.read!(vp8), 0, 40))
    {:ok, vp8_track} = TrackLocalStaticSample.new(specter, @codecs.vp8, "v", "s")
    assert {:error, {:invalid_codec, _}} = MediaFile.play(specter, vp8_track, truncated)

    assert {:error, :invalid_track} = MediaFile.play(specter, "nope", vp8)
    assert {:error, {:invalid_option, :fps}} = MediaFile.play(specter, vp8_track, vp8, fps: 0)
    assert {:error, {:invalid_option, :speed}} = MediaFile.play(specter, vp8_track, vp8, speed: 2)
    assert {:error, {:invalid_option, :path}} = MediaFile.record(specter, "x", "y", path: "z")
  end
end
