defmodule Specter.Interop.ChromiumMediaTest do
  # Media between Specter and a real browser: Debian's headless Chromium (fake camera and
  # microphone), driven by Playwright (test/interop/js/driver.js) through `Specter.Browser`.
  #
  #   * Chromium sends VP8 + Opus from its camera and microphone; Specter records them
  #     (`Specter.MediaFile.record/4`, IVF and Ogg, checked with ffprobe/ffmpeg) and echoes
  #     them back, natively (`Specter.TrackRemote.forward/3`) or through the BEAM
  #     (`{:rtp, track, packet}` + `Specter.TrackLocalStaticRTP.write_rtp/3`); Chromium's
  #     getStats must show the echo decoded.
  #   * Specter plays files generated with ffmpeg (VP8 IVF, Opus Ogg, H.264 Annex-B) to
  #     Chromium (`Specter.MediaFile.play/4`); Chromium's getStats must show them decoded at
  #     the file's resolution, and its <video> element the file's last frame.
  #
  # Offers go both ways. Network rule: everything stays on 127.0.0.1 (see
  # chromium_data_channel_test.exs): of Chromium's candidates only those on 127.0.0.1 are
  # given to Specter.
  use ExUnit.Case, async: false

  @moduletag :browser
  @moduletag timeout: 120_000

  alias Specter.{
    Browser,
    TestMedia,
    MediaFile,
    PeerConnection,
    RtpCodecCapability,
    TrackLocalStaticRTP,
    TrackLocalStaticSample,
    TrackRemote
  }

  @wait 10_000

  @vp8 %RtpCodecCapability{mime_type: "video/VP8", clock_rate: 90_000}
  @opus %RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
  @h264 %RtpCodecCapability{
    mime_type: "video/H264",
    clock_rate: 90_000,
    sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
  }

  # Chromium's fake camera, as the driver configures it (--use-fake-device-for-media-stream=fps=30).
  @camera_fps 30
  # How long Chromium's camera and microphone are recorded and echoed.
  @record_ms 3_000

  # The files Specter plays: 3 s of 320x240 video at 30 fps, 3 s of Opus.
  @file_frames 90
  @file_fps 30
  @file_width 320
  @file_height 240
  @grid_cols 8
  @grid_rows 6

  setup_all do
    case Browser.check_setup() do
      :ok -> :ok
      {:error, why} -> raise "browser interop tests cannot run: #{why} (scripts/test installs it)"
    end

    for tool <- ["ffmpeg", "ffprobe"], System.find_executable(tool) == nil do
      raise "media interop tests need #{tool} (scripts/setup ffmpeg; scripts/test installs it)"
    end

    dir = Path.join(System.tmp_dir!(), "specter-media-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    testsrc = ~w(-f lavfi -i testsrc=size=#{@file_width}x#{@file_height}:rate=#{@file_fps}
                 -frames:v #{@file_frames})

    files = %{
      # A keyframe every second.
      vp8: ffmpeg!(dir, "testsrc.ivf", testsrc ++ ~w(-c:v libvpx -b:v 500k -g 30 -f ivf)),
      opus: ffmpeg!(dir, "sine.ogg", ~w(-f lavfi -i sine=frequency=440:duration=3
                                        -c:a libopus -b:a 48k)),
      # Tagged BT.601 like the VP8 file: Chromium converts untagged H.264 with BT.709.
      h264:
        ffmpeg!(
          dir,
          "testsrc.h264",
          testsrc ++
            ~w(-c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 30
               -colorspace smpte170m -color_primaries smpte170m -color_trc smpte170m
               -bsf:v h264_mp4toannexb -f h264)
        )
    }

    %{browser: start_supervised!(Browser), dir: dir, files: files}
  end

  setup %{browser: browser} do
    assert {:ok, page} = Browser.open_page(browser)
    assert %{"mediaKinds" => ["audio", "video"], "url" => "http://127.0.0.1:" <> _} = page

    on_exit(fn ->
      try do
        Browser.close_page(browser)
      catch
        :exit, _ -> :ok
      end
    end)

    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  ## Chromium's camera and microphone to Specter, and back

  test "Chromium offers its camera and microphone; Specter records them and forwards them back natively",
       %{specter: specter, browser: browser, dir: dir} do
    pc = new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    camera = add_user_media!(browser)

    offer = Browser.call!(browser, "createOffer", ["pc"])
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(offer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait

    # The echo tracks take the offered transceivers, which become sendrecv.
    echo = %{
      video: rtp_track!(specter, @vp8, "echo-video"),
      audio: rtp_track!(specter, @opus, "echo-audio")
    }

    for {_kind, track} <- echo, do: add_track!(specter, pc, track)

    :ok = PeerConnection.create_answer(specter, pc)
    assert_receive {:answer, ^pc, answer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, answer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    assert Browser.call!(browser, "setRemoteDescription", ["pc", decode!(answer)])
    relay_ice_until_connected!(specter, pc, browser)

    remote = await_remote_tracks!(pc, camera, :chromium)

    # Recording starts as each track is announced (the recorder keeps what came before,
    # so nothing is missed), and so does the echo.
    recordings =
      for {kind, %{track: track}} <- remote, into: %{} do
        path = Path.join(dir, "chromium-#{kind}.#{if kind == :video, do: "ivf", else: "ogg"}")
        assert {:ok, recorder} = MediaFile.record(specter, track, path)
        assert :ok = TrackRemote.forward(specter, track, echo[kind])
        {kind, %{recorder: recorder, path: path}}
      end

    assert_browser_tracks!()
    assert_directions!(browser, "sendrecv")

    # About @record_ms of recording, measured from the first packet.
    since = remote.video.since
    Process.sleep(max(since + @record_ms - now(), 0))
    sent_before = outbound!(browser)
    finished = stop_recordings!(specter, recordings)
    sent_after = outbound!(browser)
    recorded_ms = now() - since

    # The files decode without an error and hold what Chromium sent while they were
    # recorded: about 30 video frames and 50 Opus packets a second (ffprobe), every frame
    # and packet Chromium counts sent (give or take those in flight).
    video_frames = assert_valid_media!(finished.video.path)
    audio_frames = assert_valid_media!(finished.audio.path)
    assert_count!(video_frames, recorded_ms * @camera_fps / 1000, "video frames in the IVF file")
    assert_count!(audio_frames, recorded_ms / 20, "Opus frames in the Ogg file")

    ivf = read_ivf!(finished.video.path)
    assert %{fourcc: "VP80", frames: frames} = ivf
    assert length(frames) == video_frames
    assert %{frames: ^video_frames, frames_dropped: 0} = finished.video

    assert {ivf.width, ivf.height} ==
             {sent_before.video["frameWidth"], sent_before.video["frameHeight"]}

    # Each frame once, in order, on the 90 kHz clock of its packets: the file lasts as long
    # as the recording. (Chromium's bandwidth probes resend recent video packets over RTX;
    # the track passes each sequence number on once.)
    timestamps = Enum.map(frames, &elem(&1, 0))
    assert timestamps == Enum.sort(Enum.uniq(timestamps))
    assert ivf.timebase == {1, 90_000}

    assert_count!(
      TestMedia.duration(finished.video.path) * 1000,
      recorded_ms,
      "IVF duration (ms)"
    )

    assert_between!(video_frames, sent_before.video, sent_after.video, "framesSent")

    assert_between!(
      finished.audio.packet_count,
      sent_before.audio,
      sent_after.audio,
      "packetsSent"
    )

    assert finished.video.bytes > 0 and finished.audio.bytes > 0

    # The Ogg file's pre-skip is 3840 samples (RFC 7845's default when the encoder's delay is
    # unknown), so decoders drop its first 80 ms: 4 of Chromium's 20 ms frames.
    assert audio_frames in (finished.audio.packet_count - 5)..(finished.audio.packet_count - 3)

    # Chromium decodes the echo as it goes on.
    first = inbound!(browser)
    Process.sleep(1_000)
    second = inbound!(browser)
    assert_echo_decoded!(first, second, camera)

    for {_kind, %{track: track}} <- remote do
      assert {:ok, %{forwarded: forwarded, packet_count: received}} =
               TrackRemote.info(specter, track)

      assert forwarded > 0 and forwarded <= received
    end

    stayed_on_loopback!(specter, pc)
    page_healthy!(browser)

    report(
      "native echo",
      video_frames: video_frames,
      audio_packets: audio_frames,
      recorded_ms: recorded_ms,
      chromium_frames_sent: sent_before.video["framesSent"],
      chromium_audio_packets_sent: sent_before.audio["packetsSent"],
      echo_frames_decoded: {first.video["framesDecoded"], second.video["framesDecoded"]},
      echo_freezes: second.video["freezeCount"],
      echo_audio_packets: second.audio["packetsReceived"]
    )
  end

  test "Specter offers, Chromium answers with its camera and microphone; Specter echoes them through the BEAM",
       %{specter: specter, browser: browser} do
    pc = new_pc!(specter)

    echo = %{
      video: rtp_track!(specter, @vp8, "echo-video"),
      audio: rtp_track!(specter, @opus, "echo-audio")
    }

    senders = for {kind, track} <- echo, into: %{}, do: {add_track!(specter, pc, track), kind}

    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    :ok = PeerConnection.create_offer(specter, pc)
    assert_receive {:offer, ^pc, offer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    assert Browser.call!(browser, "setRemoteDescription", ["pc", decode!(offer)])
    # Chromium's camera and microphone go into the transceivers Specter offered.
    camera = add_user_media!(browser)
    answer = Browser.call!(browser, "createAnswer", ["pc"])
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(answer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait
    relay_ice_until_connected!(specter, pc, browser)

    remote = await_remote_tracks!(pc, camera, :specter)
    assert_browser_tracks!()
    assert_directions!(browser, "sendrecv")

    # Every packet comes to this process and goes back to Chromium; keyframe requests
    # (PLI/FIR) Chromium sends about the echo go to its camera's track.
    tracks = Map.new(remote, fn {kind, %{track: track}} -> {track, kind} end)
    for track <- Map.keys(tracks), do: assert(:ok = TrackRemote.set_active(specter, track, true))
    assert :ok = TrackRemote.request_keyframe(specter, remote.video.track)

    state = %{
      specter: specter,
      tracks: tracks,
      echo: echo,
      senders: senders,
      camera: remote.video.track,
      written: %{audio: 0, video: 0},
      keyframe_requests: 0
    }

    state = echo_for(state, @record_ms)
    first = inbound!(browser)
    state = echo_for(state, 1_000)
    second = inbound!(browser)
    assert :ok = TrackRemote.set_active(specter, remote.video.track, false)
    assert :ok = TrackRemote.set_active(specter, remote.audio.track, false)

    assert_echo_decoded!(first, second, camera)

    for {kind, %{track: track}} <- remote do
      assert {:ok, %{packet_count: received}} = TrackRemote.info(specter, track)
      assert state.written[kind] > 0 and state.written[kind] <= received
    end

    stayed_on_loopback!(specter, pc)
    page_healthy!(browser)

    report(
      "BEAM echo",
      packets_written: state.written,
      keyframe_requests_relayed: state.keyframe_requests,
      echo_frames_decoded: {first.video["framesDecoded"], second.video["framesDecoded"]},
      echo_freezes: second.video["freezeCount"],
      echo_audio_packets: second.audio["packetsReceived"]
    )
  end

  ## Specter's files to Chromium

  test "Specter offers VP8 and Opus files; Chromium decodes them",
       %{specter: specter, browser: browser, files: files} do
    pc = new_pc!(specter)
    video = sample_track!(specter, @vp8, "file-video")
    audio = sample_track!(specter, @opus, "file-audio")
    add_track!(specter, pc, video)
    add_track!(specter, pc, audio)

    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    specter_offers!(specter, pc, browser)
    tracks = assert_browser_tracks!()
    assert_directions!(browser, "recvonly")

    played = play!(specter, [{video, files.vp8, []}, {audio, files.opus, []}])
    assert played[video] == @file_frames
    assert played[audio] == probe_frames!(files.opus)

    inbound = await_settled!(browser, %{video: @file_frames, audio: played[audio]})
    assert_file_decoded!(inbound, "video/VP8", played[audio])
    assert_sink!(browser, tracks.video, files.vp8)

    stayed_on_loopback!(specter, pc)
    page_healthy!(browser)

    report("VP8 + Opus files",
      played: Map.values(played),
      frames_decoded: inbound.video["framesDecoded"],
      key_frames_decoded: inbound.video["keyFramesDecoded"],
      size: {inbound.video["frameWidth"], inbound.video["frameHeight"]},
      audio_packets: inbound.audio["packetsReceived"],
      audio_samples: inbound.audio["totalSamplesReceived"]
    )
  end

  # Debian's Chromium 148 decodes H.264 (RTCRtpReceiver.getCapabilities lists video/H264):
  # Chromium offers to receive, Specter answers with an H.264 track and plays an Annex-B
  # file into it.
  test "Chromium offers to receive; Specter answers with an H.264 file and Chromium decodes it",
       %{specter: specter, browser: browser, files: files} do
    assert "video/H264" in Browser.call!(browser, "codecCapabilities", ["video"])["receive"]

    pc = new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    assert %{"direction" => "recvonly"} =
             Browser.call!(browser, "addTransceiver", ["pc", "video", %{direction: "recvonly"}])

    offer = Browser.call!(browser, "createOffer", ["pc"])
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(offer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait
    video = sample_track!(specter, @h264, "file-h264")
    add_track!(specter, pc, video)
    :ok = PeerConnection.create_answer(specter, pc)
    assert_receive {:answer, ^pc, answer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, answer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    assert Browser.call!(browser, "setRemoteDescription", ["pc", decode!(answer)])
    relay_ice_until_connected!(specter, pc, browser)

    assert_receive {:browser, %{"type" => "track", "kind" => "video"} = track}, @wait
    assert [%{"currentDirection" => "recvonly"}] = Browser.call!(browser, "transceivers", ["pc"])

    played = play!(specter, [{video, files.h264, [fps: @file_fps]}])
    assert played[video] == @file_frames

    inbound = await_settled!(browser, %{video: @file_frames})
    assert_file_decoded!(inbound, "video/H264", nil)
    assert inbound.video["codec"]["sdpFmtpLine"] =~ "packetization-mode=1"
    assert_sink!(browser, track, files.h264)

    stayed_on_loopback!(specter, pc)
    page_healthy!(browser)

    report("H.264 file",
      played: played[video],
      frames_decoded: inbound.video["framesDecoded"],
      key_frames_decoded: inbound.video["keyFramesDecoded"],
      size: {inbound.video["frameWidth"], inbound.video["frameHeight"]},
      fmtp: inbound.video["codec"]["sdpFmtpLine"],
      decoder: inbound.video["decoderImplementation"]
    )
  end

  ## Helpers: Chromium's media

  defp add_user_media!(browser) do
    tracks = Browser.call!(browser, "addUserMedia", ["pc", %{audio: true, video: true}])
    by_kind = Map.new(tracks, &{String.to_existing_atom(&1["kind"]), &1})
    assert %{audio: _, video: %{"settings" => %{"frameRate" => fps}}} = by_kind
    assert round(fps) == @camera_fps
    by_kind
  end

  # `{:track, pc, track, info}` for Chromium's camera and microphone, with their codecs.
  defp await_remote_tracks!(pc, camera, offerer) do
    for _ <- 1..2, into: %{} do
      assert_receive {:track, ^pc, track, info}, @wait
      kind = info.kind
      assert kind in [:audio, :video]
      # Chromium's msid names the stream, and the sender's id as the track: that is the
      # camera's track id only when addTrack created the transceiver (Chromium offers).
      assert info.stream_id == camera[kind]["streamId"]
      if offerer == :chromium, do: assert(info.track_id == camera[kind]["id"])
      expected_mime = if kind == :video, do: "video/vp8", else: "audio/opus"
      assert String.downcase(info.codec.mime_type) == expected_mime
      {kind, %{track: track, info: info, since: now()}}
    end
  end

  # Chromium's `ontrack` for Specter's audio and video tracks (each plays in an element).
  defp assert_browser_tracks! do
    for _ <- 1..2, into: %{} do
      assert_receive {:browser, %{"type" => "track", "pc" => "pc", "kind" => kind} = track},
                     @wait

      assert track["streams"] == ["specter"]
      {String.to_existing_atom(kind), track}
    end
  end

  defp assert_directions!(browser, direction) do
    transceivers = Browser.call!(browser, "transceivers", ["pc"])
    assert length(transceivers) == 2

    for t <- transceivers do
      assert t["currentDirection"] == direction, inspect(transceivers)
    end
  end

  # Chromium decoded the echo of its own camera and microphone: video frames at 30 fps
  # without freezes, audio packets, both still flowing between the two snapshots taken a
  # second apart.
  defp assert_echo_decoded!(first, second, camera) do
    assert %{"codec" => %{"mimeType" => "video/VP8"}} = second.video
    assert %{"codec" => %{"mimeType" => "audio/opus"}} = second.audio

    assert first.video["framesDecoded"] > 30, inspect(first.video)
    assert second.video["framesDecoded"] - first.video["framesDecoded"] >= div(@camera_fps, 2)
    assert second.video["keyFramesDecoded"] >= 1
    assert second.video["freezeCount"] <= 1, inspect(second.video)
    # Chromium's encoder may scale the camera down under CPU load, never up.
    width = second.video["frameWidth"]
    height = second.video["frameHeight"]
    assert width * 3 == height * 4 and width <= camera.video["settings"]["width"]

    assert first.audio["packetsReceived"] > 0
    assert second.audio["packetsReceived"] - first.audio["packetsReceived"] >= 25
    assert second.audio["totalSamplesReceived"] > first.audio["totalSamplesReceived"]
  end

  # Echo through the BEAM for `ms`: each `{:rtp, track, packet}` is written to the echo
  # track of its kind; a keyframe request about the video echo goes to the camera's track.
  defp echo_for(state, ms), do: echo_until(state, now() + ms)

  defp echo_until(state, deadline) do
    receive do
      {:rtp, track, packet} when is_map_key(state.tracks, track) ->
        kind = state.tracks[track]
        assert :ok = TrackLocalStaticRTP.write_rtp(state.specter, state.echo[kind], packet)
        echo_until(update_in(state.written[kind], &(&1 + 1)), deadline)

      {:sender_rtcp, sender, rtcp} when is_map_key(state.senders, sender) ->
        if state.senders[sender] == :video and Enum.any?(rtcp, &(&1.type in [:pli, :fir])) do
          assert :ok = TrackRemote.request_keyframe(state.specter, state.camera)
          echo_until(%{state | keyframe_requests: state.keyframe_requests + 1}, deadline)
        else
          echo_until(state, deadline)
        end
    after
      max(deadline - now(), 0) -> state
    end
  end

  # Chromium's inbound stats once a file's frames have all been decoded, or once they stop
  # changing.
  defp await_settled!(browser, expected) do
    await_settled!(browser, expected, now() + @wait, nil, now())
  end

  defp await_settled!(browser, expected, deadline, last, last_change) do
    stats = inbound!(browser)
    counts = {stats[:video]["framesDecoded"], stats[:audio]["packetsReceived"]}

    done? =
      Enum.all?(expected, fn
        {:video, n} -> (stats[:video]["framesDecoded"] || 0) >= n
        {:audio, n} -> (stats[:audio]["packetsReceived"] || 0) >= n
      end)

    last_change = if counts != last, do: now(), else: last_change

    cond do
      done? or now() - last_change > 1_000 or now() > deadline ->
        stats

      true ->
        Process.sleep(100)
        await_settled!(browser, expected, deadline, counts, last_change)
    end
  end

  # A file Specter played was decoded by Chromium at the file's size: all its frames, give
  # or take 3 (on loopback none is lost: 90 of 90 in every run so far, also under load).
  defp assert_file_decoded!(inbound, mime, audio_packets) do
    assert %{video: video} = inbound, "Chromium received no video: #{inspect(inbound)}"
    assert video["codec"]["mimeType"] == mime
    assert video["framesDecoded"] in (@file_frames - 3)..@file_frames, inspect(video)
    assert video["keyFramesDecoded"] >= 1
    assert {video["frameWidth"], video["frameHeight"]} == {@file_width, @file_height}

    if audio_packets do
      assert %{audio: audio} = inbound, "Chromium received no audio: #{inspect(inbound)}"
      assert audio["codec"]["mimeType"] == "audio/opus"
      assert audio["packetsReceived"] >= audio_packets * 0.9, inspect(audio)
      assert audio["totalSamplesReceived"] > 0
    end
  end

  # The <video> element playing the track shows the file's size and its last frame: the
  # mean colour of each cell of an 8x6 grid matches ffmpeg's decoding of that frame.
  defp assert_sink!(browser, %{"id" => id}, path) do
    assert %{"videoWidth" => @file_width, "videoHeight" => @file_height} =
             Browser.call!(browser, "sink", [id])

    shown = Browser.call!(browser, "frameGrid", [id, @grid_cols, @grid_rows])
    expected = file_frame_grid!(path, @file_frames - 1)

    diffs =
      for {shown_cell, expected_cell} <- Enum.zip(shown, expected),
          {a, b} <- Enum.zip(shown_cell, expected_cell),
          do: abs(a - b)

    assert length(shown) == @grid_cols * @grid_rows

    assert Enum.max(diffs) <= 16,
           "Chromium shows #{inspect(shown)}, the file's last frame is #{inspect(expected)}"
  end

  # ffmpeg's decoding of frame `n` of a file, as the mean RGB of each grid cell.
  defp file_frame_grid!(path, n) do
    args =
      ["-nostdin", "-v", "error", "-i", path, "-vf", "select=eq(n\\,#{n})", "-frames:v", "1"] ++
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]

    assert {rgb, 0} = System.cmd("ffmpeg", args)
    assert byte_size(rgb) == @file_width * @file_height * 3
    cell_w = div(@file_width, @grid_cols)
    cell_h = div(@file_height, @grid_rows)

    for row <- 0..(@grid_rows - 1), col <- 0..(@grid_cols - 1) do
      pixels =
        for y <- (row * cell_h)..((row + 1) * cell_h - 1),
            x <- (col * cell_w)..((col + 1) * cell_w - 1) do
          offset = (y * @file_width + x) * 3
          <<_::binary-size(offset), r, g, b, _::binary>> = rgb
          {r, g, b}
        end

      n = length(pixels)

      {rs, gs, bs} =
        Enum.reduce(pixels, {0, 0, 0}, fn {r, g, b}, {a, c, d} -> {a + r, c + g, d + b} end)

      [round(rs / n), round(gs / n), round(bs / n)]
    end
  end

  defp inbound!(browser), do: by_kind(Browser.call!(browser, "inboundRtp", ["pc"]))
  defp outbound!(browser), do: by_kind(Browser.call!(browser, "outboundRtp", ["pc"]))

  defp by_kind(stats) do
    Map.new(stats, fn s -> {String.to_existing_atom(s["kind"]), s} end)
  end

  defp stop_recordings!(specter, recordings) do
    for {kind, %{recorder: recorder, path: path}} <- recordings, into: %{} do
      assert :ok = MediaFile.stop_record(specter, recorder)
      assert_receive {:record_finished, ^recorder, %{path: ^path} = info}, @wait
      {kind, info}
    end
  end

  # Every remote track played in its element, and the page neither threw nor crashed.
  defp page_healthy!(browser) do
    refute_received {:browser, %{"type" => "play_error"} = error}, inspect(error)

    for %{"type" => type} = event <- Browser.diagnostics(browser) do
      assert type not in ["page_error", "page_crash", "fatal"], inspect(event)
    end
  end

  ## Helpers: Specter's tracks

  defp rtp_track!(specter, codec, id) do
    assert {:ok, track} = TrackLocalStaticRTP.new(specter, codec, id, "specter")
    track
  end

  defp sample_track!(specter, codec, id) do
    assert {:ok, track} = TrackLocalStaticSample.new(specter, codec, id, "specter")
    track
  end

  # The sender.
  defp add_track!(specter, pc, track) do
    assert :ok = PeerConnection.add_track(specter, pc, track)
    assert_receive {:rtp_sender, ^pc, ^track, sender}, @wait
    sender
  end

  ## Helpers: files

  # Plays each `{track, path, opts}` at once and waits for every player to finish: the
  # frames played, by track.
  defp play!(specter, plays) do
    players =
      for {track, path, opts} <- plays, into: %{} do
        assert {:ok, player} = MediaFile.play(specter, track, path, opts)
        {player, track}
      end

    for _ <- players, into: %{} do
      assert_receive {:play_finished, player, %{frames: frames}}, @wait
      assert Map.has_key?(players, player)
      {players[player], frames}
    end
  end

  # A file ffmpeg decodes without an error: its frame count (ffprobe).
  defp assert_valid_media!(path) do
    {out, status} =
      System.cmd("ffmpeg", ["-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
        stderr_to_stdout: true
      )

    assert status == 0 and out == "", "ffmpeg could not decode #{path} cleanly: #{out}"
    probe_frames!(path)
  end

  # An IVF file's header fields and frames (`{pts, data}`).
  defp read_ivf!(path) do
    assert <<"DKIF", 0::little-16, 32::little-16, fourcc::binary-size(4), width::little-16,
             height::little-16, rate::little-32, scale::little-32, _length::little-32,
             _unused::little-32, frames::binary>> = File.read!(path)

    %{
      fourcc: fourcc,
      width: width,
      height: height,
      timebase: {scale, rate},
      frames: ivf_frames(frames, [])
    }
  end

  defp ivf_frames(<<>>, acc), do: Enum.reverse(acc)

  defp ivf_frames(
         <<size::little-32, pts::little-64, frame::binary-size(size), rest::binary>>,
         acc
       ),
       do: ivf_frames(rest, [{pts, frame} | acc])

  defp probe_frames!(path) do
    args = ~w(-v error -count_frames -show_entries stream=nb_read_frames -of csv=p=0)
    assert {out, 0} = System.cmd("ffprobe", args ++ [path], stderr_to_stdout: true)
    String.to_integer(String.trim(out))
  end

  # `count` is Chromium's counter `key` (framesSent, packetsSent) at some moment between the
  # two snapshots, give or take 3 in flight.
  defp assert_between!(count, before, later, key) do
    assert count in (before[key] - 3)..(later[key] + 1),
           "#{count} recorded, Chromium's #{key} was #{before[key]}, then #{later[key]}"
  end

  # Within 25% of what is expected.
  defp assert_count!(count, expected, what) do
    assert count >= expected * 0.75 and count <= expected * 1.25,
           "#{what}: #{count}, expected about #{round(expected)}"
  end

  defp report(what, numbers) do
    if System.get_env("SPECTER_MEDIA_REPORT"), do: IO.puts("#{what}: #{inspect(numbers)}")
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp ffmpeg!(dir, name, args) do
    path = Path.join(dir, name)

    {out, status} =
      System.cmd("ffmpeg", ["-v", "error", "-y"] ++ args ++ [path], stderr_to_stdout: true)

    assert status == 0, "ffmpeg failed: #{out}"
    path
  end

  ## Signalling

  defp new_pc!(specter) do
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    assert_receive {:peer_connection_ready, ^pc}, @wait
    pc
  end

  defp decode!(json) do
    assert {:ok, map} = Specter.JSON.decode(json)
    map
  end

  # Specter's offer, Chromium's answer, then trickle ICE until both are connected.
  defp specter_offers!(specter, pc, browser) do
    :ok = PeerConnection.create_offer(specter, pc)
    assert_receive {:offer, ^pc, offer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    answer = Browser.call!(browser, "answer", ["pc", decode!(offer)])
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(answer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait
    relay_ice_until_connected!(specter, pc, browser)
  end

  # Specter's stats: every candidate it knows is on 127.0.0.1 (peer-reflexive ones aside:
  # Chromium also checks from its other address towards Specter's 127.0.0.1 candidate,
  # which Specter's confinement never answers) and the selected pair's local end is too.
  defp stayed_on_loopback!(specter, pc) do
    :ok = PeerConnection.get_stats(specter, pc, format: :map)
    assert_receive {:stats, ^pc, stats}, @wait
    stats = Map.values(stats)

    candidates =
      for %{"type" => t} = c <- stats, t in ["local-candidate", "remote-candidate"], do: c

    for %{"candidateType" => type} = c <- candidates, type != "prflx" do
      assert c["address"] == "127.0.0.1", "not on loopback: #{inspect(c)}"
    end

    assert %{"selectedCandidatePairId" => pair_id} =
             Enum.find(stats, &(&1["type"] == "transport"))

    assert %{"localCandidateId" => local_id} = Enum.find(stats, &(&1["id"] == pair_id))
    assert %{"address" => "127.0.0.1"} = Enum.find(candidates, &(&1["id"] == local_id))
  end

  defp relay_ice_until_connected!(specter, pc, browser),
    do: Browser.relay_ice_until_connected!(specter, pc, browser, @wait)
end
