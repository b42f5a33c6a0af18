# How long each NIF keeps the calling scheduler: wall time from call to return, per call,
# for every kind of call (the asynchronous part runs on Specter's runtime and is not counted).
#
#   MIX_ENV=bench mix run bench/nif_latency.exs [calls_per_function]
#
# Runs with :erlang.system_monitor long_schedule >= 1 ms and reports what it saw.

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

calls = System.argv() |> List.first() |> Kernel.||("10000") |> String.to_integer()

Bench.header(
  "NIF call latency (#{calls} calls per function)",
  "MIX_ENV=bench mix run bench/nif_latency.exs #{calls}"
)

defmodule NifBench do
  def drain do
    receive do
      _ -> drain()
    after
      0 -> :ok
    end
  end

  # Times `fun` `n` times; drains replies every 500 calls so the mailbox stays small, and
  # yields every 50 calls so that a long_schedule event means one call ran long, not that
  # the benchmark loop itself never gave up its scheduler.
  def time(n, fun) do
    for i <- 1..n do
      t0 = :erlang.monotonic_time(:nanosecond)
      fun.()
      dt = :erlang.monotonic_time(:nanosecond) - t0
      if rem(i, 500) == 0, do: drain()
      if rem(i, 50) == 0, do: :erlang.yield()
      dt / 1000
    end
  end

  def connected_pair(specter) do
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
    :ok = PeerConnection.await_connected(specter, [a, b], 5_000)
    receive(do: ({:data_channel_open, ^dc} -> :ok), after: (5_000 -> raise "no open"))
    {a, b, dc, offer}
  end
end

{:ok, specter} = Specter.init()
{a, b, dc, offer} = NifBench.connected_pair(specter)

idle =
  (fn ->
     {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
     pc
   end).()

receive(do: ({:peer_connection_ready, ^idle} -> :ok))
NifBench.drain()

candidate =
  ~s({"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"})

payload_1k = :crypto.strong_rand_bytes(1024)
payload_16k = :crypto.strong_rand_bytes(16_384)
{:ok, stats_json} = Specter.JSON.encode(%{"a" => Enum.to_list(1..200), "b" => %{"c" => "d"}})

cases = [
  {"Specter.init/1 (dirty I/O scheduler)", div(calls, 10), fn -> Specter.init() end},
  {"Specter.new_media_engine/1", calls, fn -> Specter.new_media_engine(specter) end},
  {"PeerConnection.new/2 (incl. default_api!)", div(calls, 10),
   fn -> PeerConnection.new(specter, PeerConnection.default_api!(specter)) end},
  {"PeerConnection.exists?/2", calls, fn -> PeerConnection.exists?(specter, a) end},
  {"PeerConnection.connection_state/2", calls,
   fn -> PeerConnection.connection_state(specter, a) end},
  {"PeerConnection.signaling_state/2", calls,
   fn -> PeerConnection.signaling_state(specter, a) end},
  {"PeerConnection.create_offer/3", calls, fn -> PeerConnection.create_offer(specter, idle) end},
  {"PeerConnection.local_description/3", calls,
   fn -> PeerConnection.local_description(specter, a) end},
  {"PeerConnection.set_remote_description/3 (#{byte_size(offer)} B offer)", calls,
   fn -> PeerConnection.set_remote_description(specter, idle, offer) end},
  {"PeerConnection.add_ice_candidate/3", calls,
   fn -> PeerConnection.add_ice_candidate(specter, b, candidate) end},
  {"PeerConnection.get_stats/3", calls, fn -> PeerConnection.get_stats(specter, a) end},
  {"DataChannel.send/3 (1 KiB)", calls, fn -> DataChannel.send(specter, dc, payload_1k) end},
  {"DataChannel.send/3 (16 KiB)", calls, fn -> DataChannel.send(specter, dc, payload_16k) end},
  {"DataChannel.info/2", calls, fn -> DataChannel.info(specter, dc) end},
  {"Specter.JSON.decode/1 (dirty CPU scheduler)", calls,
   fn -> Specter.JSON.decode(stats_json) end},
  {"Specter.instance_info/1", calls, fn -> Specter.instance_info(specter) end}
]

{rows, events} =
  Bench.monitored(fn ->
    for {label, n, fun} <- cases do
      # warm up
      Enum.each(1..min(n, 100), fn _ -> fun.() end)
      NifBench.drain()
      us = NifBench.time(n, fun)
      NifBench.drain()
      {label, us}
    end
  end)

IO.puts(String.pad_trailing("function", 58) <> "      p50 us     p99 us     max us")

for {label, us} <- rows do
  IO.puts(
    String.pad_trailing(label, 58) <>
      String.pad_leading(:erlang.float_to_binary(Bench.percentile(us, 0.5), decimals: 2), 11) <>
      String.pad_leading(:erlang.float_to_binary(Bench.percentile(us, 0.99), decimals: 2), 11) <>
      String.pad_leading(:erlang.float_to_binary(Enum.max(us), decimals: 2), 11)
  )
end

nif_events =
  Enum.filter(events, fn {kind, _pid, info} ->
    kind == :long_schedule and
      Enum.any?([info[:in], info[:out]], &match?({Specter.Native, _, _}, &1))
  end)

IO.puts(
  "\nlong_schedule (>= 1 ms) / long_gc events during the run: #{length(events)}, " <>
    "of which with a Specter NIF at schedule-in or schedule-out: #{length(nif_events)}"
)

IO.puts("  " <> Bench.describe_events(events))
{load, _} = System.cmd("cat", ["/proc/loadavg"])
IO.puts("load average: #{String.trim(load)}")
