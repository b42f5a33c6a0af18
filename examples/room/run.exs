# A room split over two BEAM nodes (distributed Erlang on 127.0.0.1):
#
#   mix run examples/room/run.exs        (from the project root; `scripts/demo room`)
#
# 1. this VM becomes node a (epmd on 127.0.0.1) and starts node b with OTP's :peer;
# 2. a signalling server (libwebrtc's protocol) on a; a `Specter.Room` named "demo" on each
#    node, signed in as "room@a" and "room@b", linked over distribution (cluster: true);
# 3. four participants (`Specter.Room.Participant`, real peer connections): alice (video +
#    audio) and bob (data only) join room@a; carol (video + audio) and dave (data only)
#    join room@b. alice and carol publish synthetic VP8 and Opus RTP;
# 4. everyone receives the others' tracks (alice's reach bob by native forwarding inside a,
#    and carol and dave by the relay a -> b), and the chat crosses the nodes both ways;
# 5. node b's VM is killed (SIGKILL): room a ends carol's publications, alice and bob see
#    her tracks end, and alice's video keeps flowing to bob.
#
# Prints a timeline and a summary; exit status 0 when every check passed. Every socket is on
# 127.0.0.1 and every connection is confined to loopback.

defmodule RoomDemo do
  alias Specter.{Room, TrackRemote}
  alias Specter.Room.Participant
  alias Specter.Signalling.Server

  # Runs on node b: holds b's Specter instance, room and participants (they stay linked to
  # it), and answers calls made from a.
  @agent """
  defmodule RoomDemo.Agent do
    use GenServer
    def start(opts), do: GenServer.start(__MODULE__, opts, name: __MODULE__)
    def init(opts) do
      Process.flag(:trap_exit, true)
      {:ok, specter} = Specter.init(loopback_only: true)
      {:ok, room} =
        Specter.Room.start_link(
          specter: specter, name: "demo", peer_name: "room@b", port: opts[:port], cluster: true
        )
      {:ok, %{specter: specter, room: room}}
    end
    def handle_call({:participant, opts}, _from, s),
      do: {:reply, Specter.Room.Participant.start_link([specter: s.specter] ++ opts), s}
    def handle_call({:writer, track, kind}, _from, s) do
      specter = s.specter
      {:reply, {:ok, spawn_link(fn -> RoomDemo.Media.write(specter, track, kind, 1) end)}, s}
    end
    def handle_call({:apply, m, f, a}, _from, s), do: {:reply, apply(m, f, [s.specter | a]), s}
    def handle_info(_, s), do: {:noreply, s}
  end

  """

  @media """
  defmodule RoomDemo.Media do
    # Synthetic RTP: VP8-shaped packets at 30/s (a keyframe every second), Opus-shaped at 50/s.
    def write(specter, track, kind, n) do
      {pt, ts, every, payload} =
        case kind do
          :video -> {96, n * 3000, 33, <<0x10, if(rem(n, 30) == 1, do: 0, else: 1), n::32>>}
          :audio -> {111, n * 960, 20, <<0xFC, n::32>>}
        end
      packet = Specter.RTP.encode(%Specter.RTP{marker: kind == :video, payload_type: pt,
        sequence_number: rem(n, 65_536), timestamp: ts, ssrc: 1, payload: payload})
      case Specter.TrackLocalStaticRTP.write_rtp(specter, track, packet) do
        :ok -> Process.sleep(every) && write(specter, track, kind, n + 1)
        _ -> :done
      end
    end
  end
  """

  def main do
    Process.put(:t0, System.monotonic_time(:millisecond))
    node_a = start_distribution()
    log("a", "node #{node_a} is up")

    {:ok, server} = Server.start_link(port: 0)
    port = Server.port(server)
    log("a", "signalling server on 127.0.0.1:#{port}")

    {:ok, specter} = Specter.init(loopback_only: true)

    {:ok, room_a} =
      Room.start_link(
        specter: specter,
        name: "demo",
        peer_name: "room@a",
        port: port,
        cluster: true,
        subscriber: self()
      )

    {_peer, node_b} = start_node_b(port)
    log("b", "node #{node_b} is up, room@b signed in")
    :ok = Room.subscribe(room_a)
    wait_for(fn -> Room.info(room_a).nodes == [node_b] end, "room a links with room b")
    log("a", "room a linked with room b: #{inspect(Room.info(room_a).nodes)}")

    common = [room: "room@a", port: port, subscriber: self()]
    alice = join(:a, [specter: specter, name: "alice", video: true, audio: true] ++ common)
    bob = join(:a, [specter: specter, name: "bob"] ++ common)

    common_b = [room: "room@b", port: port, subscriber: self()]
    carol = join({:b, node_b}, [name: "carol", video: true, audio: true] ++ common_b)
    dave = join({:b, node_b}, [name: "dave"] ++ common_b)

    %{video: av, audio: aa} = Participant.tracks(alice)
    spawn_link(fn -> RoomDemo.Media.write(specter, av, :video, 1) end)
    spawn_link(fn -> RoomDemo.Media.write(specter, aa, :audio, 1) end)
    %{video: cv, audio: ca} = Participant.tracks(carol)
    {:ok, _} = agent(node_b, {:writer, cv, :video})
    {:ok, _} = agent(node_b, {:writer, ca, :audio})
    log("a", "alice and carol publish VP8 (30 packets/s) and Opus (50 packets/s)")

    names = %{alice => "alice", bob => "bob", carol => "carol", dave => "dave"}

    wanted =
      for p <- [alice, bob, carol, dave],
          pub <- ["alice", "carol"],
          names[p] != pub,
          kind <- [:video, :audio],
          do: {p, pub, kind}

    received = collect_tracks(names, MapSet.new(wanted), %{}, deadline(15_000))

    Process.sleep(2_000)

    counts =
      for {{p, pub, kind}, track} <-
            Enum.sort_by(received, fn {{p, pub, k}, _} -> {names[p], pub, k} end) do
        n = packets(p, track, specter, node_b)
        where = if node(p) == node_a, do: "a", else: "b"

        via =
          if node(p) == node_a == (pub == "alice"),
            do: "native forward",
            else: "relayed across nodes"

        log(where, "#{names[p]} receives #{pub}'s #{kind}: #{n} packets (#{via})")
        n
      end

    :ok = Participant.send_data(alice, {:text, "hello from alice on a"})
    chat1 = collect_chat(names, [bob, carol, dave], "hello from alice on a", deadline(5_000))
    :ok = Participant.send_data(dave, {:text, "hello from dave on b"})
    chat2 = collect_chat(names, [alice, bob, carol], "hello from dave on b", deadline(5_000))

    info_a = Room.info(room_a)

    log(
      "a",
      "room a: #{info_a.peers} participants here, #{info_a.publications} publications, " <>
        "#{info_a.exports} exported to b, #{info_a.imports} imported from b"
    )

    bob_alice_video = received[{bob, "alice", :video}]
    carol_tracks_at_a = for {{p, "carol", _}, t} <- received, p in [alice, bob], do: {p, t}

    log("a", "killing node b's VM (SIGKILL)")
    {_, 0} = System.cmd("kill", ["-9", List.to_string(:erpc.call(node_b, :os, :getpid, []))])
    ended = collect_ended(names, MapSet.new(carol_tracks_at_a), deadline(10_000))
    before = packets(bob, bob_alice_video, specter, node_b)
    Process.sleep(1_000)
    after_ = packets(bob, bob_alice_video, specter, node_b)
    log("a", "bob still receives alice's video: #{before} -> #{after_} packets in 1 s")

    checks = [
      {"every participant got the other publisher's video and audio (12 tracks)",
       map_size(received) == 12},
      {"every received track carried packets", Enum.all?(counts, &(&1 > 20))},
      {"chat a -> b and b -> a reached all three others", chat1 and chat2},
      {"carol's tracks ended at alice and bob when node b died", ended},
      {"room a dropped node b", Room.info(room_a).nodes == []},
      {"alice's video kept flowing to bob", after_ > before + 15}
    ]

    IO.puts("")
    for {what, ok} <- checks, do: IO.puts("#{if ok, do: "PASS", else: "FAIL"}  #{what}")
    System.halt(if Enum.all?(checks, &elem(&1, 1)), do: 0, else: 1)
  end

  defp start_distribution do
    case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> {_, 0} = System.cmd("epmd", ["-daemon", "-address", "127.0.0.1"])
    end

    wait_for(
      fn -> match?({_, 0}, System.cmd("epmd", ["-names"], stderr_to_stdout: true)) end,
      "epmd"
    )

    {:ok, _} = Node.start(:"room_a_#{System.unique_integer([:positive])}@127.0.0.1", :longnames)
    node()
  end

  defp start_node_b(port) do
    {:ok, peer, node_b} =
      :peer.start_link(%{
        name: :"room_b_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", Atom.to_charlist(Node.get_cookie())]
      })

    :ok = :erpc.call(node_b, :code, :add_paths, [:code.get_path()])
    {:ok, _} = :erpc.call(node_b, Application, :ensure_all_started, [:specter])

    for {mod, bin} <- Code.compile_string(@media) ++ Code.compile_string(@agent),
        do: {:module, ^mod} = :erpc.call(node_b, :code, :load_binary, [mod, ~c"agent", bin])

    {:ok, _} = :erpc.call(node_b, RoomDemo.Agent, :start, [[port: port]])
    {peer, node_b}
  end

  defp agent(node, request), do: GenServer.call({RoomDemo.Agent, node}, request, 15_000)

  defp join(:a, opts) do
    {:ok, p} = Participant.start_link(opts)
    connected(p, "a", opts[:name])
  end

  defp join({:b, node}, opts) do
    {:ok, p} = agent(node, {:participant, opts})
    connected(p, "b", opts[:name])
  end

  defp connected(p, where, name) do
    receive do
      {:specter_participant, ^p, :connected} -> log(where, "#{name} joined (connected)")
    after
      10_000 -> abort("#{name} did not connect")
    end

    p
  end

  defp collect_tracks(names, wanted, acc, deadline) do
    if MapSet.size(wanted) == 0 do
      acc
    else
      receive do
        {:specter_participant, p, {:track, track, %{stream_id: pub, kind: kind}}} ->
          log(if(node(p) == node(), do: "a", else: "b"), "#{names[p]} got #{pub}'s #{kind} track")

          collect_tracks(
            names,
            MapSet.delete(wanted, {p, pub, kind}),
            Map.put(acc, {p, pub, kind}, track),
            deadline
          )

        {:specter_room, _room, {event, %{publisher: who, kind: kind}}} ->
          log("a", "room a: #{event} #{who}'s #{kind}")
          collect_tracks(names, wanted, acc, deadline)
      after
        max(deadline - now(), 0) -> acc
      end
    end
  end

  defp collect_chat(_names, [], _text, _deadline), do: true

  defp collect_chat(names, waiting, text, deadline) do
    receive do
      {:specter_participant, p, {:data, {:text, ^text}}} ->
        log(if(node(p) == node(), do: "a", else: "b"), "#{names[p]} got \"#{text}\"")
        collect_chat(names, List.delete(waiting, p), text, deadline)
    after
      max(deadline - now(), 0) -> false
    end
  end

  defp collect_ended(names, waiting, deadline) do
    if MapSet.size(waiting) == 0 do
      true
    else
      receive do
        {:specter_room, _, {:room_left, node}} ->
          log("a", "room a: room on #{node} is gone")
          collect_ended(names, waiting, deadline)

        {:specter_room, _, {:unpublished, _id, reason}} ->
          log("a", "room a: a publication of b ended (#{inspect(reason, limit: 3)})")
          collect_ended(names, waiting, deadline)

        {:specter_participant, p, {:track_ended, track}} ->
          log("a", "#{names[p]}: track #{String.slice(track, 0, 8)} ended")
          collect_ended(names, MapSet.delete(waiting, {p, track}), deadline)
      after
        max(deadline - now(), 0) -> false
      end
    end
  end

  defp packets(p, track, specter, node_b) do
    result =
      if node(p) == node(),
        do: TrackRemote.info(specter, track),
        else: agent(node_b, {:apply, TrackRemote, :info, [track]})

    case result do
      {:ok, info} -> info.packet_count
      _ -> 0
    end
  end

  defp wait_for(fun, what, tries \\ 100) do
    cond do
      fun.() -> :ok
      tries == 0 -> abort("timed out waiting for #{what}")
      true -> Process.sleep(50) && wait_for(fun, what, tries - 1)
    end
  end

  defp deadline(ms), do: now() + ms
  defp now, do: System.monotonic_time(:millisecond)

  defp log(where, line) do
    t = System.monotonic_time(:millisecond) - Process.get(:t0)
    IO.puts("#{String.pad_leading(Integer.to_string(t), 6)} ms  [#{where}] #{line}")
  end

  defp abort(why) do
    IO.puts("FAIL  #{why}")
    System.halt(1)
  end
end

RoomDemo.main()
