# Time from PeerConnection.new to both sides :connected, and to the data channel open on
# both sides, for two connections in one VM negotiating over loopback.
#
#   MIX_ENV=bench mix run bench/setup_latency.exs [runs]
#
# Runs each configuration: Specter's defaults with trickle ICE, then with each of the
# wrapper's setup fixes turned off (driver wake-up, prflx acceptance wait 0, 50 ms check
# interval), to show what each buys. Then the "early check" case, with and without
# `answer_early_checks`: the remote gets a complete offer (candidates in the SDP), answers
# and checks at once; it never trickles and its answer lists no candidate, and it reaches
# the offerer 2 ms after the remote applied it (a signalling hop). The remote is another
# Specter instance with `ice_check_interval: 500`; measured, its next check after a dropped
# one arrives ~200 ms later (webrtc-rs's ICE tick), so a first check the offerer drops
# costs that much. With the webrtc-rs default prflx acceptance wait (1 s), every setup whose
# check beats the trickled candidate waits 1 s: Specter does not add a trickled candidate ICE
# already learned as peer-reflexive, so the prflx pair is the one nominated.

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

runs = System.argv() |> List.first() |> Kernel.||("50") |> String.to_integer()

Bench.header(
  "Connection setup latency (#{runs} runs per configuration)",
  "MIX_ENV=bench mix run bench/setup_latency.exs #{runs}"
)

defmodule SetupBench do
  # Trickle ICE, both connections in `specter`.
  def once(specter) do
    t0 = System.monotonic_time(:microsecond)
    {:ok, a} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, b} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, dc} = DataChannel.create(specter, a, "bench")
    :ok = PeerConnection.create_offer(specter, a)
    offer = receive(do: ({:offer, ^a, o} -> o))
    :ok = PeerConnection.set_local_description(specter, a, offer)
    :ok = PeerConnection.set_remote_description(specter, b, offer)
    :ok = PeerConnection.create_answer(specter, b)
    answer = receive(do: ({:answer, ^b, o} -> o))
    :ok = PeerConnection.set_local_description(specter, b, answer)
    :ok = PeerConnection.set_remote_description(specter, a, answer)
    finish(specter, specter, a, b, dc, t0, true)
  end

  # The early-check case (see the top of the file): `a` in `specter`, the remote `b` in
  # `remote`, complete descriptions, no trickling.
  def early_check(specter, remote) do
    t0 = System.monotonic_time(:microsecond)
    {:ok, a} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, b} = PeerConnection.new(remote, PeerConnection.default_api!(remote))
    {:ok, dc} = DataChannel.create(specter, a, "bench")
    :ok = PeerConnection.create_offer(specter, a)
    offer = receive(do: ({:offer, ^a, o} -> o))
    :ok = PeerConnection.set_local_description(specter, a, offer)
    receive(do: ({:ice_candidate, ^a, nil} -> :ok))
    :ok = PeerConnection.local_description(specter, a)
    offer = receive(do: ({:local_description, ^a, o} -> o))
    :ok = PeerConnection.set_remote_description(remote, b, offer)
    :ok = PeerConnection.create_answer(remote, b)
    answer = receive(do: ({:answer, ^b, o} -> o))
    :ok = PeerConnection.set_local_description(remote, b, answer)
    receive(do: ({:ok, ^b, :set_local_description} -> :ok))
    Process.sleep(2)
    :ok = PeerConnection.set_remote_description(specter, a, answer)
    finish(specter, remote, a, b, dc, t0, false)
  end

  defp finish(specter, remote, a, b, dc, t0, trickle?) do
    st = %{connected: MapSet.new(), open: MapSet.new(), t_conn: nil, trickle?: trickle?}
    result = wait({specter, remote}, a, b, dc, t0, st)
    :ok = PeerConnection.close(specter, a)
    :ok = PeerConnection.close(remote, b)
    drain(a, b)
    result
  end

  defp wait({specter, remote} = s, a, b, dc, t0, st) do
    if MapSet.size(st.open) == 2 and st.t_conn do
      {st.t_conn, System.monotonic_time(:microsecond) - t0}
    else
      receive do
        {:ice_candidate, ^a, c} when is_binary(c) and st.trickle? ->
          PeerConnection.add_ice_candidate(remote, b, c)
          wait(s, a, b, dc, t0, st)

        {:ice_candidate, ^b, c} when is_binary(c) and st.trickle? ->
          PeerConnection.add_ice_candidate(specter, a, c)
          wait(s, a, b, dc, t0, st)

        {:connection_state_change, pc, :connected} when pc in [a, b] ->
          connected = MapSet.put(st.connected, pc)

          t_conn =
            if MapSet.size(connected) == 2,
              do: System.monotonic_time(:microsecond) - t0,
              else: nil

          wait(s, a, b, dc, t0, %{st | connected: connected, t_conn: t_conn})

        {:data_channel_open, ^dc} ->
          wait(s, a, b, dc, t0, %{st | open: MapSet.put(st.open, :a)})

        {:data_channel, ^b, _remote} ->
          # webrtc-rs announces a remote channel once it is open.
          wait(s, a, b, dc, t0, %{st | open: MapSet.put(st.open, :b)})
      after
        10_000 -> raise "pair did not connect in 10 s"
      end
    end
  end

  defp drain(a, b) do
    receive do
      {:peer_connection_closed, pc} when pc in [a, b] -> drain_rest()
    after
      2_000 -> :ok
    end
  end

  defp drain_rest do
    receive do
      _ -> drain_rest()
    after
      50 -> :ok
    end
  end
end

webrtc_defaults = [
  driver_wakeup: false,
  ice_prflx_acceptance_wait: nil,
  ice_check_interval: nil,
  ice_max_binding_requests: nil
]

configs = [
  {"Specter defaults (driver wake-up on, prflx wait 0, check interval 50 ms)", []},
  {"driver wake-up off", [driver_wakeup: false]},
  {"prflx acceptance wait = webrtc-rs default (1 s)", [ice_prflx_acceptance_wait: nil]},
  {"check interval 20 ms (70 requests)", [ice_check_interval: 20, ice_max_binding_requests: 70]},
  {"check interval = webrtc-rs default (200 ms)",
   [ice_check_interval: nil, ice_max_binding_requests: nil]},
  {"all three off (plain webrtc-rs 0.21.1 behaviour, 4 MiB buffers)", webrtc_defaults}
]

report = fn label, n, fun ->
  {results, events} = Bench.monitored(fn -> for _ <- 1..n, do: fun.() end)
  connected = Enum.map(results, fn {c, _} -> c / 1000 end)
  open = Enum.map(results, fn {_, o} -> o / 1000 end)
  IO.puts("## #{label}")
  IO.puts("  new -> both :connected:        #{Bench.summary(connected, "ms")}")
  IO.puts("  new -> channel open both sides: #{Bench.summary(open, "ms")}")
  slow = Enum.count(open, &(&1 > 20))
  near_500 = Enum.count(open, &(&1 > 400))
  IO.puts("  runs over 20 ms: #{slow} of #{n}; over 400 ms: #{near_500} of #{n}")
  IO.puts("  long_schedule/long_gc events: #{length(events)}")
  IO.puts("")
end

for {label, opts} <- configs do
  {:ok, specter} = Specter.init(opts)
  # One warm-up pair (runtime start, first socket).
  SetupBench.once(specter)
  # Configurations that take ~0.5 s per run are sampled less.
  n = if Keyword.get(opts, :driver_wakeup, true), do: runs, else: min(runs, 20)
  report.(label <> " (trickle ICE)", n, fn -> SetupBench.once(specter) end)
end

{:ok, remote} = Specter.init(ice_check_interval: 500)

for {label, opts} <- [
      {"early check, answer_early_checks: true (Specter default)", []},
      {"early check, answer_early_checks: false (webrtc-rs 0.21.1 drops the check)",
       [answer_early_checks: false]}
    ] do
  {:ok, specter} = Specter.init(opts)
  SetupBench.early_check(specter, remote)
  report.(label, runs, fn -> SetupBench.early_check(specter, remote) end)
end

baseline = Path.expand("../native/target/release/native_baseline", __DIR__)

if File.exists?(baseline) do
  {out, 0} = System.cmd(baseline, ["setup", Integer.to_string(runs)])
  IO.puts("## pure-Rust baseline (same runtime and settings, no BEAM)")
  IO.puts("  #{String.trim(out)}")
else
  IO.puts(
    "(pure-Rust baseline not built: cargo build --release --manifest-path native/Cargo.toml -p specter_native_baseline)"
  )
end
