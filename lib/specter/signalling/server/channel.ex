defmodule Specter.Signalling.Server.Channel do
  @moduledoc """
  The members of a `Specter.Signalling.Server` and their queues (libwebrtc's `PeerChannel`).

  One process holds every member: its id, name, the queue of responses waiting for its next
  `/wait`, the connection process of the `/wait` it has pending (monitored), and the time it
  last had one. Connection processes call it; it never touches a socket itself.

  A response handed to a waiting connection stays "in flight" until the connection reports
  that it wrote it; if the connection fails or dies first, the response goes back to the
  front of the member's queue, so a client that vanishes mid-delivery loses nothing that
  its next `/wait` could still get.
  """

  use GenServer

  alias Specter.Signalling.HTTP

  @typedoc "A queued response: status, content type, `Pragma` id, body."
  @type item() :: {String.t(), String.t(), pos_integer(), binary()}

  @doc false
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @doc """
  Starts the channel. Options: `:member_timeout` (ms without a pending `/wait` before a
  member is dropped, 30 000), `:max_queue` (messages queued per member before senders get
  `{:error, :queue_full}`, 1 000).
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "Adds a member named after `raw_name`; returns its id and the sign-in body."
  @spec sign_in(pid(), binary()) :: {:ok, pos_integer(), String.t()}
  def sign_in(channel, raw_name), do: GenServer.call(channel, {:sign_in, raw_name})

  @doc """
  Registers the calling connection as `id`'s pending `/wait`. The next response for `id`
  arrives as `{:deliver, tag, item}`; the caller answers with `delivered/3`. A wait
  replaced by a newer one, or whose member left, gets `:wait_closed`.
  """
  @spec wait(pid(), pos_integer()) :: :ok | {:error, :unknown_peer}
  def wait(channel, id), do: GenServer.call(channel, {:wait, id})

  @doc "Reports whether the response sent as `{:deliver, tag, _}` was written (`:ok`)."
  @spec delivered(pid(), reference(), :ok | {:error, term()}) :: :ok
  def delivered(channel, tag, result), do: GenServer.cast(channel, {:delivered, tag, result})

  @doc """
  Relays `body` from `from` to `to`. A member sending to itself gets its message back
  (`{:echo, item}`, for the sender's own connection to answer with), like the original.
  """
  @spec message(pid(), pos_integer(), pos_integer(), String.t(), binary()) ::
          :ok | {:echo, item()} | {:error, :unknown_peer | :unknown_target | :queue_full}
  def message(channel, from, to, content_type, body),
    do: GenServer.call(channel, {:message, from, to, content_type, body})

  @doc "Removes `id` and tells every other member."
  @spec sign_out(pid(), pos_integer()) :: :ok | {:error, :unknown_peer}
  def sign_out(channel, id), do: GenServer.call(channel, {:sign_out, id})

  @doc "The members now, as `{id, name}` in sign-in order."
  @spec members(pid()) :: [{pos_integer(), String.t()}]
  def members(channel), do: GenServer.call(channel, :members)

  @impl true
  def init(opts) do
    timeout = Keyword.get(opts, :member_timeout, 30_000)

    state = %{
      members: %{},
      next_id: 1,
      waiters: %{},
      inflight: %{},
      timeout: timeout,
      max_queue: Keyword.get(opts, :max_queue, 1_000),
      tick: max(min(div(timeout, 4), 1_000), 10)
    }

    Process.send_after(self(), :tick, state.tick)
    {:ok, state}
  end

  @impl true
  def handle_call({:sign_in, raw}, _from, state) do
    id = state.next_id
    name = HTTP.member_name(raw, id)
    entry = HTTP.entry(name, id, true)

    others = state.members |> Map.values() |> Enum.sort_by(& &1.id)

    state =
      Enum.reduce(others, state, &enqueue(&2, &1.id, {"200 OK", "text/plain", &1.id, entry}))

    member = %{id: id, name: name, queue: :queue.new(), queued: 0, waiter: nil, stamp: now()}
    body = IO.iodata_to_binary([entry | Enum.map(others, &HTTP.entry(&1.name, &1.id, true))])

    state = %{state | members: Map.put(state.members, id, member), next_id: id + 1}
    {:reply, {:ok, id, body}, state}
  end

  def handle_call({:wait, id}, {pid, _}, state) do
    case Map.fetch(state.members, id) do
      {:ok, member} ->
        state = close_waiter(state, member)
        mon = Process.monitor(pid)
        member = %{state.members[id] | waiter: {pid, mon}}
        state = %{state | members: Map.put(state.members, id, member)}
        state = %{state | waiters: Map.put(state.waiters, mon, id)}
        {:reply, :ok, flush(state, id)}

      :error ->
        {:reply, {:error, :unknown_peer}, state}
    end
  end

  def handle_call({:message, from, to, type, body}, _from, state) do
    cond do
      not Map.has_key?(state.members, from) ->
        {:reply, {:error, :unknown_peer}, state}

      not Map.has_key?(state.members, to) ->
        {:reply, {:error, :unknown_target}, state}

      from == to ->
        {:reply, {:echo, {"200 OK", type, from, body}}, state}

      state.members[to].queued >= state.max_queue ->
        {:reply, {:error, :queue_full}, state}

      true ->
        {:reply, :ok, enqueue(state, to, {"200 OK", type, from, body}, true)}
    end
  end

  def handle_call({:sign_out, id}, _from, state) do
    case Map.fetch(state.members, id) do
      {:ok, member} -> {:reply, :ok, remove(state, member)}
      :error -> {:reply, {:error, :unknown_peer}, state}
    end
  end

  def handle_call(:members, _from, state) do
    members = state.members |> Map.values() |> Enum.sort_by(& &1.id)
    {:reply, Enum.map(members, &{&1.id, &1.name}), state}
  end

  @impl true
  def handle_cast({:delivered, tag, result}, state) do
    case Map.pop(state.inflight, tag) do
      {nil, _} ->
        {:noreply, state}

      {{id, item}, inflight} ->
        Process.demonitor(tag, [:flush])
        state = %{state | inflight: inflight}
        {:noreply, if(result == :ok, do: state, else: requeue(state, id, item))}
    end
  end

  @impl true
  def handle_info({:DOWN, mon, :process, _pid, _reason}, state) do
    cond do
      Map.has_key?(state.inflight, mon) ->
        {{id, item}, inflight} = Map.pop(state.inflight, mon)
        {:noreply, requeue(%{state | inflight: inflight}, id, item)}

      Map.has_key?(state.waiters, mon) ->
        {id, waiters} = Map.pop(state.waiters, mon)
        state = %{state | waiters: waiters}

        case Map.fetch(state.members, id) do
          {:ok, %{waiter: {_, ^mon}} = member} ->
            member = %{member | waiter: nil, stamp: now()}
            {:noreply, %{state | members: Map.put(state.members, id, member)}}

          _ ->
            {:noreply, state}
        end

      true ->
        {:noreply, state}
    end
  end

  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, state.tick)
    limit = now() - state.timeout

    expired = for {_, %{waiter: nil, stamp: stamp} = m} <- state.members, stamp < limit, do: m

    {:noreply, expired |> Enum.sort_by(& &1.id) |> Enum.reduce(state, &remove(&2, &1))}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # Queues `item` for `id` and delivers it at once when a wait is pending.
  defp enqueue(state, id, item, message? \\ false) do
    member = state.members[id]
    queued = if message?, do: member.queued + 1, else: member.queued

    member = %{
      member
      | queue: :queue.in({item, message?}, member.queue),
        queued: queued
    }

    flush(%{state | members: Map.put(state.members, id, member)}, id)
  end

  defp requeue(state, id, {_, _, _, _} = item) do
    case Map.fetch(state.members, id) do
      {:ok, member} ->
        member = %{member | queue: :queue.in_r({item, false}, member.queue)}
        flush(%{state | members: Map.put(state.members, id, member)}, id)

      :error ->
        state
    end
  end

  defp flush(state, id) do
    member = state.members[id]

    with {pid, mon} <- member.waiter,
         {{:value, {item, message?}}, queue} <- :queue.out(member.queue) do
      send(pid, {:deliver, mon, item})
      queued = if message?, do: member.queued - 1, else: member.queued
      member = %{member | queue: queue, queued: queued, waiter: nil, stamp: now()}

      %{
        state
        | members: Map.put(state.members, id, member),
          waiters: Map.delete(state.waiters, mon),
          inflight: Map.put(state.inflight, mon, {id, item})
      }
    else
      _ -> state
    end
  end

  defp close_waiter(state, %{waiter: nil}), do: state

  defp close_waiter(state, %{id: id, waiter: {pid, mon}} = member) do
    Process.demonitor(mon, [:flush])
    send(pid, :wait_closed)
    member = %{member | waiter: nil}

    %{
      state
      | members: Map.put(state.members, id, member),
        waiters: Map.delete(state.waiters, mon)
    }
  end

  defp remove(state, member) do
    state = close_waiter(state, member)
    state = %{state | members: Map.delete(state.members, member.id)}
    entry = HTTP.entry(member.name, member.id, false)

    state.members
    |> Map.keys()
    |> Enum.sort()
    |> Enum.reduce(state, &enqueue(&2, &1, {"200 OK", "text/plain", &1, entry}))
  end

  defp now, do: System.monotonic_time(:millisecond)
end
