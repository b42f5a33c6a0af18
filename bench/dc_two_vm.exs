# Bulk small messages between two VMs: one Specter peer in this VM, one in a second BEAM OS
# process (a `:peer` over standard_io, no distribution), echoing 16 MiB in 1 KiB messages
# over loopback, N times, each run on a fresh pair of connections.
#
#   MIX_ENV=bench mix run bench/dc_two_vm.exs [--runs 10] [--mib 16] [--size 1024]
#       [--batch 1] [--bound MB/s] [--receive-buffer BYTES] [--sctp-receive-buffer BYTES]
#
# This VM's origin process owns an ordered, reliable channel; a sender process queues the
# messages (retrying on {:error, :buffer_full} after {:data_channel_buffered_amount_low, dc});
# the other VM's echo process sends each message back (`{:active, n}` topped up as it goes; it
# stops reading while its own send buffer is full). MB/s = bytes echoed back / time from the
# first send to the last echo (every byte crosses the loopback twice).
#
# Per run, what explains a slow one: stalls (gaps >= 20 ms between two echoes at the origin:
# count, total, longest, where), UDP receive-buffer drops (/proc/net/snmp RcvbufErrors, whole
# network namespace), each VM's CPU (utime+stime over the run, in cores), and the counters of
# both VMs' Specter runtimes over the run (`Specter.runtime_info/0`: datagrams, nudges, driver
# sleeps that ran to their end, by length).
#
# `--bound X`: exit 1 when the slowest run is below X MB/s (a regression check).
# `--receive-buffer N`, `--sctp-receive-buffer N`: both VMs' `:data_channel_receive_buffer`
# and `:sctp_receive_buffer` (Specter.Config).

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [
      runs: :integer,
      mib: :integer,
      size: :integer,
      batch: :integer,
      bound: :float,
      receive_buffer: :integer,
      sctp_receive_buffer: :integer
    ]
  )

runs = Keyword.get(opts, :runs, 10)
mib = Keyword.get(opts, :mib, 16)
size = Keyword.get(opts, :size, 1024)
batch = Keyword.get(opts, :batch, 1)
bound = Keyword.get(opts, :bound)
count = div(mib * 1024 * 1024, size)

command = "MIX_ENV=bench mix run bench/dc_two_vm.exs " <> Enum.join(System.argv(), " ")

defmodule TwoVm do
  alias Specter.{DataChannel, PeerConnection}

  def compile_node do
    [{mod, bin}] = Code.compile_file("support/dc_two_vm_node.ex", __DIR__)
    {mod, bin}
  end

  def start_peer!({mod, bin}, init_opts) do
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _} = :peer.start(%{connection: :standard_io, args: paths})
    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:specter], 30_000)
    {:module, ^mod} = :peer.call(peer, :code, :load_binary, [mod, ~c"dc_two_vm_node.ex", bin])
    :ok = :peer.call(peer, mod, :start, [init_opts], 15_000)
    os_pid = :peer.call(peer, :os, :getpid, []) |> List.to_string()
    {peer, os_pid}
  end

  def udp_rcvbuf_errors do
    [head, vals] =
      File.read!("/proc/net/snmp")
      |> String.split("\n")
      |> Enum.filter(&String.starts_with?(&1, "Udp:"))
      |> Enum.take(2)

    idx = head |> String.split() |> Enum.find_index(&(&1 == "RcvbufErrors"))
    vals |> String.split() |> Enum.at(idx) |> String.to_integer()
  end

  # Busy jiffies of the whole machine (every CPU), for "other load" during a run.
  def machine_busy do
    ["cpu" | vals] = File.read!("/proc/stat") |> String.split("\n") |> hd() |> String.split()
    [user, nice, system, idle, iowait | rest] = Enum.map(vals, &String.to_integer/1)
    {user + nice + system + Enum.sum(Enum.take(rest, 3)), idle + iowait}
  end

  def drain do
    receive do
      _ -> drain()
    after
      0 -> :ok
    end
  end

  # A connected pair, this VM offering; returns {pc, dc, echo_pid, remote_pc}.
  def connect!(specter, peer, batch) do
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, dc} = DataChannel.create(specter, pc, "bulk", active: false, batch: batch)
    :ok = PeerConnection.create_offer(specter, pc)
    offer = receive(do: ({:offer, ^pc, o} -> o))
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    receive(do: ({:ice_candidate, ^pc, nil} -> :ok), after: (10_000 -> raise "no gathering"))
    :ok = PeerConnection.local_description(specter, pc, include_candidates: true)
    offer = receive(do: ({:local_description, ^pc, o} -> o))

    {:ok, answer, echo, remote_pc} =
      :peer.call(peer, DcTwoVm.Node, :answer, [offer, batch], 15_000)

    :ok = PeerConnection.set_remote_description(specter, pc, answer)

    receive do
      {:data_channel_open, ^dc} -> :ok
    after
      10_000 -> raise "channel did not open"
    end

    {pc, dc, echo, remote_pc}
  end
end

node_beam = TwoVm.compile_node()
{:module, _} = :code.load_binary(elem(node_beam, 0), ~c"dc_two_vm_node.ex", elem(node_beam, 1))

init_opts =
  [loopback_only: true] ++
    case Keyword.fetch(opts, :receive_buffer) do
      {:ok, bytes} -> [data_channel_receive_buffer: bytes]
      :error -> []
    end ++
    case Keyword.fetch(opts, :sctp_receive_buffer) do
      {:ok, bytes} -> [sctp_receive_buffer: bytes]
      :error -> []
    end

{:ok, specter} = Specter.init(init_opts)
{peer, peer_os} = TwoVm.start_peer!(node_beam, init_opts)

Bench.header("Bulk small messages between two VMs (echo)", command)

IO.puts(
  "#{runs} runs of #{mib} MiB in #{size}-byte messages (#{count} messages), echoed back; " <>
    "receiver batch #{batch}; this VM OS pid #{System.pid()}, echo VM OS pid #{peer_os}\n"
)

counter_keys = [
  :datagrams_sent,
  :datagrams_received,
  :nudges,
  :driver_sleeps_fired_10ms,
  :driver_sleeps_fired_100ms,
  :driver_sleeps_fired_1s,
  :driver_sleep_fired_ms
]

delta = fn after_, before, key ->
  Map.get(after_.runtime, key, 0) - Map.get(before.runtime, key, 0)
end

IO.puts(
  "| run | MB/s | s | stalls >= 20 ms (n / total ms / longest ms) | longest stalls (at MiB: ms) | " <>
    "driver timer waits >= 100 ms: n / total ms (both VMs) | UDP drops | CPU here / echo VM (cores) | " <>
    "machine busy (cores) | datagrams sent here / echo | nudges here / echo |"
)

IO.puts("|---|---|---|---|---|---|---|---|---|---|---|")

results =
  for run <- 1..runs do
    {pc, dc, echo, _remote_pc} = TwoVm.connect!(specter, peer, batch)
    Process.sleep(50)
    TwoVm.drain()
    parent = self()

    origin =
      spawn(fn ->
        receive do
          :go ->
            send(parent, {:result, self(), DcTwoVm.Node.origin(specter, dc, count, size)})
        end
      end)

    :ok = PeerConnection.controlling_process(specter, pc, origin)

    drops0 = TwoVm.udp_rcvbuf_errors()
    {busy0, idle0} = TwoVm.machine_busy()
    here0 = DcTwoVm.Node.snapshot()
    there0 = :peer.call(peer, DcTwoVm.Node, :snapshot, [])
    send(origin, :go)

    r =
      receive do
        {:result, ^origin, r} -> r
      after
        120_000 -> raise "run #{run} did not finish"
      end

    here1 = DcTwoVm.Node.snapshot()
    there1 = :peer.call(peer, DcTwoVm.Node, :snapshot, [])
    {busy1, idle1} = TwoVm.machine_busy()
    drops = TwoVm.udp_rcvbuf_errors() - drops0

    secs = if r.us == :timeout, do: :infinity, else: r.us / 1.0e6
    wall = (here1.at - here0.at) / 1.0e6
    mbps = if secs == :infinity, do: 0.0, else: r.bytes / secs / 1.0e6
    stall_ms = Enum.sum(Enum.map(r.gaps, &elem(&1, 1))) / 1000
    longest = r.gaps |> Enum.map(&elem(&1, 1)) |> Enum.max(fn -> 0 end)
    ticks = System.schedulers_online()
    jiffies = busy1 - busy0 + (idle1 - idle0)
    busy_cores = if jiffies > 0, do: (busy1 - busy0) / jiffies * ticks, else: 0.0

    first =
      r.gaps
      |> Enum.sort_by(&(-elem(&1, 1)))
      |> Enum.take(3)
      |> Enum.map(fn {at, us} -> "#{Float.round(at / 1_048_576, 1)}: #{round(us / 1000)}" end)
      |> Enum.join(", ")

    d = fn key -> {delta.(here1, here0, key), delta.(there1, there0, key)} end
    {s_here, s_there} = d.(:datagrams_sent)
    {n_here, n_there} = d.(:nudges)
    {f100_here, f100_there} = d.(:driver_sleeps_fired_100ms)
    {f1s_here, f1s_there} = d.(:driver_sleeps_fired_1s)
    {ms_here, ms_there} = d.(:driver_sleep_fired_ms)

    IO.puts(
      "| #{run} | #{Float.round(mbps, 1)} | #{if secs == :infinity, do: "timeout", else: Float.round(secs, 3)} | " <>
        "#{length(r.gaps)} / #{round(stall_ms)} / #{round(longest / 1000)} | #{first} | " <>
        "#{f100_here + f100_there + f1s_here + f1s_there} / #{ms_here + ms_there} | #{drops} | " <>
        "#{Float.round((here1.cpu - here0.cpu) / wall, 2)} / #{Float.round((there1.cpu - there0.cpu) / wall, 2)} | " <>
        "#{Float.round(busy_cores, 2)} | #{s_here} / #{s_there} | #{n_here} / #{n_there} |"
    )

    counters = for key <- counter_keys, into: %{}, do: {key, d.(key)}

    if System.get_env("VERBOSE"), do: IO.puts("    counters: #{inspect(counters)}")

    :ok = :peer.call(peer, DcTwoVm.Node, :close_echo, [echo])
    PeerConnection.close(specter, pc)
    Process.exit(origin, :kill)
    TwoVm.drain()
    Process.sleep(100)
    %{mbps: mbps, secs: secs, stalls: length(r.gaps), stall_ms: stall_ms, drops: drops}
  end

mbps = Enum.map(results, & &1.mbps)
sorted = Enum.sort(mbps)
median = Bench.percentile(sorted, 0.5)

IO.puts(
  "\nMB/s over #{runs} runs: min #{Float.round(hd(sorted), 1)}, median #{Float.round(median, 1)}, " <>
    "max #{Float.round(List.last(sorted), 1)}; runs with a stall >= 20 ms: " <>
    "#{Enum.count(results, &(&1.stalls > 0))}; UDP drops in all: #{Enum.sum(Enum.map(results, & &1.drops))}"
)

:peer.stop(peer)

if bound && hd(sorted) < bound do
  IO.puts("FAIL: slowest run #{Float.round(hd(sorted), 1)} MB/s is below the bound #{bound} MB/s")
  System.halt(1)
end
