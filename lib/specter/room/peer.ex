defmodule Specter.Room.Peer do
  @moduledoc """
  One participant of a `Specter.Room`, on the room's side: the process that owns the
  participant's peer connection. The room starts one per participant (linked, so the room
  hears of its end) and tells it which publications to send; the peer process negotiates.

  Negotiation: the participant offers first (its tracks and a data channel); the peer
  answers. From then on the room's side offers every change (a publication added to or
  removed from this participant), one offer at a time: changes that come while an offer is
  out are gathered into the next one. An offer from the participant while the room's own
  is out is ignored (the room's side is the impolite peer); a participant must answer.
  Remote ICE candidates that come before the remote description are queued.

  The peer reports to the room as `{:room_peer, pid, event}`: `{:track, track, info}` for a
  track the participant publishes, `{:track_ended, track}`, `{:data, message}` for a
  message on its data channel, `{:keyframe_request, pub_id}` when the participant asks for
  a keyframe of a publication, and `:connected`. It stops (`:normal`) when the participant
  hangs up or its connection fails or closes.
  """

  use GenServer

  alias Specter.{DataChannel, Negotiation, PeerConnection}
  alias Specter.Signalling.Client

  require Negotiation

  @typedoc "A room-side participant process."
  @type t() :: pid()

  @doc false
  @spec start_link(map()) :: GenServer.on_start()
  def start_link(config), do: GenServer.start_link(__MODULE__, config)

  @doc """
  Passes a `Specter.Signaller` message from the participant.

      iex> Specter.Room.Peer.signal(spawn(fn -> :ok end), {:candidate, nil})
      :ok
  """
  @spec signal(t(), Specter.Signaller.message()) :: :ok
  def signal(peer, message), do: GenServer.cast(peer, {:signal, message})

  @doc """
  Sends the publication `pub_id` to the participant through `local` (a
  `Specter.TrackLocalStaticRTP`): the track is added and the change negotiated.

      iex> Specter.Room.Peer.subscribe(spawn(fn -> :ok end), "pub", "track")
      :ok
  """
  @spec subscribe(t(), String.t(), Specter.TrackLocalStaticRTP.t()) :: :ok
  def subscribe(peer, pub_id, local), do: GenServer.cast(peer, {:subscribe, pub_id, local})

  @doc """
  Stops sending the publication `pub_id` (its sender is removed and the change negotiated).

      iex> Specter.Room.Peer.unsubscribe(spawn(fn -> :ok end), "pub")
      :ok
  """
  @spec unsubscribe(t(), String.t()) :: :ok
  def unsubscribe(peer, pub_id), do: GenServer.cast(peer, {:unsubscribe, pub_id})

  @doc """
  Sends a message on the participant's data channel. A channel that is not open, or whose
  send buffer is full (a slow participant), loses the message; it is counted in `info/1`.

      iex> Specter.Room.Peer.send_data(spawn(fn -> :ok end), {:text, "hi"})
      :ok
  """
  @spec send_data(t(), {:text | :binary, binary()}) :: :ok
  def send_data(peer, message), do: GenServer.cast(peer, {:send_data, message})

  @doc """
  What the peer process knows: its connection, negotiation state, subscriptions and
  counters (`offers`, `data_in`, `data_out`, `data_dropped`).
  """
  @spec info(t()) :: map()
  def info(peer), do: GenServer.call(peer, :info)

  ## Server

  @impl true
  def init(config) do
    case PeerConnection.new(config.specter, config.api) do
      {:ok, pc} ->
        {:ok,
         %{
           config: config,
           pc: pc,
           ready: false,
           # :initial (waiting for the participant's offer), :answering, :stable, :offering
           neg: :initial,
           nego: Negotiation.new(config.specter, pc),
           pending_remote: [],
           needs_offer: false,
           dc: nil,
           # pub_id => %{local: track, sender: sender | nil}
           subs: %{},
           senders: %{},
           connected: false,
           counters: %{offers: 0, data_in: 0, data_out: 0, data_dropped: 0}
         }}

      {:error, reason} ->
        {:stop, {:peer_connection, reason}}
    end
  end

  @impl true
  def handle_cast({:signal, message}, s), do: {:noreply, on_signal(s, message)}

  def handle_cast({:subscribe, pub_id, local}, s) do
    if Map.has_key?(s.subs, pub_id) do
      {:noreply, s}
    else
      _ = PeerConnection.add_track(s.config.specter, s.pc, local)
      {:noreply, put_in(s.subs[pub_id], %{local: local, sender: nil})}
    end
  end

  def handle_cast({:unsubscribe, pub_id}, s) do
    case Map.pop(s.subs, pub_id) do
      {nil, _} ->
        {:noreply, s}

      {%{sender: nil}, subs} ->
        # The sender is still being added: it is removed when it arrives.
        {:noreply, %{s | subs: Map.put(subs, {:removed, pub_id}, true)}}

      {%{sender: sender}, subs} ->
        _ = PeerConnection.remove_track(s.config.specter, s.pc, sender)
        s = %{s | subs: subs, senders: Map.delete(s.senders, sender)}
        {:noreply, maybe_offer(%{s | needs_offer: true})}
    end
  end

  def handle_cast({:send_data, message}, s) do
    result =
      case {s.dc, message} do
        {nil, _} -> {:error, :not_open}
        {dc, {:text, text}} -> DataChannel.send_text(s.config.specter, dc, text)
        {dc, {:binary, data}} -> DataChannel.send(s.config.specter, dc, data)
      end

    key = if result == :ok, do: :data_out, else: :data_dropped
    {:noreply, update_in(s.counters[key], &(&1 + 1))}
  end

  @impl true
  def handle_call(:info, _from, s) do
    info =
      Map.merge(s.counters, %{
        peer_connection: s.pc,
        negotiation: s.neg,
        connected: s.connected,
        subscriptions: for({id, %{}} <- s.subs, is_binary(id), do: id)
      })

    {:reply, info, s}
  end

  @impl true
  def handle_info({:peer_connection_ready, pc}, %{pc: pc} = s) do
    s = %{s | ready: true}
    pending = Enum.reverse(s.pending_remote)
    {:noreply, Enum.reduce(pending, %{s | pending_remote: []}, &on_signal(&2, &1))}
  end

  def handle_info({:peer_connection_error, pc, reason}, %{pc: pc} = s),
    do: {:stop, {:shutdown, {:peer_connection, reason}}, s}

  def handle_info(message, %{pc: pc} = s) when Negotiation.is_message(message, pc) do
    {action, nego} = Negotiation.handle_message(s.nego, message)
    s = %{s | nego: nego}

    case action do
      {:local_description, %{"type" => "answer"} = sdp} ->
        # Stable again: changes gathered meanwhile are offered.
        send_signal(s, {:sdp, sdp})
        {:noreply, maybe_offer(%{s | neg: :stable})}

      {:local_description, sdp} ->
        send_signal(s, {:sdp, sdp})
        {:noreply, %{s | neg: :offering}}

      {:remote_description, :offer} ->
        _ = PeerConnection.create_answer(s.config.specter, pc)
        {:noreply, s}

      {:error, reason} ->
        {:stop, {:shutdown, reason}, s}

      _ ->
        {:noreply, s}
    end
  end

  def handle_info({:rtp_sender, pc, local, sender}, %{pc: pc} = s) do
    case Enum.find(s.subs, fn {_id, sub} -> is_map(sub) and sub.local == local end) do
      {pub_id, %{sender: nil}} ->
        if Map.has_key?(s.subs, {:removed, pub_id}) do
          _ = PeerConnection.remove_track(s.config.specter, pc, sender)
          {:noreply, %{s | subs: s.subs |> Map.delete(pub_id) |> Map.delete({:removed, pub_id})}}
        else
          s = put_in(s.subs[pub_id].sender, sender)
          s = put_in(s.senders[sender], pub_id)
          {:noreply, maybe_offer(%{s | needs_offer: true})}
        end

      _ ->
        {:noreply, s}
    end
  end

  def handle_info({:ice_candidate, pc, candidate}, %{pc: pc} = s) do
    send_signal(s, Specter.Signaller.candidate_message(candidate))
    {:noreply, s}
  end

  def handle_info({:connection_state_change, pc, :connected}, %{pc: pc} = s) do
    unless s.connected, do: report(s, :connected)
    {:noreply, %{s | connected: true}}
  end

  def handle_info({:connection_state_change, pc, state}, %{pc: pc} = s)
      when state in [:failed, :closed],
      do: {:stop, :normal, s}

  def handle_info({:peer_connection_closed, pc}, %{pc: pc} = s), do: {:stop, :normal, s}

  def handle_info({:data_channel, pc, dc}, %{pc: pc, dc: nil} = s), do: {:noreply, %{s | dc: dc}}

  def handle_info({:data_channel_message, dc, message}, %{dc: dc} = s) do
    report(s, {:data, message})
    {:noreply, update_in(s.counters.data_in, &(&1 + 1))}
  end

  def handle_info({:data_channel_close, dc}, %{dc: dc} = s), do: {:noreply, %{s | dc: nil}}

  def handle_info({:track, pc, track, info}, %{pc: pc} = s) do
    report(s, {:track, track, info})
    {:noreply, s}
  end

  def handle_info({:track_ended, track}, s) do
    report(s, {:track_ended, track})
    {:noreply, s}
  end

  def handle_info({:sender_rtcp, sender, rtcp}, s) do
    with %{} <- Enum.find(rtcp, &(&1.type in [:pli, :fir])),
         pub_id when is_binary(pub_id) <- Map.get(s.senders, sender) do
      report(s, {:keyframe_request, pub_id})
    end

    {:noreply, s}
  end

  def handle_info(_message, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    _ = PeerConnection.close(s.config.specter, s.pc)
    :ok
  end

  ## Signals from the participant

  defp on_signal(%{ready: false} = s, message),
    do: %{s | pending_remote: [message | s.pending_remote]}

  defp on_signal(s, {:sdp, %{"type" => "offer"} = sdp}) when s.neg in [:initial, :stable] do
    {_, nego} = Negotiation.set_remote_description(s.nego, sdp)
    %{s | neg: :answering, nego: nego}
  end

  defp on_signal(%{neg: :offering} = s, {:sdp, %{"type" => "answer"} = sdp}) do
    {_, nego} = Negotiation.set_remote_description(s.nego, sdp)
    maybe_offer(%{s | neg: :stable, nego: nego})
  end

  defp on_signal(s, {:candidate, candidate}),
    do: %{s | nego: Negotiation.remote_candidate(s.nego, candidate)}

  defp on_signal(s, _message), do: s

  defp maybe_offer(%{needs_offer: true, neg: :stable, ready: true} = s) do
    _ = PeerConnection.create_offer(s.config.specter, s.pc)

    %{
      s
      | needs_offer: false,
        neg: :offering,
        counters: %{s.counters | offers: s.counters.offers + 1}
    }
  end

  defp maybe_offer(s), do: s

  defp send_signal(s, message) do
    _ = Client.send_signal(s.config.client, nil, s.config.id, message)
    :ok
  end

  defp report(s, event), do: send(s.config.room, {:room_peer, self(), event})
end
