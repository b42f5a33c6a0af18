# The client side of bench/fanout.exs, loaded into both VMs: the publisher and the
# subscribers' receiving ends run in a peer VM.

defmodule Fanout.Clients do
  @moduledoc false
  # Runs in the peer VM: the publisher and the subscribers' receiving ends.
  use GenServer

  def start(file), do: GenServer.start(__MODULE__, file, name: __MODULE__)
  def call(msg), do: GenServer.call(__MODULE__, msg, 60_000)

  @impl true
  def init(file) do
    {:ok, s} = Specter.init(loopback_only: true)
    {:ok, %{s: s, file: file, pub: nil, track: nil, player: nil, subs: %{}}}
  end

  @impl true
  def handle_call(:publish, _from, st) do
    pc = new_pc(st.s)
    vp8 = %Specter.RtpCodecCapability{mime_type: "video/VP8"}
    {:ok, track} = Specter.TrackLocalStaticSample.new(st.s, vp8, "camera", "publisher")
    :ok = Specter.PeerConnection.add_track(st.s, pc, track)
    {:rtp_sender, ^pc, ^track, _} = wait({:rtp_sender, pc})
    :ok = Specter.PeerConnection.create_offer(st.s, pc)
    {:offer, ^pc, offer} = wait({:offer, pc})
    {:reply, local_with_candidates(st.s, pc, offer), %{st | pub: pc, track: track}}
  end

  def handle_call({:publisher_answer, answer}, _from, st) do
    :ok = Specter.PeerConnection.set_remote_description(st.s, st.pub, answer)
    {:ok, _, :set_remote_description} = wait({:ok, st.pub})
    :connected = wait_connected(st.pub)
    {:ok, player} = Specter.MediaFile.play(st.s, st.track, st.file, repeat: true)
    {:reply, :ok, %{st | player: player}}
  end

  def handle_call({:subscribe, offer}, _from, st) do
    pc = new_pc(st.s)
    :ok = Specter.PeerConnection.set_remote_description(st.s, pc, offer)
    {:ok, _, :set_remote_description} = wait({:ok, pc})
    :ok = Specter.PeerConnection.create_answer(st.s, pc)
    {:answer, ^pc, answer} = wait({:answer, pc})
    {:reply, {pc, local_with_candidates(st.s, pc, answer)}, put_in(st.subs[pc], nil)}
  end

  # Loss and receive counts of every subscriber, from its inbound-rtp statistics.
  def handle_call(:stats, _from, st) do
    for pc <- Map.keys(st.subs),
        do: :ok = Specter.PeerConnection.get_stats(st.s, pc, format: :map)

    stats =
      for pc <- Map.keys(st.subs), into: %{} do
        {:stats, ^pc, map} = wait({:stats, pc})

        inbound = Enum.find_value(map, %{}, fn {_, v} -> if v["type"] == "inbound-rtp", do: v end)

        {pc, {Map.get(inbound, "packetsReceived", 0), Map.get(inbound, "packetsLost", 0)}}
      end

    {:reply, stats, st}
  end

  def handle_call(:os_pid, _from, st), do: {:reply, List.to_integer(:os.getpid()), st}

  @impl true
  def handle_info(_event, st), do: {:noreply, st}

  defp new_pc(s) do
    {:ok, pc} = Specter.PeerConnection.new(s, Specter.PeerConnection.default_api!(s))
    {:peer_connection_ready, ^pc} = wait({:peer_connection_ready, pc})
    pc
  end

  defp local_with_candidates(s, pc, description) do
    :ok = Specter.PeerConnection.set_local_description(s, pc, description)
    {:ok, _, :set_local_description} = wait({:ok, pc})
    {:ice_candidate, ^pc, nil} = wait({:ice_candidate, pc, nil})
    :ok = Specter.PeerConnection.local_description(s, pc, include_candidates: true)
    {:local_description, ^pc, json} = wait({:local_description, pc})
    json
  end

  defp wait_connected(pc) do
    receive do
      {:connection_state_change, ^pc, :connected} -> :connected
      {:connection_state_change, ^pc, :failed} -> :failed
    after
      10_000 -> :timeout
    end
  end

  defp wait(key), do: recv!(key)

  @doc """
  Receives the first message whose leading elements equal `key`'s (selectively: other
  messages stay queued), or raises after `timeout` ms.
  """
  def recv!(key, timeout \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    recv_loop(Tuple.to_list(key), tuple_size(key), deadline, key)
  end

  defp recv_loop([tag | _] = want, size, deadline, key) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    # Match on the tag and size; compare the rest after (ids are runtime values).
    receive do
      msg
      when is_tuple(msg) and tuple_size(msg) >= size and elem(msg, 0) == tag and
             (size < 2 or elem(msg, 1) == hd(tl(want))) ->
        if Enum.take(Tuple.to_list(msg), size) == want do
          msg
        else
          found = recv_loop(want, size, deadline, key)
          send(self(), msg)
          found
        end
    after
      remaining -> raise "timed out waiting for #{inspect(key)}"
    end
  end
end
