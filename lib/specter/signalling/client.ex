defmodule Specter.Signalling.Client do
  @moduledoc """
  A client of libwebrtc's peerconnection signalling protocol (`Specter.Signalling.Server`,
  or libwebrtc's own `peerconnection_server`), and a `Specter.Signaller` over it.

  The client signs in under `:peer_name`, keeps a `/wait` long poll open in a linked
  process, keeps the peer list, and reports to its owner (the caller of `start_link/1`
  unless `:owner` says otherwise) as `{:specter_signalling, client, event}`:

    * `{:signed_in, id, peers}` - signed in as `id`; `peers` maps the others' ids to names
    * `{:peer_joined, id, name}` / `{:peer_left, id, name}`
    * `{:message, from, content_type, body}` - a relayed body that is no signalling message
    * `{:signal, from, message}` - a `Specter.Signaller` message while no session is
      registered (see below)
    * `{:disconnected, reason}` - the server is unreachable or forgot us; the client signs
      in again with backoff (`:backoff_min`..`:backoff_max`), under a new id

  Ids are the server's integer ids as strings. `find_peer/2` finds one by name.

  The client exits when its owner does (signing out first), and `sign_out/1` signs out and
  stops it.

  ## As a `Specter.Signaller`

  The signaller is `{Specter.Signalling.Client, client}` (a pid or registered name). A
  session registers under the client's own id or its `:peer_name`; only one session per
  client. Every signalling message that arrives then goes to that session as
  `{:specter_signal, from_id, message}`, and `send_signal/4` sends from this client (its
  `from` argument is not used: the server knows the sender by its id). Messages map to
  libwebrtc's JSON as `Specter.Signalling.Codec` describes. For peers that speak plain
  libwebrtc (no call control):

    * an offer from a peer with no call in progress arrives as `{:control, :init, nil}`
      followed by the `{:sdp, offer}`;
    * an answer from a peer we sent `:init` to, but which never accepted, arrives as
      `{:control, :accept, nil}` followed by the `{:sdp, answer}`;
    * `BYE` arrives as `{:control, :hangup, nil}`; a peer in a call that leaves the server
      arrives as `{:control, :hangup, "peer_left"}`, and when the client loses the server
      every call ends with `{:control, :hangup, "signaller_disconnected"}`.

  ## Options

    * `:peer_name` - the name to sign in with (`"specter"`)
    * `:ip` / `:port` - the server (`{127, 0, 0, 1}`, 8888)
    * `:owner` - the process that gets the events (the caller)
    * `:name` - registers the client process
    * `:request_timeout` - ms for sign-in, send and sign-out requests (5 000)
    * `:wait_timeout` - ms a `/wait` may stay open before it is reissued (120 000)
    * `:reconnect` - sign in again after a failure (`true`); `false` stops the client
    * `:backoff_min` / `:backoff_max` - reconnection delays in ms (100 / 5 000, doubling)
  """

  use GenServer
  @behaviour Specter.Signaller

  alias Specter.Signalling.{Codec, HTTP}

  @typedoc "A client: its pid or registered name."
  @type client() :: GenServer.server()

  @typedoc "A member id on the server, as a string."
  @type id() :: String.t()

  @doc false
  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  # The timeouts and delays are positive integers (ms).
  @timeouts [:request_timeout, :wait_timeout, :backoff_min, :backoff_max]
  @schema [peer_name: [type: :string], ip: [type: :host], port: [type: {:in, 1..65_535}]] ++
            [owner: [type: :pid], name: [type: :name], reconnect: [type: :boolean]] ++
            for(key <- @timeouts, do: {key, [type: :pos_integer]})

  @doc """
  Starts a client and begins signing in (asynchronously: `await_signed_in/2` waits for it).
  See the module documentation for the options (their errors follow `Specter.Options`).
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    with {:ok, opts} <- Specter.Options.validate(opts, @schema) do
      opts = Keyword.put_new(opts, :owner, self())

      case Keyword.fetch(opts, :name) do
        {:ok, name} -> GenServer.start_link(__MODULE__, opts, name: name)
        :error -> GenServer.start_link(__MODULE__, opts)
      end
    end
  end

  @doc "Waits until the client is signed in; returns its id."
  @spec await_signed_in(client(), timeout()) :: {:ok, id()} | {:error, :timeout | :noproc}
  def await_signed_in(client, timeout \\ 5_000), do: call(client, :await, timeout)

  @doc "The client's id, or `{:error, :not_signed_in}`."
  @spec id(client()) :: {:ok, id()} | {:error, :not_signed_in | :noproc}
  def id(client), do: call(client, :id, 5_000)

  @doc "The other members, id to name."
  @spec peers(client()) :: %{id() => String.t()} | {:error, :noproc}
  def peers(client), do: call(client, :peers, 5_000)

  @doc """
  The id of the member named `name` (the lowest id when several share it).
  """
  @spec find_peer(client(), String.t()) :: {:ok, id()} | {:error, :not_found | :noproc}
  def find_peer(client, name), do: call(client, {:find_peer, name}, 5_000)

  @doc """
  Sends a raw body to `to`. Errors: `:not_signed_in`, `:unknown_peer` (the server does not
  know `to`), `:queue_full`, `{:http, status}`, `:timeout` or a socket error.
  """
  @spec send_message(client(), id(), iodata(), String.t()) :: :ok | {:error, term()}
  def send_message(client, to, body, content_type \\ "text/plain"),
    do: call(client, {:send, to, content_type, IO.iodata_to_binary(body)}, :request)

  @doc "Signs out and stops the client."
  @spec sign_out(client()) :: :ok | {:error, term()}
  def sign_out(client), do: call(client, :sign_out, :request)

  @doc """
  `Specter.Signaller` callback: binds the calling session to this client. `peer_id` is the
  client's id or its `:peer_name`. Returns the client's pid (monitor it).
  """
  @impl Specter.Signaller
  @spec register(client(), Specter.Signaller.peer_id(), pid()) :: {:ok, pid()} | {:error, term()}
  def register(client, peer_id, pid) when is_binary(peer_id) and is_pid(pid),
    do: signaller_call(client, {:register, peer_id, pid}, 5_000)

  def register(_client, peer_id, _pid) when not is_binary(peer_id),
    do: {:error, {:invalid_argument, :peer_id}}

  def register(_client, _peer_id, _pid), do: {:error, {:invalid_argument, :pid}}

  @doc """
  `Specter.Signaller` callback: sends `message` to the member `to`, encoded as
  `Specter.Signalling.Codec` describes. Errors as `send_message/4`, plus
  `{:error, :invalid_message}` and `{:error, :signaller_down}`.
  """
  @impl Specter.Signaller
  @spec send_signal(client(), Specter.Signaller.peer_id(), Specter.Signaller.peer_id(), term()) ::
          :ok | {:error, term()}
  def send_signal(client, _from, to, message) do
    case Codec.encode(message) do
      {:ok, _type, _body} when not is_binary(to) -> {:error, {:invalid_argument, :to}}
      {:ok, type, body} -> signaller_call(client, {:signal, to, message, type, body}, :request)
      error -> error
    end
  end

  @doc "`Specter.Signaller` callback: releases the session registered as `peer_id`."
  @impl Specter.Signaller
  @spec unregister(client(), Specter.Signaller.peer_id()) :: :ok
  def unregister(client, peer_id) do
    _ = signaller_call(client, {:unregister, peer_id}, 5_000)
    :ok
  end

  defp signaller_call(client, request, timeout) do
    case call(client, request, timeout) do
      {:error, :noproc} -> {:error, :signaller_down}
      other -> other
    end
  end

  defp call(client, request, :request), do: call(client, request, 15_000)

  defp call(client, request, timeout) do
    GenServer.call(client, request, timeout)
  catch
    :exit, {:timeout, _} -> {:error, :timeout}
    :exit, _ -> {:error, :noproc}
  end

  ## Server side

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    owner = Keyword.fetch!(opts, :owner)

    state = %{
      owner: owner,
      owner_mon: Process.monitor(owner),
      ip: Keyword.get(opts, :ip, {127, 0, 0, 1}),
      port: Keyword.get(opts, :port, 8888),
      peer_name: Keyword.get(opts, :peer_name, "specter"),
      name: nil,
      request_timeout: Keyword.get(opts, :request_timeout, 5_000),
      wait_timeout: Keyword.get(opts, :wait_timeout, 120_000),
      reconnect: Keyword.get(opts, :reconnect, true),
      backoff_min: Keyword.get(opts, :backoff_min, 100),
      backoff_max: Keyword.get(opts, :backoff_max, 5_000),
      backoff: nil,
      id: nil,
      peers: %{},
      poller: nil,
      session: nil,
      calls: %{},
      awaiting: [],
      down_reported: false
    }

    {:ok, state, {:continue, :connect}}
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, connect(state)}

  @impl true
  def handle_call(:await, from, %{id: nil} = state),
    do: {:noreply, %{state | awaiting: [from | state.awaiting]}}

  def handle_call(:await, _from, state), do: {:reply, {:ok, state.id}, state}
  def handle_call(:id, _from, %{id: nil} = state), do: {:reply, {:error, :not_signed_in}, state}
  def handle_call(:id, _from, state), do: {:reply, {:ok, state.id}, state}
  def handle_call(:peers, _from, state), do: {:reply, state.peers, state}

  def handle_call({:find_peer, name}, _from, state) do
    found =
      state.peers
      |> Enum.filter(fn {_id, peer_name} -> peer_name == name end)
      |> Enum.min_by(fn {id, _} -> String.to_integer(id) end, fn -> nil end)

    case found do
      {id, _} -> {:reply, {:ok, id}, state}
      nil -> {:reply, {:error, :not_found}, state}
    end
  end

  def handle_call({:send, to, type, body}, _from, state),
    do: {:reply, post(state, to, type, body), state}

  def handle_call({:signal, to, message, type, body}, _from, state) do
    case post(state, to, type, body) do
      :ok -> {:reply, :ok, %{state | calls: sent(state.calls, to, message)}}
      error -> {:reply, error, state}
    end
  end

  def handle_call({:register, peer_id, pid}, _from, state) do
    cond do
      state.session != nil and elem(state.session, 0) != pid ->
        {:reply, {:error, :already_registered}, state}

      peer_id not in [state.id, state.peer_name, state.name] ->
        {:reply, {:error, :unknown_peer}, state}

      state.session != nil ->
        {:reply, {:ok, self()}, state}

      true ->
        {:reply, {:ok, self()}, %{state | session: {pid, Process.monitor(pid)}}}
    end
  end

  def handle_call({:unregister, _peer_id}, {pid, _}, %{session: {pid, mon}} = state) do
    Process.demonitor(mon, [:flush])
    {:reply, :ok, %{state | session: nil}}
  end

  def handle_call({:unregister, _peer_id}, _from, state), do: {:reply, :ok, state}

  def handle_call(:sign_out, _from, state) do
    state = stop_poller(state)

    result =
      case state.id do
        nil -> :ok
        id -> do_sign_out(state, id)
      end

    {:stop, :normal, result, %{state | id: nil}}
  end

  @impl true
  def handle_info(:connect, state), do: {:noreply, connect(state)}

  def handle_info({:poll, poller, result}, %{poller: poller} = state),
    do: {:noreply, polled(state, result)}

  def handle_info({:poll, _old, _result}, state), do: {:noreply, state}

  def handle_info({:EXIT, poller, reason}, %{poller: poller} = state) do
    state = %{state | poller: nil}
    if reason == :normal, do: {:noreply, state}, else: {:noreply, lost(state, reason)}
  end

  def handle_info({:EXIT, _pid, :normal}, state), do: {:noreply, state}
  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}

  def handle_info({:DOWN, mon, :process, _, _}, %{owner_mon: mon} = state),
    do: {:stop, :normal, state}

  def handle_info({:DOWN, mon, :process, _, _}, %{session: {_, mon}} = state),
    do: {:noreply, %{state | session: nil}}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    state = stop_poller(state)
    if state.id, do: do_sign_out(%{state | request_timeout: 1_000}, state.id)
    :ok
  end

  ## Signing in and out

  defp connect(state) do
    case HTTP.request(state.ip, state.port, "GET", "/sign_in?" <> state.peer_name,
           timeout: state.request_timeout
         ) do
      {:ok, {200, headers, body}} ->
        case HTTP.parse_entries(body) do
          [{id, name, true} | others] when is_map_key(headers, "pragma") ->
            signed_in(state, id, name, others)

          _ ->
            retry(state, {:bad_response, body})
        end

      {:ok, {status, _, _}} ->
        retry(state, {:http, status})

      {:error, reason} ->
        retry(state, reason)
    end
  end

  defp signed_in(state, id, name, others) do
    peers = for {peer, peer_name, true} <- others, into: %{}, do: {peer, peer_name}
    parent = self()
    opts = {state.ip, state.port, id, state.wait_timeout}
    poller = spawn_link(fn -> poll(parent, opts) end)
    Enum.each(state.awaiting, &GenServer.reply(&1, {:ok, id}))
    notify(state, {:signed_in, id, peers})

    %{
      state
      | id: id,
        name: name,
        peers: peers,
        poller: poller,
        awaiting: [],
        backoff: nil,
        down_reported: false
    }
  end

  defp retry(%{reconnect: false} = state, reason) do
    notify(state, {:disconnected, reason})
    exit({:shutdown, reason})
  end

  defp retry(state, reason) do
    state = if state.down_reported, do: state, else: report_down(state, reason)

    delay =
      if state.backoff, do: min(state.backoff * 2, state.backoff_max), else: state.backoff_min

    Process.send_after(self(), :connect, delay + :rand.uniform(max(div(delay, 4), 1)))
    %{state | backoff: delay}
  end

  defp report_down(state, reason) do
    notify(state, {:disconnected, reason})
    %{state | down_reported: true}
  end

  # The long poll failed: the server is gone or no longer knows us. Calls end; sign in again.
  defp lost(state, reason) do
    state = stop_poller(state)

    Enum.each(state.calls, fn {peer, _} ->
      to_session(state, peer, {:control, :hangup, "signaller_disconnected"})
    end)

    state = report_down(%{state | id: nil, peers: %{}, calls: %{}}, reason)

    if state.reconnect do
      Process.send_after(self(), :connect, state.backoff_min)
      %{state | backoff: state.backoff_min}
    else
      exit({:shutdown, reason})
    end
  end

  defp do_sign_out(state, id) do
    case HTTP.request(state.ip, state.port, "GET", "/sign_out?peer_id=" <> id,
           timeout: state.request_timeout
         ) do
      {:ok, {200, _, _}} -> :ok
      {:ok, {500, _, _}} -> :ok
      {:ok, {status, _, _}} -> {:error, {:http, status}}
      {:error, reason} -> {:error, reason}
    end
  end

  defp stop_poller(%{poller: nil} = state), do: state

  defp stop_poller(%{poller: poller} = state) do
    Process.unlink(poller)
    Process.exit(poller, :kill)
    %{state | poller: nil}
  end

  ## The long poll (its own linked process)

  defp poll(parent, {ip, port, id, wait_timeout} = opts) do
    case HTTP.request(ip, port, "GET", "/wait?peer_id=" <> id, timeout: wait_timeout) do
      {:ok, {200, headers, body}} ->
        send(parent, {:poll, self(), {:ok, headers, body}})
        poll(parent, opts)

      {:error, :timeout} ->
        poll(parent, opts)

      {:ok, {500, _, _}} ->
        send(parent, {:poll, self(), {:error, :unknown_peer}})

      {:ok, {status, _, _}} ->
        send(parent, {:poll, self(), {:error, {:http, status}}})

      {:error, reason} ->
        send(parent, {:poll, self(), {:error, reason}})
    end
  end

  defp polled(state, {:error, reason}), do: lost(state, reason)

  defp polled(%{id: id} = state, {:ok, %{"pragma" => id}, body}) do
    body
    |> HTTP.parse_entries()
    |> Enum.reduce(state, fn
      {^id, _, _}, state ->
        state

      {peer, name, true}, state ->
        notify(state, {:peer_joined, peer, name})
        %{state | peers: Map.put(state.peers, peer, name)}

      {peer, name, false}, state ->
        if Map.has_key?(state.calls, peer),
          do: to_session(state, peer, {:control, :hangup, "peer_left"})

        notify(state, {:peer_left, peer, name})
        %{state | peers: Map.delete(state.peers, peer), calls: Map.delete(state.calls, peer)}
    end)
  end

  defp polled(state, {:ok, %{"pragma" => from} = headers, body}) do
    case Codec.decode(body) do
      {:ok, message} ->
        received(state, from, message)

      :error ->
        type = Map.get(headers, "content-type", "text/plain")
        notify(state, {:message, from, type, body})
        state
    end
  end

  # No Pragma: the original server's "Server shutting down"; the next wait will fail.
  defp polled(state, {:ok, _headers, _body}), do: state

  ## Call state per peer, for the messages plain libwebrtc peers never send

  defp received(state, from, message) do
    call = Map.get(state.calls, from)

    case message do
      {:sdp, %{"type" => "offer"}} when call == nil ->
        to_session(state, from, {:control, :init, nil})

      {:sdp, %{"type" => "answer"}} when call == :outgoing ->
        to_session(state, from, {:control, :accept, nil})

      _ ->
        :ok
    end

    to_session(state, from, message)
    %{state | calls: update_call(state.calls, from, message, :received)}
  end

  defp sent(calls, to, message), do: update_call(calls, to, message, :sent)

  defp update_call(calls, peer, message, direction) do
    case {message, direction} do
      {{:control, :init, _}, :sent} ->
        Map.put(calls, peer, :outgoing)

      {{:control, :init, _}, :received} ->
        Map.put(calls, peer, :incoming)

      {{:control, :accept, _}, _} ->
        Map.put(calls, peer, :active)

      {{:control, type, _}, _} when type in [:reject, :hangup] ->
        Map.delete(calls, peer)

      {{:sdp, _}, :sent} ->
        Map.update(calls, peer, :active, &if(&1 == :outgoing, do: &1, else: :active))

      {{:sdp, _}, :received} ->
        Map.put(calls, peer, :active)

      _ ->
        calls
    end
  end

  defp to_session(%{session: {pid, _}}, from, message),
    do: send(pid, {:specter_signal, from, message})

  defp to_session(state, from, message), do: notify(state, {:signal, from, message})

  ## Sending

  defp post(%{id: nil}, _to, _type, _body), do: {:error, :not_signed_in}

  defp post(state, to, type, body) do
    case HTTP.parse_id(to) do
      {:ok, _} ->
        target = "/message?peer_id=" <> state.id <> "&to=" <> to

        case HTTP.request(state.ip, state.port, "POST", target,
               body: body,
               content_type: type,
               timeout: state.request_timeout
             ) do
          {:ok, {200, _, _}} -> :ok
          {:ok, {500, _, _}} -> {:error, :unknown_peer}
          {:ok, {503, _, _}} -> {:error, :queue_full}
          {:ok, {status, _, _}} -> {:error, {:http, status}}
          {:error, reason} -> {:error, reason}
        end

      :error ->
        {:error, :unknown_peer}
    end
  end

  defp notify(state, event), do: send(state.owner, {:specter_signalling, self(), event})
end
