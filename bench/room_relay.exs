# Room relay: one VP8-shaped track forwarded by a Specter.Room inside one node, and across
# two nodes (Room.Relay over distributed Erlang): delivered packets per second, loss,
# latency (p50/p99/max) and CPU per forwarded Mbit/s on each room node.
#
#   MIX_ENV=bench mix run bench/room_relay.exs [--quick] [--rates 100,1000,...,30000]
#                                              [--duration 8] [--tick 1] [--repeat 1]
#
# Results: bench/results/room_relay.md.
#
# Three VMs on 127.0.0.1, so the rooms' nodes carry only the rooms' work:
#
#   * node a, this VM (`a<ospid>@127.0.0.1`): the signalling server
#     (`Specter.Signalling.Server`, port 0), room "one" (`peer_name: "one@a"`) and room "two"
#     (`"two@a"`), both `cluster: true`;
#   * node b, a `:peer`: room "two" (`"two@b"`, `cluster: true`), linked with a's;
#   * node p, a `:peer`: the participants (`Specter.Room.Participant`) and the bench's
#     publisher and receiver processes (bench/support/room_relay_node.ex, loaded by binary).
#
# Case "one node": publisher and subscriber both join one@a; the room forwards natively
# (TrackRemote.forward/3). Case "two nodes": publisher joins two@a, subscriber two@b:
# publisher pc -> room a's Peer -> Relay exporter (TrackRemote.relay/3) -> distribution ->
# importer on b -> TrackLocalStaticRTP -> room b's Peer -> subscriber pc. Two rooms, so the
# cases never see each other's tracks; both cases stay connected and alternate at each
# rate (so the machine's other load hits both alike). Loss is split by where it happened:
# the publisher's own sender (p), UDP to the room, the subscriber's sender in the room
# (full webrtc-rs queue), and after (importer, UDP to p).
#
# The publisher writes RTP packets (1200-byte VP8-shaped payload carrying a run id, a
# sequence number and `:os.system_time(:nanosecond)`) at a fixed rate, paced every `tick`
# ms; the receiver on p gets the subscriber's remote track (`TrackRemote.relay/3`) and
# measures latency = receive time - send time (same VM, same clock) and loss from the
# sequence numbers. CPU: utime + stime of each VM (/proc/<pid>/stat) over each run; per
# forwarded Mbit it is net of the node's idle CPU (measured with the participants connected
# and no media) and counts delivered RTP bytes.

Code.require_file("bench_support.exs", __DIR__)

defmodule RoomRelay do
  @moduledoc false

  alias Specter.Room
  alias Specter.Room.{Participant, Peer}
  alias RoomRelay.Node, as: Agent

  def run(argv) do
    {opts, _, _} =
      OptionParser.parse(argv,
        strict: [
          quick: :boolean,
          rates: :string,
          duration: :float,
          tick: :integer,
          repeat: :integer
        ]
      )

    quick = Keyword.get(opts, :quick, false)

    rates =
      opts
      |> Keyword.get(
        :rates,
        if(quick, do: "100,1000", else: "100,1000,5000,10000,15000,20000,30000")
      )
      |> String.split(",")
      |> Enum.map(&String.to_integer/1)

    duration_ms = round(Keyword.get(opts, :duration, if(quick, do: 1.5, else: 8.0)) * 1000)
    tick = Keyword.get(opts, :tick, 1)
    repeat = Keyword.get(opts, :repeat, 1)
    idle_ms = if quick, do: 500, else: 3_000

    Bench.header(
      "Room relay: one track forwarded inside one node vs across two nodes",
      "MIX_ENV=bench mix run bench/room_relay.exs #{Enum.join(argv, " ")}"
    )

    IO.puts("load average before: #{String.trim(File.read!("/proc/loadavg"))}")

    ctx = setup()

    IO.puts(
      "VMs (OS pids): a #{ctx.os.a} (rooms one@a and two@a, signalling), b #{ctx.os.b} " <>
        "(room two@b), p #{ctx.os.p} (participants); all unpinned on #{System.schedulers_online()} cores"
    )

    IO.puts(
      "each run #{duration_ms} ms, paced every #{tick} ms, the two cases alternating at each rate " <>
        "(#{repeat}x); packets: 1200-byte payload (#{1200 + 12} bytes of RTP)\n"
    )

    cases = [
      setup_case(ctx, "one node", "one@a", :one, "one@a", :one, tick),
      setup_case(ctx, "two nodes", "two@a", :two_a, "two@b", :two_b, tick)
    ]

    # Idle: every connection up, no media.
    c0 = cpu(ctx)
    t0 = System.monotonic_time(:microsecond)
    Process.sleep(idle_ms)
    idle = cpu_share(c0, cpu(ctx), System.monotonic_time(:microsecond) - t0)

    # The system monitor covers the measured runs (on every node), not the setup.
    for n <- [:b, :p], do: :ok = Agent.call(ctx.nodes[n], :monitor_start)
    runs = for _ <- 1..repeat, rate <- rates, c <- cases, do: {rate, c}

    {rows, events_a} =
      Bench.monitored(fn ->
        for {{rate, c}, i} <- Enum.with_index(runs, 1) do
          m = %{run: i, rate: rate, duration_ms: duration_ms, tick: tick, idle: idle}
          row = measure(ctx, Map.merge(c, m))
          IO.puts(progress(row))
          row
        end
      end)

    events = %{
      a: summarize(Enum.map(events_a, &describe_local/1)),
      b: summarize(Agent.call(ctx.nodes.b, :monitor_stop)),
      p: summarize(Agent.call(ctx.nodes.p, :monitor_stop))
    }

    report(rows, events)
    Enum.each(cases, &teardown_case(ctx, &1))
    :peer.stop(ctx.peers.b)
    :peer.stop(ctx.peers.p)
  end

  defp describe_local({kind, pid, info}) do
    where = if is_pid(pid), do: inspect(Process.info(pid, :current_function)), else: inspect(pid)
    {kind, where, Keyword.get(info, :timeout)}
  end

  # {kind, where, timeout ms} grouped: count and worst per kind and place.
  defp summarize([]), do: "none"

  defp summarize(events) do
    events
    |> Enum.group_by(fn {kind, where, _} -> {kind, where} end, &elem(&1, 2))
    |> Enum.sort_by(fn {_, ts} -> -length(ts) end)
    |> Enum.map(fn {{kind, where}, ts} ->
      "#{kind} x#{length(ts)} (worst #{Enum.max(Enum.map(ts, &(&1 || 0)))} ms) #{where}"
    end)
    |> Enum.join("\n  ")
  end

  ## Setup

  # Two rooms, so the cases' connections never see each other's tracks: "one" (on a only)
  # and "two" (on a and b, linked).
  defp setup do
    suffix = System.pid()
    ensure_alive!(:"a#{suffix}")
    {:module, _} = Code.ensure_loaded(Agent)
    {peer_b, node_b} = start_peer!(:"b#{suffix}")
    {peer_p, node_p} = start_peer!(:"p#{suffix}")
    {:ok, server} = Specter.Signalling.Server.start_link(port: 0)
    port = Specter.Signalling.Server.port(server)
    {:ok, specter} = Specter.init()

    room = fn name, peer_name ->
      {:ok, room} =
        Room.start_link(
          specter: specter,
          name: name,
          peer_name: peer_name,
          port: port,
          cluster: true,
          subscriber: self()
        )

      room
    end

    one = room.("one", "one@a")
    two_a = room.("two", "two@a")

    {:ok, two_b} =
      Agent.call(
        node_b,
        {:start, Room,
         [name: "two", peer_name: "two@b", port: port, cluster: true, subscriber: self()]}
      )

    receive do
      {:specter_room, ^two_a, {:room_joined, ^node_b}} -> :ok
    after
      10_000 -> raise "two@a did not link with two@b"
    end

    %{
      specter: specter,
      port: port,
      rooms: %{one: one, two_a: two_a, two_b: two_b},
      nodes: %{a: node(), b: node_b, p: node_p},
      peers: %{b: peer_b, p: peer_p},
      os: %{a: System.pid(), b: os_pid(node_b), p: os_pid(node_p)}
    }
  end

  defp ensure_alive!(name) do
    case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> {_, 0} = System.cmd("epmd", ["-daemon", "-address", "127.0.0.1"])
    end

    wait_epmd(50)
    {:ok, _} = Node.start(:"#{name}@127.0.0.1", :longnames)
  end

  defp wait_epmd(0), do: :ok

  defp wait_epmd(n) do
    case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> Process.sleep(100) && wait_epmd(n - 1)
    end
  end

  defp start_peer!(name) do
    cookie = Atom.to_charlist(Node.get_cookie())

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        # b and p need not know each other: -connect_all false keeps them apart, so that
        # stopping them at the end is not an "overlapping partition" for global.
        args: [
          ~c"-setcookie",
          cookie,
          ~c"-kernel",
          ~c"inet_dist_use_interface",
          ~c"{127,0,0,1}",
          ~c"-connect_all",
          ~c"false"
        ]
      })

    :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])

    :ok =
      :erpc.call(node, Application, :put_all_env, [[specter: Application.get_all_env(:specter)]])

    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:logger])
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:specter])
    {mod, bin} = :persistent_term.get({__MODULE__, :agent_beam})
    {:module, ^mod} = :erpc.call(node, :code, :load_binary, [mod, ~c"room_relay_node.ex", bin])
    {:ok, _} = :erpc.call(node, Agent, :start, [])
    # Loaded now rather than by the first call inside a measured run.
    for m <- Application.spec(:specter, :modules),
        do: {:module, _} = :erpc.call(node, Code, :ensure_loaded, [m])

    {peer, node}
  end

  def compile_agent do
    [{mod, bin}] = Code.compile_file("support/room_relay_node.ex", __DIR__)
    :persistent_term.put({__MODULE__, :agent_beam}, {mod, bin})
  end

  defp os_pid(node), do: :erpc.call(node, :os, :getpid, []) |> List.to_string()

  ## One case: a publisher and a subscriber on p, each in its room.

  defp setup_case(ctx, name, pub_room, pub_key, sub_room, sub_key, tick) do
    tag = String.replace(name, " ", "-")
    pub_name = "pub-#{tag}"
    sub_name = "sub-#{tag}"
    pub = join!(ctx, pub_name, pub_room, video: true)
    sub = join!(ctx, sub_name, sub_room)
    %{video: video} = Participant.tracks(pub)
    {:ok, publisher} = Agent.call(ctx.nodes.p, {:publisher, video})
    track = warm_up!(publisher, sub, pub_name)
    {:ok, receiver} = receiver!(ctx, track)

    # Settle at a moderate rate (exporter/importer started, keyframe requests answered).
    send(publisher, {:run, self(), 0, 500, 1_000, tick})
    await_published(0, 10_000)

    [%{id: pub_id}] =
      for p <- Room.publications(ctx.rooms[pub_key]), p.publisher == pub_name, do: p

    sub_side = if sub_key == :two_b, do: :b, else: :a

    %{
      case: name,
      pub: pub,
      sub: sub,
      publisher: publisher,
      receiver: receiver,
      pub_id: pub_id,
      sub_side: sub_side,
      sub_pc: room_pc(ctx.rooms[sub_key], sub_name),
      pub_pc: Participant.peer_connection(pub)
    }
  end

  defp teardown_case(ctx, c) do
    send(c.publisher, :stop)
    send(c.receiver, :stop)
    :ok = Participant.leave(c.sub)
    :ok = Participant.leave(c.pub)

    wait_until(fn ->
      Enum.all?(Map.values(ctx.rooms), &(Room.peers(&1) == []))
    end)

    drain()
  end

  defp join!(ctx, name, room, opts \\ []) do
    opts = [name: name, room: room, port: ctx.port, subscriber: self()] ++ opts
    {:ok, p} = Agent.call(ctx.nodes.p, {:start, Participant, opts})

    for event <- [:connected, :data_channel_open] do
      receive do
        {:specter_participant, ^p, ^event} -> :ok
        {:specter_participant, ^p, {^event, _}} -> :ok
      after
        10_000 -> raise "#{name}: no #{event}"
      end
    end

    p
  end

  # Short runs at a low rate until the subscriber's remote track appears (at its first
  # packet, after the room has renegotiated).
  defp warm_up!(publisher, sub, pub_name) do
    send(publisher, {:run, self(), 0, 100, 1_000, 1})

    track =
      receive do
        {:specter_participant, ^sub, {:track, track, %{stream_id: ^pub_name}}} -> track
      after
        20_000 -> raise "no track at the subscriber"
      end

    await_published(0, 10_000)
    track
  end

  defp receiver!(ctx, track) do
    case Agent.call(ctx.nodes.p, {:receiver, track}) do
      {:ok, pid} -> {:ok, pid}
      other -> raise "relay at the subscriber: #{inspect(other)}"
    end
  end

  defp await_published(run, timeout) do
    receive do
      {:published, ^run, stats} -> stats
    after
      timeout -> raise "publisher did not finish run #{run}"
    end
  end

  defp room_pc(room, name) do
    [%{pid: pid}] = for p <- Room.peers(room), p.name == name, do: p
    Peer.info(pid).peer_connection
  end

  ## One rate

  defp measure(ctx, m) do
    expected = div(m.rate * m.duration_ms, 1000)
    send(m.receiver, {:begin, self(), m.run, expected})

    receive do
      {:begun, run} when run == m.run -> :ok
    after
      5_000 -> raise "receiver did not begin"
    end

    at_a0 = packets_at_a(ctx, m.pub_id)
    dropped0 = room_dropped(ctx, m.sub_side, m.sub_pc)
    pub_dropped0 = Agent.call(ctx.nodes.p, {:senders_dropped, m.pub_pc})
    c0 = cpu(ctx)
    send(m.publisher, {:run, self(), m.run, m.rate, m.duration_ms, m.tick})
    published = await_published(m.run, m.duration_ms + 30_000)
    c1 = cpu(ctx)
    # Late packets are still counted (latency max shows them).
    Process.sleep(500)
    send(m.receiver, {:report, self()})

    report =
      receive do
        {:report, r} -> r
      after
        5_000 -> raise "no report"
      end

    at_a = packets_at_a(ctx, m.pub_id) - at_a0
    dropped = room_dropped(ctx, m.sub_side, m.sub_pc) - dropped0
    pub_dropped = Agent.call(ctx.nodes.p, {:senders_dropped, m.pub_pc}) - pub_dropped0
    secs = published.elapsed_us / 1.0e6
    share = cpu_share(c0, c1, published.elapsed_us)
    sent = published.sent - published.errors
    mbit = report.bytes * 8 / 1.0e6
    net = fn n -> max(share[n] - m.idle[n], 0.0) * secs * 1000 / max(mbit, 1.0e-9) end
    drain()

    Map.merge(m, %{
      secs: secs,
      sent: sent,
      write_errors: published.errors,
      sent_pps: sent / secs,
      delivered_pps: report.received / secs,
      mbit_s: mbit / secs,
      loss: if(sent > 0, do: (sent - report.received) * 100 / sent, else: 0.0),
      pub_dropped: pub_dropped,
      lost_before_room: max(sent - pub_dropped - at_a, 0),
      lost_after_room: max(at_a - report.received - dropped, 0),
      room_dropped: dropped,
      duplicates: report.duplicates,
      p50_ms: ms(report.p50_us),
      p99_ms: ms(report.p99_us),
      max_ms: ms(report.max_us),
      mean_ms: ms(report.mean_us),
      cpu: share,
      ms_per_mbit: %{a: net.(:a), b: net.(:b), p: net.(:p)}
    })
  end

  defp ms(nil), do: nil
  defp ms(us), do: us / 1000

  # Packets of the publication that reached room a (its remote track, each sequence once).
  defp packets_at_a(ctx, pub_id) do
    {:ok, info} = Specter.TrackRemote.info(ctx.specter, pub_id)
    info.packet_count
  end

  # Packets the subscriber's sender in the room refused (full queue).
  defp room_dropped(ctx, :a, pc) do
    :ok = Specter.PeerConnection.get_senders(ctx.specter, pc)

    receive do
      {:senders, ^pc, senders} -> Enum.sum(Enum.map(senders, & &1.dropped))
    after
      5_000 -> 0
    end
  end

  defp room_dropped(ctx, :b, pc), do: Agent.call(ctx.nodes.b, {:senders_dropped, pc})

  ## CPU: utime + stime of each VM, in clock ticks.

  # Also the machine's busy time (/proc/stat), to show what other processes took.
  defp cpu(ctx), do: Map.new(ctx.os, fn {n, pid} -> {n, ticks(pid)} end) |> Map.put(:all, busy())

  defp busy do
    ["cpu" | fields] = File.read!("/proc/stat") |> String.split("\n") |> hd() |> String.split()

    [user, nice, system, _idle, _iowait, irq, softirq, steal | _] =
      Enum.map(fields, &String.to_integer/1)

    user + nice + system + irq + softirq + steal
  end

  defp ticks(pid) do
    stat = File.read!("/proc/#{pid}/stat")
    [_, rest] = String.split(stat, ") ", parts: 2)
    fields = String.split(rest)
    # Fields 14 and 15 of stat; `rest` starts at field 3.
    String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
  end

  # Share of one core per node over `us` microseconds.
  defp cpu_share(c0, c1, us) do
    hz = clock_ticks()
    Map.new(c0, fn {n, t0} -> {n, (c1[n] - t0) / hz / (us / 1.0e6)} end)
  end

  defp clock_ticks do
    case :persistent_term.get({__MODULE__, :hz}, nil) do
      nil ->
        {out, 0} = System.cmd("getconf", ["CLK_TCK"])
        hz = out |> String.trim() |> String.to_integer()
        :persistent_term.put({__MODULE__, :hz}, hz)
        hz

      hz ->
        hz
    end
  end

  ## Output

  defp progress(r) do
    "#{r.case}, #{r.rate} pkt/s: delivered #{round(r.delivered_pps)} pkt/s, loss #{f(r.loss, 2)} %, " <>
      "p50 #{f(r.p50_ms, 2)} ms, p99 #{f(r.p99_ms, 2)} ms, CPU a #{pct(r.cpu.a)} b #{pct(r.cpu.b)} p #{pct(r.cpu.p)} others #{pct(others(r.cpu))}"
  end

  defp report(rows, events) do
    IO.puts("")

    IO.puts(
      "| case | target pkt/s | sent pkt/s | delivered pkt/s | Mbit/s | loss % | dropped by publisher's sender (p) | lost on UDP p→room | dropped by subscriber's room sender | lost after (relay, UDP to p) | latency p50 ms | p99 ms | max ms | CPU % a | CPU % b | CPU % p | other processes CPU % | a ms CPU/Mbit | b ms CPU/Mbit | a+b ms CPU/Mbit |"
    )

    IO.puts("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    for r <- rows do
      IO.puts(
        "| #{r.case} | #{r.rate} | #{round(r.sent_pps)} | #{round(r.delivered_pps)} | #{f(r.mbit_s, 1)} | #{f(r.loss, 2)} | #{r.pub_dropped} | #{r.lost_before_room} | #{r.room_dropped} | #{r.lost_after_room} | #{f(r.p50_ms, 2)} | #{f(r.p99_ms, 2)} | #{f(r.max_ms, 1)} | #{pct(r.cpu.a)} | #{pct(r.cpu.b)} | #{pct(r.cpu.p)} | #{pct(others(r.cpu))} | #{f(r.ms_per_mbit.a, 1)} | #{f(r.ms_per_mbit.b, 1)} | #{f(r.ms_per_mbit.a + r.ms_per_mbit.b, 1)} |"
      )
    end

    IO.puts("")

    for {name, rs} <- Enum.group_by(rows, & &1.case) |> Enum.sort() do
      %{idle: idle} = hd(rs)

      # Every run at that rate (and every lower rate) under 1 % loss.
      best =
        rs
        |> Enum.group_by(& &1.rate)
        |> Enum.sort()
        |> Enum.take_while(fn {_, runs} -> Enum.all?(runs, &(&1.loss < 1.0)) end)
        |> Enum.map(&elem(&1, 0))
        |> Enum.max(fn -> "none" end)

      IO.puts(
        "#{name}: highest rate with < 1 % loss: #{best} pkt/s; idle CPU a #{pct(idle.a)} %, b #{pct(idle.b)} %, p #{pct(idle.p)} %; " <>
          "publisher write errors #{Enum.sum(Enum.map(rs, & &1.write_errors))}, duplicates #{Enum.sum(Enum.map(rs, & &1.duplicates))}"
      )
    end

    for [o, t] <- Enum.chunk_every(rows, 2), t.p50_ms && o.p50_ms do
      rate = t.rate

      IO.puts(
        "#{rate} pkt/s: added by the relay across nodes: p50 #{f(t.p50_ms - o.p50_ms, 2)} ms, " <>
          "p99 #{f(t.p99_ms - o.p99_ms, 2)} ms; CPU ms/Mbit a+b #{f(t.ms_per_mbit.a + t.ms_per_mbit.b, 1)} " <>
          "vs one node #{f(o.ms_per_mbit.a, 1)}"
      )
    end

    IO.puts("\nsystem monitor (long_schedule >= 1 ms, long_gc >= 10 ms, large_heap):")
    for {n, e} <- [a: events.a, b: events.b, p: events.p], do: IO.puts("node #{n}: #{e}")
  end

  defp pct(x), do: f(x * 100, 1)

  defp others(cpu), do: max(cpu.all - cpu.a - cpu.b - cpu.p, 0.0)

  defp f(nil, _), do: "-"
  defp f(x, d), do: :erlang.float_to_binary(x / 1, decimals: d)

  defp wait_until(fun, timeout \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline)
  end

  defp do_wait(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(50) && do_wait(fun, deadline)
    end
  end

  # Events nobody waits for (keyframe requests, room events).
  defp drain do
    receive do
      {:specter_participant, _, _} -> drain()
      {:specter_room, _, _} -> drain()
    after
      0 -> :ok
    end
  end
end

RoomRelay.compile_agent()
RoomRelay.run(System.argv())
