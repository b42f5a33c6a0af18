defmodule Specter.Interop.MediaCases do
  @moduledoc false
  # Media between Specter and a real browser (fake camera and microphone), the same tests
  # for each browser: `use Specter.Interop.MediaCases, browser: :chromium | :firefox` in
  # test/interop/<browser>_media_test.exs (`h264: true` adds the H.264 test, for a browser
  # that decodes H.264).
  #
  #   * The browser sends VP8 + Opus from its camera and microphone; Specter records them
  #     (`Specter.MediaFile.record/4`, IVF and Ogg, checked with ffprobe/ffmpeg) and echoes
  #     them back, natively (`Specter.TrackRemote.forward/3`) or through the BEAM
  #     (`{:rtp, track, packet}` + `Specter.TrackLocalStaticRTP.write_rtp/3`); the
  #     browser's getStats must show the echo decoded.
  #   * Specter plays files generated with ffmpeg (VP8 IVF, Opus Ogg, H.264 Annex-B) to
  #     the browser (`Specter.MediaFile.play/4`); its getStats must show them decoded at the
  #     file's resolution, its <video> element present the frames
  #     (requestVideoFrameCallback) and show the file's last frame.
  #
  # Offers go both ways, with ICE trickled or carried in the descriptions (non-trickle).
  # Network rule: everything stays on 127.0.0.1 (see data_channel_cases.ex): of the
  # browser's candidates only those on 127.0.0.1 are given to Specter.

  import ExUnit.Assertions

  alias Specter.{
    Browser,
    Interop,
    MediaFile,
    PeerConnection,
    RtpCodecCapability,
    TestMedia,
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

  # How long the browser's camera and microphone are recorded and echoed.
  @record_ms 3_000

  # Both browsers' fake cameras run at 30 fps (Chromium: --use-fake-device-for-media-stream=fps=30).
  @camera_fps 30

  # The files Specter plays: 3 s of 320x240 video at 30 fps, 3 s of Opus.
  @file_frames 90
  @file_fps 30
  @file_width 320
  @file_height 240
  @grid_cols 8
  @grid_rows 6

  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :browser)
    h264? = Keyword.get(opts, :h264, false)

    quote location: :keep do
      use Specter.Interop, browser: unquote(kind)

      alias Specter.Interop.MediaCases, as: Cases

      setup_all do
        {dir, files} = Cases.media_files!()

        %{
          kind: unquote(kind),
          browser: Interop.start_browser!(unquote(kind)),
          dir: dir,
          files: files
        }
      end

      setup %{browser: browser} do
        Interop.open_page!(browser)
        {:ok, specter} = Specter.init()
        %{specter: specter}
      end

      @tag ice: :trickle
      test "#{@name} offers its camera and microphone; Specter records them and forwards them back natively",
           ctx do
        Cases.native_echo(ctx)
      end

      @tag ice: :non_trickle
      test "Specter offers, #{@name} answers with its camera and microphone; Specter echoes them through the BEAM (non-trickle)",
           ctx do
        Cases.beam_echo(ctx)
      end

      @tag ice: :trickle
      test "Specter offers VP8 and Opus files; #{@name} decodes them", ctx do
        Cases.files(ctx)
      end

      if unquote(h264?) do
        @tag ice: :non_trickle
        test "#{@name} offers to receive; Specter answers with an H.264 file and #{@name} decodes it (non-trickle)",
             ctx do
          Cases.h264(ctx)
        end
      end
    end
  end

  ## The browser's camera and microphone to Specter, and back

  # The browser offers; Specter answers with two `TrackLocalStaticRTP` echo tracks in the
  # offered transceivers, records each remote track and forwards it to its echo track.
  def native_echo(%{specter: specter, browser: browser, dir: dir} = ctx) do
    pc = Interop.new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    camera = add_user_media!(browser)

    offer = Browser.call!(browser, "createOffer", ["pc"])
    Interop.specter_remote!(specter, pc, offer)

    # The echo tracks take the offered transceivers, which become sendrecv.
    echo = %{
      video: rtp_track!(specter, @vp8, "echo-video"),
      audio: rtp_track!(specter, @opus, "echo-audio")
    }

    for {_kind, track} <- echo, do: add_track!(specter, pc, track)

    answer = Interop.specter_local!(specter, pc, :answer, ctx.ice)
    assert Browser.call!(browser, "setRemoteDescription", ["pc", answer])
    Interop.connect!(specter, pc, browser, ctx.ice)

    remote = await_remote_tracks!(pc, camera, offer)

    # Recording starts as each track is announced (the recorder keeps what came before,
    # so nothing is missed), and so does the echo.
    recordings =
      for {kind, %{track: track}} <- remote, into: %{} do
        ext = if kind == :video, do: "ivf", else: "ogg"
        path = Path.join(dir, "#{ctx.kind}-#{kind}.#{ext}")
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

    # The files decode without an error and hold what the browser sent while they were
    # recorded: every frame and packet the browser counts sent (give or take those in
    # flight; checked below), about 50 Opus packets a second (ffprobe) and up to 30 video
    # frames a second. The camera's rate is the browser's: its encoder drops frames when
    # the machine is busy (67 of 90 seen with two browsers and a build sharing 2 cores), so
    # only half the nominal rate is required of it.
    video_frames = assert_valid_media!(finished.video.path)
    audio_frames = assert_valid_media!(finished.audio.path)

    nominal = recorded_ms * @camera_fps / 1000

    assert video_frames >= nominal * 0.5 and video_frames <= nominal * 1.25,
           "video frames in the IVF file: #{video_frames}, expected up to about #{round(nominal)}"

    assert_count!(audio_frames, recorded_ms / 20, "Opus frames in the Ogg file")

    ivf = read_ivf!(finished.video.path)
    assert %{fourcc: "VP80", frames: frames} = ivf
    assert length(frames) == video_frames
    assert %{frames: ^video_frames, frames_dropped: 0} = finished.video
    assert_ivf_size!(ivf, sent_before.video, camera)

    # Each frame once, in order, on the 90 kHz clock of its packets: the file lasts as
    # long as the recording. (Chromium's bandwidth probes resend recent video packets
    # over RTX; the track passes each sequence number on once.)
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

    # The Ogg file's pre-skip is 3840 samples (RFC 7845's default when the encoder's
    # delay is unknown), so decoders drop its first 80 ms: 4 of the browser's 20 ms
    # frames.
    assert audio_frames in (finished.audio.packet_count - 5)..(finished.audio.packet_count -
                                                                 3)

    # The browser decodes the echo as it goes on.
    first = inbound!(browser)
    Process.sleep(1_000)
    second = inbound!(browser)
    assert_echo_decoded!(first, second, camera)

    for {_kind, %{track: track}} <- remote do
      assert {:ok, %{forwarded: forwarded, packet_count: received}} =
               TrackRemote.info(specter, track)

      assert forwarded > 0 and forwarded <= received
    end

    Interop.stayed_on_loopback!(specter, pc, ctx.ice)
    page_healthy!(browser)

    report(
      "#{Browser.name(ctx.kind)} native echo",
      video_frames: video_frames,
      audio_packets: audio_frames,
      recorded_ms: recorded_ms,
      ivf_size: {ivf.width, ivf.height},
      frames_sent: sent_before.video["framesSent"],
      audio_packets_sent: sent_before.audio["packetsSent"],
      echo_frames_decoded: {first.video["framesDecoded"], second.video["framesDecoded"]},
      echo_freezes: second.video["freezeCount"],
      echo_audio_packets: second.audio["packetsReceived"]
    )
  end

  # Specter offers two echo tracks; the browser answers with its camera and microphone in
  # them; every packet comes through this process (`{:rtp, track, packet}`) and goes back
  # with `write_rtp/3`.
  def beam_echo(%{specter: specter, browser: browser} = ctx) do
    pc = Interop.new_pc!(specter)

    echo = %{
      video: rtp_track!(specter, @vp8, "echo-video"),
      audio: rtp_track!(specter, @opus, "echo-audio")
    }

    senders = for {kind, track} <- echo, into: %{}, do: {add_track!(specter, pc, track), kind}

    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    offer = Interop.specter_local!(specter, pc, :offer, ctx.ice)
    assert Browser.call!(browser, "setRemoteDescription", ["pc", offer])
    # The browser's camera and microphone go into the transceivers Specter offered.
    camera = add_user_media!(browser)
    answer = Browser.call!(browser, "createAnswer", ["pc"])
    Interop.specter_remote!(specter, pc, Interop.browser_description!(browser, answer, ctx.ice))
    Interop.connect!(specter, pc, browser, ctx.ice)

    remote = await_remote_tracks!(pc, camera, nil)
    assert_browser_tracks!()
    assert_directions!(browser, "sendrecv")

    # Every packet comes to this process and goes back to the browser; keyframe
    # requests (PLI/FIR) the browser sends about the echo go to its camera's track.
    tracks = Map.new(remote, fn {kind, %{track: track}} -> {track, kind} end)

    for track <- Map.keys(tracks),
        do: assert(:ok = TrackRemote.set_active(specter, track, true))

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

    Interop.stayed_on_loopback!(specter, pc, ctx.ice)
    page_healthy!(browser)

    report(
      "#{Browser.name(ctx.kind)} BEAM echo",
      packets_written: state.written,
      keyframe_requests_relayed: state.keyframe_requests,
      echo_frames_decoded: {first.video["framesDecoded"], second.video["framesDecoded"]},
      echo_freezes: second.video["freezeCount"],
      echo_audio_packets: second.audio["packetsReceived"]
    )
  end

  ## Specter's files to the browser

  def files(%{specter: specter, browser: browser, files: files} = ctx) do
    pc = Interop.new_pc!(specter)
    video = sample_track!(specter, @vp8, "file-video")
    audio = sample_track!(specter, @opus, "file-audio")
    add_track!(specter, pc, video)
    add_track!(specter, pc, audio)

    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    Interop.specter_offers!(specter, pc, browser, ctx.ice)
    tracks = assert_browser_tracks!()
    assert_directions!(browser, "recvonly")

    played = play!(specter, [{video, files.vp8, []}, {audio, files.opus, []}])
    assert played[video] == @file_frames
    assert played[audio] == probe_frames!(files.opus)

    inbound = await_settled!(browser, %{video: @file_frames, audio: played[audio]})
    assert_file_decoded!(inbound, "video/VP8", played[audio])
    sink = assert_sink!(browser, tracks.video, files.vp8)

    Interop.stayed_on_loopback!(specter, pc, ctx.ice)
    page_healthy!(browser)

    report("#{Browser.name(ctx.kind)} VP8 + Opus files",
      played: Map.values(played),
      frames_decoded: inbound.video["framesDecoded"],
      frames_presented: sink["framesPresented"],
      key_frames_decoded: inbound.video["keyFramesDecoded"],
      size: {inbound.video["frameWidth"], inbound.video["frameHeight"]},
      audio_packets: inbound.audio["packetsReceived"],
      audio_samples: inbound.audio["totalSamplesReceived"]
    )
  end

  # The browser offers to receive, Specter answers with an H.264 track and plays an Annex-B
  # file into it (Debian's Chromium 148 decodes H.264: RTCRtpReceiver.getCapabilities lists
  # video/H264).
  def h264(%{specter: specter, browser: browser, files: files} = ctx) do
    assert "video/H264" in Browser.call!(browser, "codecCapabilities", ["video"])["receive"]

    pc = Interop.new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    assert %{"direction" => "recvonly"} =
             Browser.call!(browser, "addTransceiver", [
               "pc",
               "video",
               %{direction: "recvonly"}
             ])

    offer = Browser.call!(browser, "createOffer", ["pc"])
    Interop.specter_remote!(specter, pc, Interop.browser_description!(browser, offer, ctx.ice))
    video = sample_track!(specter, @h264, "file-h264")
    add_track!(specter, pc, video)
    answer = Interop.specter_local!(specter, pc, :answer, ctx.ice)
    assert Browser.call!(browser, "setRemoteDescription", ["pc", answer])
    Interop.connect!(specter, pc, browser, ctx.ice)

    assert_receive {:browser, %{"type" => "track", "kind" => "video"} = track}, 10_000

    assert [%{"currentDirection" => "recvonly"}] = Browser.call!(browser, "transceivers", ["pc"])

    played = play!(specter, [{video, files.h264, [fps: @file_fps]}])
    assert played[video] == @file_frames

    inbound = await_settled!(browser, %{video: @file_frames})
    assert_file_decoded!(inbound, "video/H264", nil)
    assert inbound.video["codec"]["sdpFmtpLine"] =~ "packetization-mode=1"
    sink = assert_sink!(browser, track, files.h264)

    Interop.stayed_on_loopback!(specter, pc, ctx.ice)
    page_healthy!(browser)

    report("#{Browser.name(ctx.kind)} H.264 file",
      played: played[video],
      frames_decoded: inbound.video["framesDecoded"],
      frames_presented: sink["framesPresented"],
      key_frames_decoded: inbound.video["keyFramesDecoded"],
      size: {inbound.video["frameWidth"], inbound.video["frameHeight"]},
      fmtp: inbound.video["codec"]["sdpFmtpLine"],
      decoder: inbound.video["decoderImplementation"]
    )
  end

  ## Files

  # The files Specter plays, made by ffmpeg in a temporary directory removed when the
  # module's tests are done: `{dir, %{vp8: path, opus: path, h264: path}}`.
  def media_files! do
    for tool <- ["ffmpeg", "ffprobe"], System.find_executable(tool) == nil do
      raise "media interop tests need #{tool} (scripts/setup ffmpeg; scripts/test installs it)"
    end

    dir = Path.join(System.tmp_dir!(), "specter-media-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    unless System.get_env("SPECTER_KEEP_MEDIA"),
      do: ExUnit.Callbacks.on_exit(fn -> File.rm_rf!(dir) end)

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

    {dir, files}
  end

  ## The browser's media

  def add_user_media!(browser) do
    tracks = Browser.call!(browser, "addUserMedia", ["pc", %{audio: true, video: true}])
    by_kind = Map.new(tracks, &{String.to_existing_atom(&1["kind"]), &1})
    assert %{audio: _, video: %{"settings" => %{"frameRate" => fps}}} = by_kind
    assert round(fps) == @camera_fps
    by_kind
  end

  # `{:track, pc, track, info}` for the browser's camera and microphone, with their codecs.
  # The stream id is the camera's stream; the track id is what the offer's `a=msid` names
  # (when the browser offered: Chromium puts the track's id there, Firefox an id of its own).
  def await_remote_tracks!(pc, camera, browser_offer) do
    msids = if browser_offer, do: msid_track_ids(browser_offer["sdp"]), else: nil

    for _ <- 1..2, into: %{} do
      assert_receive {:track, ^pc, track, info}, @wait
      kind = info.kind
      assert kind in [:audio, :video]
      assert info.stream_id == camera[kind]["streamId"]
      if msids, do: assert(info.track_id == msids[kind])
      expected_mime = if kind == :video, do: "video/vp8", else: "audio/opus"
      assert String.downcase(info.codec.mime_type) == expected_mime
      {kind, %{track: track, info: info, since: now()}}
    end
  end

  # Each m-line's `a=msid:<stream> <track>` track id, by kind.
  defp msid_track_ids(sdp) do
    sdp
    |> String.split("\r\nm=")
    |> Enum.drop(1)
    |> Map.new(fn section ->
      [kind | _] = String.split(section, " ", parts: 2)
      [_, track_id] = Regex.run(~r/\r\na=msid:\S+ (\S+)/, section)
      {String.to_existing_atom(kind), track_id}
    end)
  end

  # The browser's `ontrack` for Specter's audio and video tracks (each plays in an element).
  def assert_browser_tracks! do
    for _ <- 1..2, into: %{} do
      assert_receive {:browser, %{"type" => "track", "pc" => "pc", "kind" => kind} = track},
                     @wait

      assert track["streams"] == ["specter"]
      {String.to_existing_atom(kind), track}
    end
  end

  def assert_directions!(browser, direction) do
    transceivers = Browser.call!(browser, "transceivers", ["pc"])
    assert length(transceivers) == 2

    for t <- transceivers do
      assert t["currentDirection"] == direction, inspect(transceivers)
    end
  end

  # The IVF header holds the size of the recording's first frame, a keyframe (a recording
  # starts on one); the last keyframe recorded has the size the browser's encoder reported
  # sending just before the recording stopped (VP8 changes size only on a keyframe:
  # Firefox's encoder starts at 320x240 and may step up while its bandwidth estimate ramps
  # up, Chromium's starts at the camera's 640x480 and may step down under CPU load). Every
  # size is 4:3 and at most the camera's.
  def assert_ivf_size!(%{frames: [{_, first} | _] = frames} = ivf, sent_video, camera) do
    assert {ivf.width, ivf.height} == vp8_keyframe_size(first)
    keyframe_sizes = for {_pts, f} <- frames, size = vp8_keyframe_size(f), do: size
    assert List.last(keyframe_sizes) == {sent_video["frameWidth"], sent_video["frameHeight"]}

    for {w, h} <- keyframe_sizes do
      assert w * 3 == h * 4 and w <= camera.video["settings"]["width"], inspect(keyframe_sizes)
    end
  end

  # A VP8 keyframe's size (RFC 6386 section 9.1), or nil for an interframe.
  # The 14-bit sizes are little-endian, under 2 bits of scaling.
  defp vp8_keyframe_size(
         <<tag::little-24, 0x9D, 0x01, 0x2A, w::little-16, h::little-16, _::binary>>
       )
       when Bitwise.band(tag, 1) == 0,
       do: {Bitwise.band(w, 0x3FFF), Bitwise.band(h, 0x3FFF)}

  defp vp8_keyframe_size(_frame), do: nil

  # The browser decoded the echo of its own camera and microphone: video frames at 30 fps
  # without freezes, audio packets, both still flowing between the two snapshots taken a
  # second apart.
  def assert_echo_decoded!(first, second, camera) do
    assert %{"codec" => %{"mimeType" => "video/VP8"}} = second.video
    assert %{"codec" => %{"mimeType" => "audio/opus"}} = second.audio

    assert first.video["framesDecoded"] > 30, inspect(first.video)
    assert second.video["framesDecoded"] - first.video["framesDecoded"] >= div(@camera_fps, 2)
    assert second.video["keyFramesDecoded"] >= 1
    assert second.video["freezeCount"] <= 1, inspect(second.video)
    # The browser's encoder may scale the camera down under CPU load, never up.
    width = second.video["frameWidth"]
    height = second.video["frameHeight"]
    assert width * 3 == height * 4 and width <= camera.video["settings"]["width"]

    assert first.audio["packetsReceived"] > 0
    assert second.audio["packetsReceived"] - first.audio["packetsReceived"] >= 25
    assert second.audio["totalSamplesReceived"] > first.audio["totalSamplesReceived"]
  end

  # Echo through the BEAM for `ms`: each `{:rtp, track, packet}` is written to the echo
  # track of its kind; a keyframe request about the video echo goes to the camera's track.
  def echo_for(state, ms), do: echo_until(state, now() + ms)

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

  # The browser's inbound stats once a file's frames have all been decoded, or once they
  # stop changing.
  def await_settled!(browser, expected) do
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

  # A file Specter played was decoded by the browser at the file's size: all its frames,
  # give or take 3 (on loopback none is lost: 90 of 90 in every run so far, also under load).
  def assert_file_decoded!(inbound, mime, audio_packets) do
    assert %{video: video} = inbound, "the browser received no video: #{inspect(inbound)}"
    assert video["codec"]["mimeType"] == mime
    assert video["framesDecoded"] in (@file_frames - 3)..@file_frames, inspect(video)
    assert video["keyFramesDecoded"] >= 1
    assert {video["frameWidth"], video["frameHeight"]} == {@file_width, @file_height}

    if audio_packets do
      assert %{audio: audio} = inbound, "the browser received no audio: #{inspect(inbound)}"
      assert audio["codec"]["mimeType"] == "audio/opus"
      assert audio["packetsReceived"] >= audio_packets * 0.9, inspect(audio)
      assert audio["totalSamplesReceived"] > 0
    end
  end

  # The <video> element playing the track shows the file's size and its last frame (the
  # mean colour of each cell of an 8x6 grid matches ffmpeg's decoding of that frame), and
  # presented most of the file's frames (requestVideoFrameCallback). Returns the sink.
  def assert_sink!(browser, %{"id" => id}, path) do
    assert %{"videoWidth" => @file_width, "videoHeight" => @file_height} =
             sink = Browser.call!(browser, "sink", [id])

    assert is_integer(sink["framesPresented"]) and
             sink["framesPresented"] >= div(@file_frames, 2),
           inspect(sink)

    shown = Browser.call!(browser, "frameGrid", [id, @grid_cols, @grid_rows])
    expected = file_frame_grid!(path, @file_frames - 1)

    diffs =
      for {shown_cell, expected_cell} <- Enum.zip(shown, expected),
          {a, b} <- Enum.zip(shown_cell, expected_cell),
          do: abs(a - b)

    assert length(shown) == @grid_cols * @grid_rows

    assert Enum.max(diffs) <= 16,
           "the browser shows #{inspect(shown)}, the file's last frame is #{inspect(expected)}"

    sink
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

  def inbound!(browser), do: by_kind(Browser.call!(browser, "inboundRtp", ["pc"]))
  def outbound!(browser), do: by_kind(Browser.call!(browser, "outboundRtp", ["pc"]))

  defp by_kind(stats) do
    Map.new(stats, fn s -> {String.to_existing_atom(s["kind"]), s} end)
  end

  def stop_recordings!(specter, recordings) do
    for {kind, %{recorder: recorder, path: path}} <- recordings, into: %{} do
      assert :ok = MediaFile.stop_record(specter, recorder)
      assert_receive {:record_finished, ^recorder, %{path: ^path} = info}, @wait
      {kind, info}
    end
  end

  # Every remote track played in its element, and the page neither threw nor crashed.
  def page_healthy!(browser) do
    refute_received {:browser, %{"type" => "play_error"} = error}, inspect(error)
    Specter.Interop.page_healthy!(browser)
  end

  ## Specter's tracks

  def rtp_track!(specter, codec, id) do
    assert {:ok, track} = TrackLocalStaticRTP.new(specter, codec, id, "specter")
    track
  end

  def sample_track!(specter, codec, id) do
    assert {:ok, track} = TrackLocalStaticSample.new(specter, codec, id, "specter")
    track
  end

  # The sender.
  def add_track!(specter, pc, track) do
    assert :ok = PeerConnection.add_track(specter, pc, track)
    assert_receive {:rtp_sender, ^pc, ^track, sender}, @wait
    sender
  end

  ## Files

  # Plays each `{track, path, opts}` at once and waits for every player to finish: the
  # frames played, by track.
  def play!(specter, plays) do
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
  def assert_valid_media!(path) do
    # Every frame decoded at its own timestamp (RTP timing, variable frame rate): without
    # passthrough ffmpeg re-times the frames to a constant rate and reports frames that
    # round to the same slot, which Firefox's jittered capture times produce.
    {out, status} =
      System.cmd(
        "ffmpeg",
        ~w(-nostdin -v error -i #{path} -fps_mode passthrough -enc_time_base -1 -f null -),
        stderr_to_stdout: true
      )

    assert status == 0 and out == "", "ffmpeg could not decode #{path} cleanly: #{out}"
    probe_frames!(path)
  end

  # An IVF file's header fields and frames (`{pts, data}`).
  def read_ivf!(path) do
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

  def probe_frames!(path) do
    args = ~w(-v error -count_frames -show_entries stream=nb_read_frames -of csv=p=0)
    assert {out, 0} = System.cmd("ffprobe", args ++ [path], stderr_to_stdout: true)
    String.to_integer(String.trim(out))
  end

  # `count` is the browser's counter `key` (framesSent, packetsSent) at some moment between
  # the two snapshots, give or take 3 in flight.
  def assert_between!(count, before, later, key) do
    assert count in (before[key] - 3)..(later[key] + 1),
           "#{count} recorded, the browser's #{key} was #{before[key]}, then #{later[key]}"
  end

  # Within 25% of what is expected.
  def assert_count!(count, expected, what) do
    assert count >= expected * 0.75 and count <= expected * 1.25,
           "#{what}: #{count}, expected about #{round(expected)}"
  end

  def report(what, numbers) do
    if System.get_env("SPECTER_MEDIA_REPORT"), do: IO.puts("#{what}: #{inspect(numbers)}")
  end

  def now, do: System.monotonic_time(:millisecond)

  defp ffmpeg!(dir, name, args) do
    path = Path.join(dir, name)

    {out, status} =
      System.cmd("ffmpeg", ["-v", "error", "-y"] ++ args ++ [path], stderr_to_stdout: true)

    assert status == 0, "ffmpeg failed: #{out}"
    path
  end
end
