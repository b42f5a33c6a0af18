# Two peers in one VM: Alice and Bob each own a peer connection in their own process,
# signal through plain messages (as they would through a Phoenix channel), trickle ICE over
# loopback, open a data channel, chat, print every state change and a stats summary.
#
#   mix run examples/demo.exs
#
# Nothing leaves 127.0.0.1: the instance is confined to loopback.

defmodule Demo.Peer do
  alias Specter.{DataChannel, PeerConnection}

  def start(specter, name, role, parent, t0) do
    spawn_link(fn -> init(specter, name, role, parent, t0) end)
  end

  defp init(specter, name, role, parent, t0) do
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))

    receive do
      {:peer_connection_ready, ^pc} -> :ok
    after
      5_000 -> raise "#{name}: no peer connection"
    end

    log(t0, name, "peer connection #{short(pc)} ready")
    send(parent, {:ready, self()})
    remote = receive(do: ({:remote, peer} -> peer))

    state = %{
      specter: specter,
      name: name,
      pc: pc,
      remote: remote,
      parent: parent,
      t0: t0,
      dc: nil,
      received: 0
    }

    state =
      if role == :offerer do
        {:ok, dc} = DataChannel.create(specter, pc, "chat")
        :ok = PeerConnection.create_offer(specter, pc)
        %{state | dc: dc}
      else
        state
      end

    loop(state)
  end

  defp loop(%{specter: s, pc: pc, name: name, t0: t0} = st) do
    receive do
      # Negotiation
      {:offer, ^pc, offer} ->
        :ok = PeerConnection.set_local_description(s, pc, offer)
        send(st.remote, {:signal, {:description, offer}})
        loop(st)

      {:answer, ^pc, answer} ->
        :ok = PeerConnection.set_local_description(s, pc, answer)
        send(st.remote, {:signal, {:description, answer}})
        loop(st)

      {:signal, {:description, json}} ->
        {:ok, %{"type" => type}} = Specter.JSON.decode(json)
        log(t0, name, "got the remote #{type}")
        :ok = PeerConnection.set_remote_description(s, pc, json)
        if type == "offer", do: :ok = PeerConnection.create_answer(s, pc)
        loop(st)

      {:signal, {:candidate, json}} ->
        :ok = PeerConnection.add_ice_candidate(s, pc, json)
        loop(st)

      {:ice_candidate, ^pc, nil} ->
        log(t0, name, "end of candidates")
        loop(st)

      {:ice_candidate, ^pc, json} ->
        {:ok, %{"candidate" => c}} = Specter.JSON.decode(json)
        log(t0, name, "local candidate #{c}")
        send(st.remote, {:signal, {:candidate, json}})
        loop(st)

      # State changes
      {event, ^pc, state}
      when event in [
             :signaling_state_change,
             :ice_gathering_state_change,
             :ice_connection_state_change,
             :connection_state_change
           ] ->
        log(t0, name, "#{event |> Atom.to_string() |> String.replace("_change", "")} -> #{state}")
        loop(st)

      {:negotiation_needed, ^pc} ->
        log(t0, name, "negotiation needed")
        loop(st)

      # Data channel
      {:data_channel_created, ^pc, dc} ->
        log(t0, name, "created data channel #{short(dc)}")
        loop(st)

      {:data_channel, ^pc, dc} ->
        {:ok, %{label: label}} = DataChannel.info(s, dc)
        log(t0, name, "remote opened data channel #{inspect(label)}")
        loop(%{st | dc: dc})

      {:data_channel_open, dc} ->
        log(t0, name, "data channel open")

        if st.dc == dc and st.name == "alice" do
          :ok = DataChannel.send_text(s, dc, "Hello Bob, this is Alice.")
        end

        loop(%{st | dc: dc})

      {:data_channel_message, dc, {kind, data}} ->
        shown = if kind == :text, do: inspect(data), else: "#{byte_size(data)} bytes"
        log(t0, name, "received #{kind} #{shown}")
        st = %{st | received: st.received + 1}

        case {name, st.received} do
          {"bob", 1} ->
            :ok = DataChannel.send_text(s, dc, "Hi Alice! Bob here.")
            :ok = DataChannel.send(s, dc, :crypto.strong_rand_bytes(1024))

          {"alice", 2} ->
            send(st.parent, {:chat_done, self()})

          _ ->
            :ok
        end

        loop(st)

      {:data_channel_buffered_amount_low, _dc} ->
        loop(st)

      {:ok, ^pc, _op} ->
        loop(st)

      {:stats, :please, from} ->
        :ok = PeerConnection.get_stats(s, pc, format: :map)
        stats = receive(do: ({:stats, ^pc, stats} -> stats))
        send(from, {:stats, name, stats})
        loop(st)

      {:close, from} ->
        :ok = PeerConnection.close(s, pc)
        receive(do: ({:peer_connection_closed, ^pc} -> :ok))
        log(t0, name, "closed")
        send(from, {:closed, self()})

      other ->
        log(t0, name, "unexpected #{inspect(other)}")
        loop(st)
    end
  end

  def log(t0, name, line) do
    ms = (System.monotonic_time(:microsecond) - t0) / 1000
    IO.puts(:io_lib.format("~8.2f ms  ~-5s  ~s", [ms, name, line]))
  end

  defp short(id), do: String.slice(id, 0, 8)
end

{:ok, specter} = Specter.init(loopback_only: true)
t0 = System.monotonic_time(:microsecond)
IO.puts("Specter demo: two peer connections, trickle ICE over 127.0.0.1\n")

alice = Demo.Peer.start(specter, "alice", :offerer, self(), t0)
bob = Demo.Peer.start(specter, "bob", :answerer, self(), t0)

for pid <- [alice, bob],
    do: receive(do: ({:ready, ^pid} -> :ok), after: (5_000 -> raise "not ready"))

send(bob, {:remote, alice})
send(alice, {:remote, bob})

receive do
  {:chat_done, ^alice} -> :ok
after
  10_000 -> raise "the chat did not complete in 10 s"
end

IO.puts("\nStats summary")

for {pid, name} <- [{alice, "alice"}, {bob, "bob"}] do
  send(pid, {:stats, :please, self()})
  stats = receive(do: ({:stats, ^name, stats} -> stats))
  by_type = stats |> Map.values() |> Enum.group_by(& &1["type"])

  pair =
    Enum.find(by_type["candidate-pair"] || [], &(&1["nominated"] || &1["state"] == "succeeded"))

  channels = by_type["data-channel"] || []
  transport = List.first(by_type["transport"] || []) || %{}

  IO.puts(
    "  #{name}: #{map_size(stats)} stats objects; " <>
      "transport sent #{transport["bytesSent"]} B / received #{transport["bytesReceived"]} B; " <>
      "pair #{pair && pair["state"]}, rtt #{pair && pair["currentRoundTripTime"]} s; " <>
      Enum.map_join(channels, ", ", fn c ->
        "channel #{inspect(c["label"])}: #{c["messagesSent"]} sent, #{c["messagesReceived"]} received"
      end)
  )
end

IO.puts("")
for pid <- [alice, bob], do: send(pid, {:close, self()})

for pid <- [alice, bob],
    do: receive(do: ({:closed, ^pid} -> :ok), after: (5_000 -> raise "no close"))

IO.puts("\nDone.")
