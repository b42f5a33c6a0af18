# Alice calls Bob: two Specter sessions in two OS processes, over the signalling server in
# a third, following libwebrtc's peerconnection example (start the server; Alice and Bob
# sign in; Alice picks Bob from the peer list and calls; media and data flow; hang up).
#
#   elixir examples/call/run.exs [--keep] [--timeout SECONDS]     (from the project root;
#   scripts/demo runs it after the one-VM demo)
#
# 1. makes a 3 s VP8 IVF (90 frames) and a 3 s Ogg Opus file with ffmpeg in a temp dir;
# 2. starts `mix specter.server --port 0` and reads the port it got;
# 3. starts Bob and Alice (`mix run examples/call/peer.exs`, one VM each) at once; Alice
#    waits until Bob is listed, calls him, plays both files into her tracks and says
#    "hello Bob"; Bob accepts, records her tracks and answers "hello Alice"; Alice hangs up
#    when the files have played;
# 4. prints every line of the three processes with its time and its source, waits for the
#    peers to exit (--timeout, 45 s), stops the server, checks Bob's recordings with
#    ffprobe (at least 80 of the 90 video frames, and Opus packets) and prints a summary.
#
# Exit status 0 when both peers exited 0 and the checks passed. The temp dir is removed
# unless --keep. Every socket is on 127.0.0.1.

defmodule Call.Run do
  @video_frames 90
  @min_video_frames 80

  def main(argv) do
    {opts, _, invalid} = OptionParser.parse(argv, strict: [keep: :boolean, timeout: :integer])
    if invalid != [], do: abort("invalid options #{inspect(invalid)}")
    Process.put(:t0, System.monotonic_time(:microsecond))
    root = Path.expand("../..", __DIR__)
    mix = System.find_executable("mix") || abort("mix is not installed")

    for tool <- ~w(ffmpeg ffprobe timeout),
        System.find_executable(tool) == nil,
        do: abort("#{tool} is not installed (scripts/setup ffmpeg)")

    dir =
      Path.join(
        System.tmp_dir!(),
        "specter-call-#{System.os_time(:millisecond)}-#{:rand.uniform(999_999)}"
      )

    File.mkdir_p!(dir)

    code =
      try do
        run(root, mix, dir, Keyword.get(opts, :timeout, 45) * 1_000)
      after
        if opts[:keep], do: log("run", "kept #{dir}"), else: File.rm_rf!(dir)
      end

    System.halt(code)
  end

  defp run(root, mix, dir, timeout) do
    log("run", "making the media files in #{dir}")

    # As test/support/test_media.ex makes them; VP8 in libvpx's realtime mode, which is
    # 4x faster on a busy 2-core machine. A keyframe every second.
    vp8 =
      ~w(-f lavfi -i testsrc=size=320x240:rate=30 -frames:v #{@video_frames} -g 30) ++
        ~w(-c:v libvpx -deadline realtime -cpu-used 8 -b:v 500k -f ivf)

    opus = ~w(-f lavfi -i sine=frequency=440:duration=3 -c:a libopus -b:a 48k -f ogg)
    video = ffmpeg(dir, "vp8.ivf", vp8)
    audio = ffmpeg(dir, "opus.ogg", opus)

    log(
      "run",
      "#{Path.basename(video)}: #{probe(video, :video)} frames, " <>
        "#{Path.basename(audio)}: #{probe(audio, :audio)} packets"
    )

    # Compiled once here; the peers start with --no-compile so that their VMs never build
    # at the same time.
    compile = spawn_os("mix", mix, ["compile"], root, 1_800)

    compiled =
      collect(%{compile.port => compile}, now_ms() + 1_800_000, &done?(&1, [compile.port]))

    if compiled[compile.port].status != 0, do: abort("mix compile failed")

    server = spawn_os("server", mix, ~w(specter.server --port 0), root)
    port = wait_for_listening(server)
    log("run", "server on 127.0.0.1:#{port}; starting bob and alice")

    peer = ~w(run --no-compile examples/call/peer.exs --port #{port} --media #{dir})
    bob = spawn_os("bob", mix, peer ++ ~w(--name bob), root)
    alice = spawn_os("alice", mix, peer ++ ~w(--name alice --call bob), root)

    procs = %{bob.port => bob, alice.port => alice, server.port => server}
    deadline = now_ms() + timeout
    procs = collect(procs, deadline, fn ps -> done?(ps, [alice.port, bob.port]) end)

    procs =
      Map.new(procs, fn
        {port, %{status: nil, name: name} = p} when name != "server" ->
          log("run", "ERROR #{name} still running after #{div(timeout, 1000)} s; stopping it")
          kill(p)
          {port, %{p | timed_out: true}}

        other ->
          other
      end)

    kill(procs[server.port])

    procs =
      collect(procs, now_ms() + 5_000, fn ps -> Enum.all?(ps, fn {_, p} -> p.status end) end)

    for {_, %{status: nil} = p} <- procs, do: kill(p, "KILL")

    summary(procs, alice.port, bob.port, dir)
  end

  ## OS processes

  # Each runs under timeout(1), so that nothing outlives a killed orchestrator for long.
  defp spawn_os(name, exe, args, root, limit_s \\ 120) do
    port =
      Port.open({:spawn_executable, System.find_executable("timeout")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 16_384},
        {:cd, root},
        {:args, ["#{limit_s}", exe | args]}
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    log("run", "started #{name} (pid #{os_pid}): #{Enum.join(["mix" | args], " ")}")

    %{
      name: name,
      port: port,
      os_pid: os_pid,
      status: nil,
      timed_out: false,
      partial: "",
      events: %{}
    }
  end

  defp wait_for_listening(server) do
    receive do
      {port, {:data, {:eol, line}}} when port == server.port ->
        log(server.name, line)

        case Regex.run(~r/listening on [\d.]+:(\d+)/, line) do
          [_, port_number] -> port_number
          nil -> wait_for_listening(server)
        end

      {port, {:exit_status, status}} when port == server.port ->
        abort("the server exited with status #{status}")
    after
      30_000 ->
        kill(server)
        abort("the server did not start in 30 s")
    end
  end

  defp collect(procs, deadline, done?) do
    if done?.(procs) do
      procs
    else
      receive do
        {port, {:data, {:noeol, chunk}}} when is_map_key(procs, port) ->
          collect(update_in(procs[port].partial, &(&1 <> chunk)), deadline, done?)

        {port, {:data, {:eol, chunk}}} when is_map_key(procs, port) ->
          p = procs[port]
          line = p.partial <> chunk
          if String.trim(line) != "", do: log(p.name, line)
          p = %{p | partial: "", events: note(p.events, line)}
          collect(Map.put(procs, port, p), deadline, done?)

        {port, {:exit_status, status}} when is_map_key(procs, port) ->
          p = procs[port]
          log("run", "#{p.name} exited with status #{status}")
          collect(Map.put(procs, port, %{p | status: status}), deadline, done?)
      after
        max(deadline - now_ms(), 0) -> procs
      end
    end
  end

  defp done?(procs, ports), do: Enum.all?(ports, &procs[&1].status)

  defp kill(p, signal \\ "TERM") do
    if p.status == nil, do: System.cmd("kill", ["-#{signal}", "#{p.os_pid}"])
  end

  ## What the summary needs from the peers' output: the time of some lines, and numbers

  @marks [
    signed_in: ~r/^signed in/,
    calling: ~r/^calling /,
    incoming: ~r/^incoming call/,
    active: ~r/^session state -> active/,
    dc_open: ~r/^data channel open/,
    playing: ~r/^playing /,
    hangup: ~r/^hanging up/,
    ended: ~r/^call with .* ended/,
    idle: ~r/^session state -> idle/
  ]

  @numbers [
    played_video: ~r/^finished playing video: (\d+) frames/,
    played_audio: ~r/^finished playing audio: (\d+) frames/,
    recorded_video: ~r/^recorded video: (\d+) frames/,
    recorded_audio: ~r/^recorded audio: .*?(\d+) packets/
  ]

  defp note(events, line) do
    t = elapsed()

    events =
      Enum.reduce(@marks, events, fn {key, re}, acc ->
        if Regex.match?(re, line), do: Map.put_new(acc, key, t), else: acc
      end)

    events =
      Enum.reduce(@numbers, events, fn {key, re}, acc ->
        case Regex.run(re, line) do
          [_, n] -> Map.put(acc, key, String.to_integer(n))
          nil -> acc
        end
      end)

    case Regex.run(~r/^received "(.*)"$/, line) do
      [_, text] -> Map.update(events, :received, [text], &(&1 ++ [text]))
      nil -> events
    end
  end

  defp summary(procs, alice_port, bob_port, dir) do
    a = procs[alice_port]
    b = procs[bob_port]
    ae = a.events
    be = b.events
    video = Path.join(dir, "bob-video.ivf")
    audio = Path.join(dir, "bob-audio.ogg")
    video_frames = if File.exists?(video), do: probe(video, :video), else: 0
    audio_packets = if File.exists?(audio), do: probe(audio, :audio), else: 0
    decode_errors = if File.exists?(video), do: decode_errors(video), else: "no file"

    checks = [
      {"alice exited 0 in time", a.status == 0 and not a.timed_out},
      {"bob exited 0 in time", b.status == 0 and not b.timed_out},
      {"bob recorded >= #{@min_video_frames} of #{@video_frames} VP8 frames (ffprobe)",
       video_frames >= @min_video_frames},
      {"bob's video decodes without errors", decode_errors == ""},
      {"bob recorded Opus packets (ffprobe)", audio_packets > 0},
      {"alice received \"hello Alice\"", "hello Alice" in Map.get(ae, :received, [])},
      {"bob received \"hello Bob\"", "hello Bob" in Map.get(be, :received, [])}
    ]

    IO.puts("""

    Summary
      signed in             alice #{t(ae[:signed_in])}, bob #{t(be[:signed_in])}
      call -> active        #{span(ae[:calling], ae[:active])} (alice calls at #{t(ae[:calling])}; active at alice #{t(ae[:active])}, bob #{t(be[:active])})
      data channel open     alice #{t(ae[:dc_open])}, bob #{t(be[:dc_open])}; alice got #{inspect(ae[:received])}, bob got #{inspect(be[:received])}
      alice played          #{n(ae[:played_video])} VP8 frames, #{n(ae[:played_audio])} Opus packets in #{span(ae[:playing], ae[:hangup])} (until the hang-up)
      bob recorded          #{n(be[:recorded_video])} VP8 frames, #{n(be[:recorded_audio])} Opus packets; ffprobe: #{video_frames}/#{@video_frames} frames, #{audio_packets} packets#{if decode_errors == "", do: ", decodes cleanly", else: ""}
      hang-up -> bob ended  #{span(ae[:hangup], be[:ended])}
      exits                 alice #{exit_text(a)}, bob #{exit_text(b)}; total #{t(elapsed())}
    """)

    failed = for {what, false} <- checks, do: what

    if failed == [] do
      IO.puts("OK: #{length(checks)} checks passed")
      0
    else
      Enum.each(failed, &IO.puts("FAILED: #{&1}"))
      1
    end
  end

  ## Media

  defp ffmpeg(dir, file, args) do
    path = Path.join(dir, file)

    {out, status} =
      System.cmd("ffmpeg", ~w(-v error -y) ++ args ++ [path], stderr_to_stdout: true)

    if status != 0, do: abort("ffmpeg failed for #{file}: #{out}")
    path
  end

  # Frames (video) or packets (audio) of a file's first stream, as ffprobe counts them.
  defp probe(path, kind) do
    {flag, entry} =
      if kind == :video,
        do: {"-count_frames", "nb_read_frames"},
        else: {"-count_packets", "nb_read_packets"}

    {out, _} =
      System.cmd(
        "ffprobe",
        ~w(-v error #{flag} -select_streams 0 -show_entries stream=#{entry} -of csv=p=0) ++
          [path],
        stderr_to_stdout: true
      )

    case Integer.parse(String.trim(out)) do
      {n, _} -> n
      :error -> 0
    end
  end

  defp decode_errors(path) do
    {out, _} =
      System.cmd("ffmpeg", ~w(-v error -i) ++ [path] ++ ~w(-f null -), stderr_to_stdout: true)

    String.trim(out)
  end

  ## Output

  defp log(source, line) do
    IO.puts(:io_lib.format("~7.3fs  ~-6s | ~ts", [elapsed() / 1, source, line]))
  end

  defp elapsed, do: (System.monotonic_time(:microsecond) - Process.get(:t0)) / 1_000_000
  defp now_ms, do: System.monotonic_time(:millisecond)

  defp n(nil), do: "-"
  defp n(number), do: number

  defp exit_text(%{timed_out: true}), do: "stopped (timeout)"
  defp exit_text(%{status: status}), do: "#{status}"

  defp t(nil), do: "-"
  defp t(s), do: :io_lib.format("~.3fs", [s / 1]) |> IO.iodata_to_binary()

  defp span(from, to) when is_number(from) and is_number(to),
    do: "#{round((to - from) * 1000)} ms"

  defp span(_, _), do: "-"

  defp abort(text) do
    IO.puts("run: ERROR #{text}")
    System.halt(1)
  end
end

Call.Run.main(System.argv())
