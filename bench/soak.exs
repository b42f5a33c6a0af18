# Soak: create -> negotiate -> connect -> exchange -> close, many times, on one instance;
# process resources must come back to where they were.
#
#   MIX_ENV=bench mix run bench/soak.exs [cycles]     # default 10000
#   MIX_ENV=bench mix run bench/soak.exs --quick      # 500 cycles (scripts/test runs this)
#
# Each cycle: two connections on one `Specter.init` instance (loopback config, one shared
# API), a data channel, offer/answer with trickle ICE relayed through this process, both
# `:connected` and the channel open on both sides, one text message each way, both closed
# (`{:peer_connection_closed, pc}` for both). Every `every` cycles (20 samples per run) it
# waits until the closed connections' tasks have finished and samples VmRSS, OS threads,
# open file descriptors, the runtime's alive tasks, the instance's object counts and
# `:erlang.memory(:total)`. It prints the curve and exits 1 on growth (criterion below).

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

{opts, args} = OptionParser.parse!(System.argv(), strict: [quick: :boolean, leak_every: :integer])
quick? = Keyword.get(opts, :quick, false)
# Self-check of the criterion: --leak-every N leaves one connection of every Nth cycle open.
leak_every = Keyword.get(opts, :leak_every)

cycles =
  case args do
    [n | _] -> String.to_integer(n)
    [] when quick? -> 500
    [] -> 10_000
  end

Bench.header(
  "Soak: #{cycles} create -> negotiate -> connect -> exchange -> close cycles",
  "MIX_ENV=bench mix run bench/soak.exs #{Enum.join(System.argv(), " ")}"
)

defmodule Soak do
  # RSS growth allowed over the second half of the run (see `verdict/2`): a leak rate in
  # KiB per cycle, and the allocators' noise floor in KiB.
  @rss_leak_rate 1.0
  @rss_noise 4096

  def cycle(specter, api, leak? \\ false) do
    t0 = System.monotonic_time(:microsecond)
    {:ok, a} = PeerConnection.new(specter, api)
    {:ok, b} = PeerConnection.new(specter, api)
    receive(do: ({:peer_connection_ready, ^a} -> :ok), after: (10_000 -> timeout!(:ready)))
    receive(do: ({:peer_connection_ready, ^b} -> :ok), after: (10_000 -> timeout!(:ready)))
    {:ok, dc} = DataChannel.create(specter, a, "soak")
    :ok = PeerConnection.create_offer(specter, a)
    offer = receive(do: ({:offer, ^a, o} -> o), after: (10_000 -> timeout!(:offer)))
    :ok = PeerConnection.set_local_description(specter, a, offer)
    :ok = PeerConnection.set_remote_description(specter, b, offer)
    :ok = PeerConnection.create_answer(specter, b)
    answer = receive(do: ({:answer, ^b, o} -> o), after: (10_000 -> timeout!(:answer)))
    :ok = PeerConnection.set_local_description(specter, b, answer)
    :ok = PeerConnection.set_remote_description(specter, a, answer)

    remote_dc = connect(specter, a, b, dc, %{connected: 0, open: false, remote: nil})

    # One message each way.
    :ok = DataChannel.send_text(specter, dc, "ping")

    receive(
      do: ({:data_channel_message, ^remote_dc, {:text, "ping"}} -> :ok),
      after: (10_000 -> timeout!(:ping))
    )

    :ok = DataChannel.send_text(specter, remote_dc, "pong")

    receive(
      do: ({:data_channel_message, ^dc, {:text, "pong"}} -> :ok),
      after: (10_000 -> timeout!(:pong))
    )

    :ok = PeerConnection.close(specter, a)
    unless leak?, do: :ok = PeerConnection.close(specter, b)
    receive(do: ({:peer_connection_closed, ^a} -> :ok), after: (10_000 -> timeout!(:closed)))

    unless leak? do
      receive(do: ({:peer_connection_closed, ^b} -> :ok), after: (10_000 -> timeout!(:closed)))
    end

    flush()
    System.monotonic_time(:microsecond) - t0
  end

  defp timeout!(what), do: raise("timeout waiting for #{what}")

  # Relays trickled candidates until both are :connected, the local channel is open and the
  # remote one has arrived (webrtc-rs announces it once open).
  defp connect(_specter, _a, _b, _dc, %{connected: 2, open: true, remote: r}) when r != nil,
    do: r

  defp connect(specter, a, b, dc, st) do
    receive do
      {:ice_candidate, ^a, c} when is_binary(c) ->
        :ok = PeerConnection.add_ice_candidate(specter, b, c)
        connect(specter, a, b, dc, st)

      {:ice_candidate, ^b, c} when is_binary(c) ->
        :ok = PeerConnection.add_ice_candidate(specter, a, c)
        connect(specter, a, b, dc, st)

      {:connection_state_change, pc, :connected} when pc in [a, b] ->
        connect(specter, a, b, dc, %{st | connected: st.connected + 1})

      {:connection_state_change, pc, :failed} when pc in [a, b] ->
        raise "connection #{pc} failed"

      {:data_channel_open, ^dc} ->
        connect(specter, a, b, dc, %{st | open: true})

      {:data_channel, ^b, remote} ->
        connect(specter, a, b, dc, %{st | remote: remote})
    after
      10_000 -> raise "pair did not connect in 10 s: #{inspect(st)}"
    end
  end

  def flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end

  # --- sampling ---

  def sample(specter, cycle, t_start) do
    {:ok, rt} = Specter.runtime_info()
    {:ok, inst} = Specter.instance_info(specter)

    %{
      cycle: cycle,
      t: (System.monotonic_time(:millisecond) - t_start) / 1000,
      rss_kib: rss_kib(),
      threads: length(File.ls!("/proc/self/task")),
      fds: length(File.ls!("/proc/self/fd")),
      tasks: rt.alive_tasks,
      objects: inst |> Map.delete(:apis) |> Map.values() |> Enum.sum(),
      erlang_kib: div(:erlang.memory(:total), 1024)
    }
  end

  # Waits (at most `timeout` ms) until the closed connections' tasks are gone and threads
  # and descriptors equal `baseline`'s, then samples. Returns {sample, ms waited}.
  def settled_sample(specter, cycle, t_start, baseline, timeout \\ 5_000) do
    t0 = System.monotonic_time(:millisecond)
    settle(specter, cycle, t_start, baseline, t0, t0 + timeout)
  end

  defp settle(specter, cycle, t_start, baseline, t0, deadline) do
    s = sample(specter, cycle, t_start)
    now = System.monotonic_time(:millisecond)

    if (baseline == nil and s.tasks == 0 and s.objects == 0) or
         (baseline != nil and counts(s) == counts(baseline)) or now >= deadline do
      {s, now - t0}
    else
      Process.sleep(20)
      settle(specter, cycle, t_start, baseline, t0, deadline)
    end
  end

  def counts(s), do: Map.take(s, [:threads, :fds, :tasks, :objects])

  defp rss_kib do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest ->
        rest |> String.trim() |> String.trim_trailing(" kB") |> String.to_integer()

      _ ->
        nil
    end)
  end

  # Least-squares slope of `field` against the cycle number.
  def slope(samples, field) do
    n = length(samples)
    xs = Enum.map(samples, & &1.cycle)
    ys = Enum.map(samples, &Map.fetch!(&1, field))
    mx = Enum.sum(xs) / n
    my = Enum.sum(ys) / n
    sxy = Enum.zip(xs, ys) |> Enum.map(fn {x, y} -> (x - mx) * (y - my) end) |> Enum.sum()
    sxx = xs |> Enum.map(fn x -> (x - mx) * (x - mx) end) |> Enum.sum()
    sxy / sxx
  end

  # Growth criterion.
  #
  # * Threads, descriptors, runtime tasks and the instance's objects (connections, channels,
  #   tracks; the one shared API is excluded) are counts, not estimates: once the cycle's
  #   connections are closed and their tasks have finished, they must equal the baseline
  #   (taken after the warm-up cycles) exactly, at every sample. One leaked socket, task,
  #   thread or map entry per cycle shows at the first sample.
  # * RSS is an estimate: glibc's arenas and trim threshold and the BEAM's carriers move it
  #   in steps of ~0.5-2 MiB either way with no trend. So the criterion is on the slope of a
  #   least-squares fit over the second half of the run (the allocators have reached their
  #   working set), and the run fails when that slope exceeds both a leak rate of
  #   #{@rss_leak_rate} KiB/cycle and what a step of #{@rss_noise} KiB (2x the largest step
  #   seen) spread over the half could produce: max(1, 4096 / half) KiB/cycle, i.e.
  #   16 KiB/cycle for the 500-cycle quick run and 1 KiB/cycle for 10,000 cycles. A leaked
  #   connection costs ~290 KiB (webrtc-rs 0.21.1: 578 KiB per connected pair), so even one
  #   leaked connection in 10 cycles (29 KiB/cycle) fails the quick run, and the full run
  #   catches anything that keeps 1 KiB per cycle (10 MiB over 10,000 cycles).
  def verdict(baseline, samples) do
    bad_counts = Enum.reject(samples, fn s -> counts(s) == counts(baseline) end)
    last = List.last(samples).cycle
    second_half = Enum.filter(samples, &(&1.cycle >= div(last, 2)))
    half = last - hd(second_half).cycle
    bound = max(@rss_leak_rate, @rss_noise / max(half, 1))
    rss_slope = slope(second_half, :rss_kib)

    %{
      bad_counts: bad_counts,
      rss_slope: rss_slope,
      erl_slope: slope(second_half, :erlang_kib),
      rss_ok: rss_slope <= bound,
      bound: Float.round(bound, 2)
    }
  end
end

{:ok, specter} = Specter.init()
api = PeerConnection.default_api!(specter)
t_start = System.monotonic_time(:millisecond)

# Warm-up: the runtime's workers, the allocators' first arenas, the BEAM's code and atoms.
warmup = min(50, max(div(cycles, 10), 1))
for _ <- 1..warmup, do: Soak.cycle(specter, api)
{baseline, _} = Soak.settled_sample(specter, 0, t_start, nil)
IO.puts("warm-up: #{warmup} cycles; baseline #{inspect(Map.delete(baseline, :t))}")

every = max(div(cycles, 20), 1)

{{durations, samples}, events} =
  Bench.monitored(fn ->
    Enum.reduce(1..cycles, {[], []}, fn i, {durs, samples} ->
      d = Soak.cycle(specter, api, leak_every != nil and rem(i, leak_every) == 0)

      samples =
        if rem(i, every) == 0 or i == cycles do
          {s, waited} = Soak.settled_sample(specter, i, t_start, baseline)
          [Map.put(s, :settle_ms, waited) | samples]
        else
          samples
        end

      {[d | durs], samples}
    end)
  end)

samples = Enum.reverse(samples)

IO.puts("")

IO.puts(
  "| cycle | time s | RSS MiB | RSS Δ KiB | erlang MiB | threads | fds | tasks | objects | settle ms |"
)

IO.puts("|---|---|---|---|---|---|---|---|---|---|")

for s <- [Map.merge(baseline, %{settle_ms: 0}) | samples] do
  f = fn v, d -> :erlang.float_to_binary(v / 1, decimals: d) end

  IO.puts(
    "| #{s.cycle} | #{f.(s.t, 1)} | #{f.(s.rss_kib / 1024, 1)} | #{s.rss_kib - baseline.rss_kib} | " <>
      "#{f.(s.erlang_kib / 1024, 1)} | #{s.threads} | #{s.fds} | #{s.tasks} | #{s.objects} | #{s.settle_ms} |"
  )
end

v = Soak.verdict(baseline, samples)
last = List.last(samples)
f2 = fn x -> :erlang.float_to_binary(x / 1, decimals: 2) end

IO.puts("")
IO.puts("cycle time: #{Bench.summary(Enum.map(durations, &(&1 / 1000)), "ms")}")

IO.puts(
  "RSS: baseline #{baseline.rss_kib} KiB, end #{last.rss_kib} KiB " <>
    "(#{f2.((last.rss_kib - baseline.rss_kib) / cycles)} KiB/cycle overall); " <>
    "second-half slope #{f2.(v.rss_slope)} KiB/cycle (bound #{v.bound})"
)

IO.puts("erlang memory: second-half slope #{f2.(v.erl_slope)} KiB/cycle")

IO.puts(
  "threads/fds/tasks/objects back to baseline #{inspect(Soak.counts(baseline))} at " <>
    "#{length(samples) - length(v.bad_counts)} of #{length(samples)} samples"
)

IO.puts("system_monitor events (long_schedule >= 1 ms, long_gc >= 10 ms, large_heap):")
IO.puts("  " <> Bench.summarize_events(events))

count_failures =
  v.bad_counts
  |> Enum.take(5)
  |> Enum.map(fn s ->
    "cycle #{s.cycle}: #{inspect(Soak.counts(s))} != baseline #{inspect(Soak.counts(baseline))}"
  end)

rss_failures =
  if v.rss_ok,
    do: [],
    else: ["RSS grows #{f2.(v.rss_slope)} KiB/cycle over the second half (bound #{v.bound})"]

failures = count_failures ++ rss_failures

if failures == [] do
  IO.puts("PASS: no growth")
else
  IO.puts("FAIL:\n  " <> Enum.join(failures, "\n  "))
  System.halt(1)
end
