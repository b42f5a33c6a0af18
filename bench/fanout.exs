# Fan-out: one publisher's VP8 stream (about 1 Mbit/s) forwarded to N subscribers.
#
#   MIX_ENV=bench mix run bench/fanout.exs [--modes native,elixir] [--counts 1,10,50,100,150,200]
#                                          [--window 5] [--quick]
#
# Two operating-system processes, so the forwarding cost is measured alone:
#
#   * this VM, the **server**, pinned to CPU 0 (`taskset`): one connection receiving the
#     publisher's track, and N subscriber connections each with its own
#     `Specter.TrackLocalStaticRTP`;
#   * a peer VM (OTP's `:peer`, over stdio, no distribution), the **clients**, pinned to
#     CPU 1: the publisher (a VP8 file played in a loop) and the N subscribers' receiving
#     ends.
#
# Modes: `native` forwards inside the NIF (`Specter.TrackRemote.forward/3`); `elixir`
# receives every packet in an Elixir process (`{:rtp, track, packet}` under `{:active, n}`
# credit) and writes it to each subscriber's track (`write_rtp/3`), which is what an
# application would do without native forwarding.
#
# For each N, after a warm-up, a window measures the server's CPU time (all its threads,
# from /proc/self/stat), the packets it forwarded, and every subscriber's loss from its
# receiver statistics (`packetsLost` of inbound-rtp, i.e. sequence-number gaps). N is
# "sustained" when no subscriber lost a packet in the window.

Code.require_file("bench_support.exs", __DIR__)

defmodule Fanout.Relay do
  @moduledoc false
  # The Elixir path: owns the publisher's connection on the server, receives each RTP
  # packet under {:active, n} credit and writes it to every subscriber's local track.
  # Credit is topped up every @top_up packets (counts add up), so it never runs dry
  # unless the relay really falls behind.
  @credit 200
  @top_up 100

  def start(s, pc, remote) do
    pid =
      spawn_link(fn ->
        receive do
          :go -> :ok
        end

        :ok = Specter.TrackRemote.set_active(s, remote, @credit)
        loop(s, remote, [], 0)
      end)

    :ok = Specter.PeerConnection.controlling_process(s, pc, pid)
    send(pid, :go)
    pid
  end

  def add(relay, local), do: send(relay, {:add, local})

  def errors do
    case :persistent_term.get({__MODULE__, :errors}, nil) do
      nil ->
        c = :counters.new(1, [])
        :persistent_term.put({__MODULE__, :errors}, c)
        c

      c ->
        c
    end
  end

  defp loop(s, remote, locals, seen) do
    receive do
      {:rtp, ^remote, packet} ->
        for l <- locals do
          case Specter.TrackLocalStaticRTP.write_rtp(s, l, packet) do
            :ok -> :ok
            {:error, _reason} -> :counters.add(errors(), 1, 1)
          end
        end

        seen = seen + 1

        if rem(seen, @top_up) == 0,
          do: :ok = Specter.TrackRemote.set_active(s, remote, @top_up)

        loop(s, remote, locals, seen)

      {:track_passive, ^remote} ->
        :ok = Specter.TrackRemote.set_active(s, remote, @credit)
        loop(s, remote, locals, seen)

      {:add, local} ->
        loop(s, remote, [local | locals], seen)

      _other ->
        loop(s, remote, locals, seen)
    end
  end
end

defmodule Fanout do
  @moduledoc false

  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  def run(argv) do
    {opts, _, _} =
      OptionParser.parse(argv,
        strict: [modes: :string, counts: :string, window: :integer, quick: :boolean]
      )

    quick = Keyword.get(opts, :quick, false)

    modes =
      opts
      |> Keyword.get(:modes, "native,elixir")
      |> String.split(",")
      |> Enum.map(&String.to_atom/1)

    counts =
      opts
      |> Keyword.get(:counts, if(quick, do: "1,10", else: "1,10,25,50,100,150,200"))
      |> String.split(",")
      |> Enum.map(&String.to_integer/1)

    window = Keyword.get(opts, :window, if(quick, do: 3, else: 10))

    Bench.header(
      "Fan-out: one VP8 publisher (about 1 Mbit/s) forwarded to N subscribers",
      "MIX_ENV=bench mix run bench/fanout.exs #{Enum.join(argv, " ")}"
    )

    pin(self_os_pid(), "0")
    file = make_file()
    IO.puts("server: OS pid #{self_os_pid()} pinned to CPU 0; clients: peer VM pinned to CPU 1")
    IO.puts("source: #{file} (#{div(File.stat!(file).size, 1024)} KiB, played in a loop)\n")

    IO.puts(
      "| mode | N | forwarded Mbit/s | forwarded pkt/s | server CPU % of a core | CPU s per forwarded Mbit | µs CPU per forwarded packet | forwarding loop µs per packet | lost (worst subscriber) | dropped by the server | clients CPU % |"
    )

    IO.puts("|---|---|---|---|---|---|---|---|---|---|---|")

    {results, events} =
      Bench.monitored(fn ->
        for mode <- modes do
          results = run_mode(mode, counts, window, file)
          {mode, results}
        end
      end)

    IO.puts("")

    IO.puts(
      "system_monitor (long_schedule >= 1 ms, long_gc, large_heap) in the server VM: " <>
        Bench.describe_events(events)
    )

    for {mode, rows} <- results do
      sustained = rows |> Enum.filter(& &1.sustained) |> Enum.map(& &1.n) |> Enum.max(fn -> 0 end)
      IO.puts("#{mode}: largest N sustained without loss on one core: #{sustained}")
    end

    compare(results)
  end

  # Per forwarded packet, at each N both modes ran: the server's whole CPU cost, and the
  # forwarding stage alone. Native: the forwarding loop's own time (TrackRemote.info's
  # forward_time_us). Elixir: its total minus the part both modes share (webrtc-rs sending
  # each subscriber's packet = native total - native forwarding loop).
  defp compare(results) do
    native = Map.new(results[:native] || [], &{&1.n, &1})
    elixir = Map.new(results[:elixir] || [], &{&1.n, &1})

    for n <- Map.keys(native) |> Enum.sort(), e = elixir[n], e != nil do
      nat = native[n]
      shared = nat.us_per_packet - nat.stage_us_per_packet
      elixir_stage = e.us_per_packet - shared

      IO.puts(
        "N=#{n}: per forwarded packet, server CPU native #{fmt(nat.us_per_packet)} µs vs elixir #{fmt(e.us_per_packet)} µs (#{fmt(e.us_per_packet / nat.us_per_packet)}x); " <>
          "forwarding stage native #{Float.round(nat.stage_us_per_packet, 2)} µs vs elixir #{fmt(elixir_stage)} µs (#{fmt(elixir_stage / nat.stage_us_per_packet)}x); " <>
          "shared send path #{fmt(shared)} µs"
      )
    end
  end

  defp run_mode(mode, counts, window, file) do
    {:ok, peer, _} = start_peer()
    load_clients(peer)
    {:ok, _} = :peer.call(peer, Fanout.Clients, :start, [file])
    clients_pid = :peer.call(peer, Fanout.Clients, :call, [:os_pid])

    {:ok, s} = Specter.init(loopback_only: true)
    # The publisher's connection, answered here.
    offer = :peer.call(peer, Fanout.Clients, :call, [:publish], 60_000)
    pub = new_pc!(s)
    :ok = Specter.PeerConnection.set_remote_description(s, pub, offer)
    recv!({:ok, pub, :set_remote_description})
    :ok = Specter.PeerConnection.create_answer(s, pub)
    {:answer, ^pub, answer} = recv!({:answer, pub})
    answer = local_with_candidates(s, pub, answer)
    :ok = :peer.call(peer, Fanout.Clients, :call, [{:publisher_answer, answer}], 60_000)
    {:track, ^pub, remote, _info} = recv!({:track, pub}, 15_000)

    relay = if mode == :elixir, do: Fanout.Relay.start(s, pub, remote)

    {rows, _} =
      Enum.map_reduce(counts, [], fn n, outs ->
        outs =
          outs ++
            for(_ <- (length(outs) + 1)..n//1, do: add_subscriber(s, peer, remote, mode, relay))

        Process.sleep(2_000)
        row = measure(s, peer, pub, remote, clients_pid, outs, window)
        print_row(mode, row)
        {row, outs}
      end)

    :peer.stop(peer)
    rows
  end

  defp add_subscriber(s, peer, remote, mode, relay) do
    out = new_pc!(s)
    {:ok, local} = Specter.TrackLocalStaticRTP.new(s, @vp8, "fwd", "server")
    :ok = Specter.PeerConnection.add_track(s, out, local)
    recv!({:rtp_sender, out})
    :ok = Specter.PeerConnection.create_offer(s, out)
    {:offer, ^out, offer} = recv!({:offer, out})
    offer = local_with_candidates(s, out, offer)
    {_client, answer} = :peer.call(peer, Fanout.Clients, :call, [{:subscribe, offer}], 60_000)
    :ok = Specter.PeerConnection.set_remote_description(s, out, answer)
    recv!({:ok, out, :set_remote_description})
    recv!({:connection_state_change, out, :connected}, 15_000)

    case mode do
      :native -> :ok = Specter.TrackRemote.forward(s, remote, local)
      :elixir -> Fanout.Relay.add(relay, local)
    end

    drain()
    out
  end

  # Events nobody waits for (candidates, state changes) would make selective receives slow.
  defp drain do
    receive do
      _ -> drain()
    after
      0 -> :ok
    end
  end

  defp measure(s, peer, pub, remote, clients_pid, outs, window) do
    n = length(outs)
    d0 = dropped(s, outs)
    e0 = :counters.get(Fanout.Relay.errors(), 1)
    {:ok, f0} = Specter.TrackRemote.info(s, remote)
    c0 = cpu_ns(self_os_pid())
    k0 = cpu_ns(clients_pid)
    {pb0, pp0} = inbound(s, pub)
    st0 = :peer.call(peer, Fanout.Clients, :call, [:stats], 60_000)
    t0 = System.monotonic_time(:millisecond)
    Process.sleep(window * 1_000)
    st1 = :peer.call(peer, Fanout.Clients, :call, [:stats], 60_000)
    {pb1, pp1} = inbound(s, pub)
    t1 = System.monotonic_time(:millisecond)
    c1 = cpu_ns(self_os_pid())
    k1 = cpu_ns(clients_pid)
    {:ok, f1} = Specter.TrackRemote.info(s, remote)
    server_dropped = dropped(s, outs) - d0 + :counters.get(Fanout.Relay.errors(), 1) - e0
    forwarded = f1.forwarded - f0.forwarded
    stage_us = f1.forward_time_us - f0.forward_time_us

    secs = (t1 - t0) / 1000
    server_cpu = (c1 - c0) / 1.0e9 / secs
    clients_cpu = (k1 - k0) / 1.0e9 / secs
    pub_mbit = (pb1 - pb0) * 8 / 1_000_000 / secs
    pub_pps = (pp1 - pp0) / secs

    lost =
      for {pc, {_r1, l1}} <- st1 do
        {_r0, l0} = Map.get(st0, pc, {0, 0})
        l1 - l0
      end

    received = for({pc, {r1, _}} <- st1, do: r1 - elem(Map.get(st0, pc, {0, 0}), 0))
    worst = Enum.max(lost, fn -> 0 end)
    fwd_mbit = pub_mbit * n
    fwd_pps = pub_pps * n

    %{
      n: n,
      fwd_mbit: fwd_mbit,
      fwd_pps: fwd_pps,
      server_cpu: server_cpu,
      clients_cpu: clients_cpu,
      cpu_per_mbit: server_cpu / max(fwd_mbit, 1.0e-9),
      us_per_packet: server_cpu * 1_000_000 / max(fwd_pps, 1.0e-9),
      worst_lost: worst,
      server_dropped: server_dropped,
      stage_us_per_packet: if(forwarded > 0, do: stage_us / forwarded),
      min_received: Enum.min(received, fn -> 0 end),
      sustained: worst == 0 and Enum.min(received, fn -> 0 end) > 0 and server_cpu < 0.95
    }
  end

  defp print_row(mode, r) do
    IO.puts(
      "| #{mode} | #{r.n} | #{fmt(r.fwd_mbit)} | #{round(r.fwd_pps)} | #{fmt(r.server_cpu * 100)} | #{Float.round(r.cpu_per_mbit, 4)} | #{fmt(r.us_per_packet)} | #{if r.stage_us_per_packet, do: Float.round(r.stage_us_per_packet, 2), else: "-"} | #{r.worst_lost} | #{r.server_dropped} | #{fmt(r.clients_cpu * 100)} |"
    )
  end

  # Packets the server's senders refused (full queues) plus the Elixir relay's write errors.
  defp dropped(s, outs) do
    for out <- outs, reduce: 0 do
      acc ->
        :ok = Specter.PeerConnection.get_senders(s, out)
        {:senders, ^out, senders} = recv!({:senders, out})
        acc + Enum.sum(Enum.map(senders, & &1.dropped))
    end
  end

  defp inbound(s, pc) do
    :ok = Specter.PeerConnection.get_stats(s, pc, format: :map)
    {:stats, ^pc, map} = recv!({:stats, pc})
    inbound = Enum.find_value(map, %{}, fn {_, v} -> if v["type"] == "inbound-rtp", do: v end)
    {Map.get(inbound, "bytesReceived", 0), Map.get(inbound, "packetsReceived", 0)}
  end

  defp new_pc!(s) do
    {:ok, pc} = Specter.PeerConnection.new(s, Specter.PeerConnection.default_api!(s))
    recv!({:peer_connection_ready, pc})
    pc
  end

  defp local_with_candidates(s, pc, description) do
    :ok = Specter.PeerConnection.set_local_description(s, pc, description)
    recv!({:ok, pc, :set_local_description})
    recv!({:ice_candidate, pc, nil})
    :ok = Specter.PeerConnection.local_description(s, pc, include_candidates: true)
    {:local_description, ^pc, json} = recv!({:local_description, pc})
    json
  end

  defp recv!(key, timeout \\ 10_000), do: Fanout.Clients.recv!(key, timeout)

  defp start_peer do
    erl = :os.find_executable(~c"erl")
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, peer, node} =
      :peer.start_link(%{
        connection: :standard_io,
        exec: {~c"/usr/bin/taskset", [~c"-c", ~c"1", erl]},
        args: paths
      })

    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:specter])
    {:ok, peer, node}
  end

  defp load_clients(peer) do
    {:module, Fanout.Clients} =
      :peer.call(peer, :code, :load_binary, [
        Fanout.Clients,
        ~c"fanout_clients.exs",
        clients_beam()
      ])
  end

  defp clients_beam, do: :persistent_term.get({__MODULE__, :clients_beam})

  def compile_clients do
    [{Fanout.Clients, beam}] = Code.compile_file("fanout_clients.exs", __DIR__)
    :persistent_term.put({__MODULE__, :clients_beam}, beam)
  end

  defp make_file do
    dir = Path.join(System.tmp_dir!(), "specter-bench")
    File.mkdir_p!(dir)
    path = Path.join(dir, "fanout-vp8-1mbit.ivf")

    unless File.exists?(path) do
      {out, status} =
        System.cmd(
          "ffmpeg",
          ~w(-v error -y -f lavfi -i testsrc2=size=640x480:rate=30,noise=alls=12:allf=t
             -frames:v 300 -c:v libvpx -deadline realtime -cpu-used 8 -b:v 1M -minrate 1M
             -maxrate 1M -g 60 -f ivf) ++
            [path],
          stderr_to_stdout: true
        )

      if status != 0, do: raise("ffmpeg failed (scripts/setup ffmpeg): #{out}")
    end

    path
  end

  defp pin(pid, cpus) do
    {_, 0} = System.cmd("taskset", ["-a", "-p", "-c", cpus, Integer.to_string(pid)])
  end

  defp self_os_pid, do: List.to_integer(:os.getpid())

  # CPU time of every thread of a process, in ns (the first field of each thread's
  # schedstat). A thread that exits inside a window would go uncounted; in the steady state
  # measured none does.
  defp cpu_ns(pid) do
    "/proc/#{pid}/task"
    |> File.ls!()
    |> Enum.map(fn tid ->
      case File.read("/proc/#{pid}/task/#{tid}/schedstat") do
        {:ok, line} -> line |> String.split() |> hd() |> String.to_integer()
        _ -> 0
      end
    end)
    |> Enum.sum()
  end

  defp fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 1)
end

Fanout.compile_clients()
Fanout.run(System.argv())
