# Scale: N connected pairs (2N connections) with open data channels in one VM.
#
#   MIX_ENV=bench mix run bench/scale.exs [pairs] [--concurrency C] [--idle S] [--rtts R] [--rounds N]
#
# Defaults: 1000 pairs, 16 pairs negotiating at once, 10 s idle, 200 round trips. `C` owner
# processes each connect their share of the pairs one after another (trickle ICE relayed
# in the owner) and keep them; every pair has one data channel, open on both sides. Then,
# with all of them up:
#   * memory: VmRSS and :erlang.memory(:total) against the baseline before the first pair
#     (after a warm-up pair was created and closed), per pair and per connection;
#   * idle CPU: utime + stime of the whole VM (/proc/self/stat) over the idle period;
#   * round trips: one at a time on random pairs, "ping" a -> b, "pong" b -> a, timed in
#     the pair's owner;
#   * every connection still connected (owners count any :disconnected/:failed/:closed);
#   * system_monitor events (long_schedule >= 1 ms, long_gc >= 10 ms, large_heap) per phase;
# and finally the time to close everything and whether threads, fds and tasks return.

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

{opts, args} =
  OptionParser.parse!(System.argv(),
    strict: [concurrency: :integer, idle: :integer, rtts: :integer, rounds: :integer]
  )

pairs = args |> List.first() |> Kernel.||("1000") |> String.to_integer()
concurrency = Keyword.get(opts, :concurrency, 16)
idle_s = Keyword.get(opts, :idle, 10)
rtts = Keyword.get(opts, :rtts, 200)
# --rounds N: after the measured round, connect and close all pairs N - 1 more times and
# report RSS at each peak and after each close (is memory kept after close reused?).
rounds = Keyword.get(opts, :rounds, 1)

Bench.header(
  "Scale: #{pairs} connected pairs (#{2 * pairs} connections) in one VM",
  "MIX_ENV=bench mix run bench/scale.exs #{Enum.join(System.argv(), " ")}"
)

defmodule Scale do
  def rss_kib do
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

  # utime + stime of the whole VM, in clock ticks (fields 14 and 15 of /proc/self/stat,
  # counted after the parenthesised command name).
  def cpu_ticks do
    stat = File.read!("/proc/self/stat")
    [_, rest] = String.split(stat, ") ", parts: 2)
    fields = String.split(rest, " ")
    String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
  end

  def clk_tck do
    {out, 0} = System.cmd("getconf", ["CLK_TCK"])
    out |> String.trim() |> String.to_integer()
  end

  def counts do
    {:ok, %{alive_tasks: tasks}} = Specter.runtime_info()

    %{
      threads: length(File.ls!("/proc/self/task")),
      fds: length(File.ls!("/proc/self/fd")),
      tasks: tasks
    }
  end

  ## Owners: each connects its pairs one after another, then serves round trips.

  def owner(specter, api, n, parent) do
    {pairs, times} =
      Enum.reduce(1..n//1, {[], []}, fn _, {ps, ts} ->
        t0 = System.monotonic_time(:microsecond)
        pair = connect_pair(specter, api)
        {[pair | ps], [System.monotonic_time(:microsecond) - t0 | ts]}
      end)

    pairs = Enum.reverse(pairs)
    send(parent, {:connected, self(), pairs, times})
    serve(specter, Map.new(pairs, &{&1.id, &1}), %{bad: []})
  end

  defp connect_pair(specter, api) do
    {:ok, a} = PeerConnection.new(specter, api)
    {:ok, b} = PeerConnection.new(specter, api)
    ready(a)
    ready(b)
    {:ok, dc} = DataChannel.create(specter, a, "scale")
    :ok = PeerConnection.create_offer(specter, a)
    offer = receive(do: ({:offer, ^a, o} -> o), after: (30_000 -> exit(:offer_timeout)))
    :ok = PeerConnection.set_local_description(specter, a, offer)
    :ok = PeerConnection.set_remote_description(specter, b, offer)
    :ok = PeerConnection.create_answer(specter, b)
    answer = receive(do: ({:answer, ^b, o} -> o), after: (30_000 -> exit(:answer_timeout)))
    :ok = PeerConnection.set_local_description(specter, b, answer)
    :ok = PeerConnection.set_remote_description(specter, a, answer)
    remote = wait_up(specter, a, b, dc, 0, false, nil)
    %{id: a, a: a, b: b, dc: dc, remote: remote}
  end

  defp ready(pc) do
    receive do
      {:peer_connection_ready, ^pc} -> :ok
      {:peer_connection_error, ^pc, reason} -> exit({:peer_connection_error, reason})
    after
      30_000 -> exit({:timeout, :peer_connection_ready})
    end
  end

  defp wait_up(_specter, _a, _b, _dc, 2, true, remote) when remote != nil, do: remote

  defp wait_up(specter, a, b, dc, connected, open, remote) do
    receive do
      {:ice_candidate, ^a, c} when is_binary(c) ->
        :ok = PeerConnection.add_ice_candidate(specter, b, c)
        wait_up(specter, a, b, dc, connected, open, remote)

      {:ice_candidate, ^b, c} when is_binary(c) ->
        :ok = PeerConnection.add_ice_candidate(specter, a, c)
        wait_up(specter, a, b, dc, connected, open, remote)

      {:connection_state_change, pc, :connected} when pc in [a, b] ->
        wait_up(specter, a, b, dc, connected + 1, open, remote)

      {:connection_state_change, pc, :failed} when pc in [a, b] ->
        exit({:failed, pc})

      {:data_channel_open, ^dc} ->
        wait_up(specter, a, b, dc, connected, true, remote)

      {:data_channel, ^b, r} ->
        wait_up(specter, a, b, dc, connected, open, r)
    after
      30_000 -> exit({:connect_timeout, connected, open, remote})
    end
  end

  defp serve(specter, pairs, st) do
    receive do
      {:rtt, from, id} ->
        p = Map.fetch!(pairs, id)
        t0 = System.monotonic_time(:microsecond)
        :ok = DataChannel.send_text(specter, p.dc, "ping")

        receive do
          {:data_channel_message, remote, {:text, "ping"}} when remote == p.remote -> :ok
        after
          5_000 -> exit(:ping_timeout)
        end

        :ok = DataChannel.send_text(specter, p.remote, "pong")

        receive do
          {:data_channel_message, dc, {:text, "pong"}} when dc == p.dc -> :ok
        after
          5_000 -> exit(:pong_timeout)
        end

        send(from, {:rtt, self(), System.monotonic_time(:microsecond) - t0})
        serve(specter, pairs, st)

      {:status, from} ->
        send(from, {:status, self(), st.bad})
        serve(specter, pairs, st)

      {:close, from} ->
        for {_, p} <- pairs do
          :ok = PeerConnection.close(specter, p.a)
          :ok = PeerConnection.close(specter, p.b)
        end

        await_closed(map_size(pairs) * 2)
        send(from, {:closed, self()})

      {state_change, pc, state}
      when state_change in [:connection_state_change, :ice_connection_state_change] and
             state in [:disconnected, :failed, :closed] ->
        serve(specter, pairs, %{st | bad: [{pc, state} | st.bad]})

      _other ->
        serve(specter, pairs, st)
    end
  end

  defp await_closed(0), do: :ok

  defp await_closed(n) do
    receive do
      {:peer_connection_closed, _} -> await_closed(n - 1)
    after
      30_000 -> exit({:close_timeout, n})
    end
  end
end

fmt = fn v, d -> :erlang.float_to_binary(v / 1, decimals: d) end

# Each connection holds one UDP socket (loopback config): the VM needs 2 descriptors per
# pair plus its own. Past `ulimit -n`, PeerConnection.new answers
# {:peer_connection_error, pc, {:webrtc, "... Too many open files (os error 24)"}}.
{limit, 0} = System.cmd("sh", ["-c", "ulimit -n"])
limit = limit |> String.trim()

if limit != "unlimited" and String.to_integer(limit) < 2 * pairs + 200 do
  IO.puts(
    "ulimit -n is #{limit}: #{pairs} pairs need at least #{2 * pairs + 200} (ulimit -n #{2 * pairs + 200})"
  )

  System.halt(2)
end

{:ok, specter} = Specter.init()
api = PeerConnection.default_api!(specter)

# Warm-up: one pair created and closed (runtime workers, allocator arenas, code).
me = self()
w = spawn(fn -> Scale.owner(specter, api, 1, me) end)
receive(do: ({:connected, ^w, _, _} -> :ok))
send(w, {:close, me})
receive(do: ({:closed, ^w} -> :ok))
Process.sleep(500)
:erlang.garbage_collect()

base_counts = Scale.counts()
base_rss = Scale.rss_kib()
base_erl = div(:erlang.memory(:total), 1024)

IO.puts(
  "baseline: RSS #{fmt.(base_rss / 1024, 1)} MiB, erlang #{fmt.(base_erl / 1024, 1)} MiB, " <>
    "#{inspect(base_counts)}; ulimit -n #{String.trim(elem(System.cmd("sh", ["-c", "ulimit -n"]), 0))}, " <>
    "UDP port range #{String.trim(File.read!("/proc/sys/net/ipv4/ip_local_port_range"))}"
)

# Phase 1: connect.
shares =
  for i <- 0..(concurrency - 1),
      do: div(pairs, concurrency) + if(i < rem(pairs, concurrency), do: 1, else: 0)

{{owners, setup_times, t_connect}, connect_events} =
  Bench.monitored(fn ->
    t0 = System.monotonic_time(:millisecond)

    owners =
      for n <- shares, n > 0 do
        {pid, _ref} = spawn_monitor(fn -> Scale.owner(specter, api, n, me) end)
        pid
      end

    results =
      for o <- owners do
        receive do
          {:connected, ^o, ps, ts} -> {o, ps, ts}
          {:DOWN, _, :process, ^o, reason} -> raise "owner failed: #{inspect(reason)}"
        after
          600_000 -> raise "owner #{inspect(o)} did not connect its pairs in 10 min"
        end
      end

    t = System.monotonic_time(:millisecond) - t0
    {results, Enum.flat_map(results, &elem(&1, 2)), t}
  end)

all_pairs = Enum.flat_map(owners, fn {o, ps, _} -> Enum.map(ps, &{o, &1.id}) end)
connected = length(all_pairs)
:erlang.garbage_collect()
Process.sleep(1_000)
up_rss = Scale.rss_kib()
up_erl = div(:erlang.memory(:total), 1024)
up_counts = Scale.counts()
{:ok, inst} = Specter.instance_info(specter)

IO.puts("\n## Connect")

IO.puts(
  "#{connected} pairs (#{inst.peer_connections} connections, #{inst.data_channels} data channels) " <>
    "connected and open in #{fmt.(t_connect / 1000, 2)} s, #{concurrency} at a time " <>
    "(#{fmt.(connected / (t_connect / 1000), 0)} pairs/s)"
)

IO.puts(
  "per pair, new -> open on both sides: #{Bench.summary(Enum.map(setup_times, &(&1 / 1000)), "ms")}"
)

IO.puts("system_monitor: #{Bench.summarize_events(connect_events)}")

IO.puts("\n## Memory with all pairs up")
rss_pair = (up_rss - base_rss) / connected
erl_pair = (up_erl - base_erl) / connected

IO.puts(
  "RSS #{fmt.(up_rss / 1024, 1)} MiB (+#{fmt.((up_rss - base_rss) / 1024, 1)} MiB): " <>
    "#{fmt.(rss_pair, 0)} KiB per pair, #{fmt.(rss_pair / 2, 0)} KiB per connection " <>
    "(plain webrtc-rs 0.21.1, data-only: 578 KiB per pair)"
)

IO.puts(
  "of which the BEAM (:erlang.memory total) +#{fmt.((up_erl - base_erl) / 1024, 1)} MiB: " <>
    "#{fmt.(erl_pair, 1)} KiB per pair"
)

IO.puts(
  "threads #{up_counts.threads} (baseline #{base_counts.threads}), fds #{up_counts.fds} " <>
    "(#{fmt.((up_counts.fds - base_counts.fds) / (2 * connected), 2)} per connection), " <>
    "runtime tasks #{up_counts.tasks} (#{fmt.((up_counts.tasks - base_counts.tasks) / (2 * connected), 2)} per connection)"
)

# Phase 2: idle.
{idle_cpu, idle_events} =
  Bench.monitored(fn ->
    c0 = Scale.cpu_ticks()
    t0 = System.monotonic_time(:millisecond)
    Process.sleep(idle_s * 1000)
    c1 = Scale.cpu_ticks()
    t1 = System.monotonic_time(:millisecond)
    (c1 - c0) / Scale.clk_tck() / ((t1 - t0) / 1000)
  end)

IO.puts("\n## Idle (#{idle_s} s, every connection up, ICE keepalives only)")

IO.puts(
  "CPU: #{fmt.(idle_cpu * 100, 1)}% of one core (whole VM, utime+stime), " <>
    "#{fmt.(idle_cpu * 1_000_000 / (2 * connected), 1)} µs of CPU per connection per second"
)

IO.puts("system_monitor: #{Bench.summarize_events(idle_events)}")

# Phase 3: round trips on random pairs, one at a time.
{rtt_list, rtt_events} =
  Bench.monitored(fn ->
    for _ <- 1..rtts do
      {o, id} = Enum.random(all_pairs)
      send(o, {:rtt, me, id})

      receive do
        {:rtt, ^o, us} -> us
      after
        10_000 -> raise "round trip timed out"
      end
    end
  end)

IO.puts("\n## Round trips on random pairs (#{rtts}, one at a time, all pairs up)")
IO.puts("ping a -> b, pong b -> a: #{Bench.summary(Enum.map(rtt_list, &(&1 / 1000)), "ms", 3)}")
IO.puts("system_monitor: #{Bench.summarize_events(rtt_events)}")

# Still up?
bad =
  Enum.flat_map(owners, fn {o, _, _} ->
    send(o, {:status, me})
    receive(do: ({:status, ^o, bad} -> bad))
  end)

IO.puts(
  "\nstate changes to :disconnected/:failed/:closed while up: #{length(bad)}" <>
    if(bad == [], do: "", else: " #{inspect(Enum.take(bad, 5))}")
)

# Phase 4: close everything.
t0 = System.monotonic_time(:millisecond)
for {o, _, _} <- owners, do: send(o, {:close, me})

for {o, _, _} <- owners,
    do: receive(do: ({:closed, ^o} -> :ok), after: (120_000 -> raise "close timed out"))

t_close = System.monotonic_time(:millisecond) - t0

settled =
  Enum.reduce_while(1..500, nil, fn _, _ ->
    c = Scale.counts()

    if c == base_counts do
      {:halt, c}
    else
      Process.sleep(20)
      {:cont, c}
    end
  end) || Scale.counts()

t_settle = System.monotonic_time(:millisecond) - t0
:erlang.garbage_collect()
Process.sleep(1_000)
end_rss = Scale.rss_kib()

IO.puts(
  "\n## Close\nall #{2 * connected} closed in #{t_close} ms; threads/fds/tasks #{inspect(settled)} " <>
    "(baseline #{inspect(base_counts)}) after #{t_settle} ms; RSS #{fmt.(end_rss / 1024, 1)} MiB " <>
    "(+#{fmt.((end_rss - base_rss) / 1024, 1)} MiB over the baseline)"
)

extra_ok =
  Enum.all?(2..rounds//1, fn round ->
    t0 = System.monotonic_time(:millisecond)
    os = for n <- shares, n > 0, do: spawn(fn -> Scale.owner(specter, api, n, me) end)

    for o <- os,
        do: receive(do: ({:connected, ^o, _, _} -> :ok), after: (600_000 -> raise "timeout"))

    t_up = System.monotonic_time(:millisecond) - t0
    Process.sleep(1_000)
    peak = Scale.rss_kib()
    for o <- os, do: send(o, {:close, me})
    for o <- os, do: receive(do: ({:closed, ^o} -> :ok), after: (120_000 -> raise "timeout"))

    back =
      Enum.any?(1..250, fn _ ->
        Scale.counts() == base_counts or (Process.sleep(20) == :ok and false)
      end)

    after_close = Scale.rss_kib()

    IO.puts(
      "round #{round}: #{pairs} pairs up in #{fmt.(t_up / 1000, 2)} s, RSS #{fmt.(peak / 1024, 1)} MiB; " <>
        "closed: RSS #{fmt.(after_close / 1024, 1)} MiB (erlang " <>
        "#{fmt.(:erlang.memory(:total) / 1024 / 1024, 1)} MiB), counts back to baseline: #{back}"
    )

    back
  end)

ok = connected == pairs and bad == [] and settled == base_counts and extra_ok
IO.puts(if ok, do: "OK", else: "FAIL")
unless ok, do: System.halt(1)
