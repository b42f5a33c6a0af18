defmodule Specter.Room do
  @moduledoc """
  A selective forwarding room: every participant's audio, video and data-channel messages
  reach every other participant. Topology and policy live in this process; the NIF moves
  the packets.

  Participants join through a signalling server (`Specter.Signalling.Server`, or
  libwebrtc's own): the room signs in under `:peer_name` (`"room:" <> name`) and a
  participant — a browser, or `Specter.Room.Participant` — sends it an offer with the
  tracks it publishes and a data channel. For each participant the room starts a
  `Specter.Room.Peer` (linked: the room traps exits) that owns its connection. Then:

    * each track a participant publishes becomes a **publication**, forwarded natively
      (`Specter.TrackRemote.forward/3`) to a `Specter.TrackLocalStaticRTP` of its own on
      every other participant's connection, added by renegotiation; subscribers' keyframe
      requests reach the publisher (merged, at most one PLI per 250 ms);
    * a message on a participant's data channel goes to every other participant's channel
      as is;
    * a participant that hangs up, signs out, fails or crashes is removed alone: its
      publications end (their senders are removed from the others by renegotiation) and
      nobody else is touched. A slow participant loses what its own queues cannot hold
      (media packets in the NIF, data-channel messages here, counted), never anyone
      else's.

  ## Across nodes

  With `cluster: true` the room registers locally and links with the rooms of the same
  name on every connected node (`Node.list/0`, and nodes that connect later). Rooms tell
  each other their publications; a node whose participants subscribe to a publication of
  another node imports it once (`Specter.Room.Relay`): the packets cross the distribution
  link into one local track on the subscribing node, which all its subscribers are sent.
  Data-channel messages are relayed to the other rooms, which deliver them to their own
  participants. Keyframe requests travel back. When a node goes away, its publications end
  on the others, so their subscribers see those tracks removed.

  ## Events

  `:subscriber` (and `subscribe/2`) receive `{:specter_room, room, event}`:

    * `{:peer_joined, id, name}`, `{:peer_left, id, reason}`
    * `{:published, publication}` (`t:publication_t/0`), `{:unpublished, pub_id, reason}`
    * `{:room_joined, node}`, `{:room_left, node}`

  ## Example

      iex> {:ok, server} = Specter.Signalling.Server.start_link(port: 0)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, room} = Specter.Room.start_link(specter: specter, name: "doc", port: Specter.Signalling.Server.port(server))
      iex> Specter.Room.peers(room)
      []
  """

  use GenServer

  alias Specter.{PeerConnection, TrackLocalStaticRTP, TrackRemote}
  alias Specter.Room.{Peer, Relay}
  alias Specter.Signalling.Client

  @typedoc "A room process."
  @type t() :: GenServer.server()

  @typedoc """
  A publication: a track a participant publishes. `id` is its remote track's id on the
  node it is published on; `publisher` the participant's name (the `stream_id` of the
  track the others receive, whose `track_id` is `id`); `node` where it is published.
  """
  @type publication_t() :: %{
          id: String.t(),
          publisher: String.t(),
          kind: :audio | :video | :unspecified,
          codec: map() | nil,
          node: node()
        }

  @schema [
    specter: [type: {:struct, Specter}, required: true],
    name: [type: :string, required: true],
    peer_name: [type: :string],
    port: [type: {:in, 1..65_535}],
    ip: [type: :host],
    cluster: [type: :boolean, default: false],
    subscriber: [type: {:or, [nil, :pid]}]
  ]

  @doc """
  Starts a room. Options: `:specter` and `:name` (required), `:port` and `:ip` of the
  signalling server (8888, `{127, 0, 0, 1}`), `:peer_name` to sign in under
  (`"room:" <> name`), `:cluster` (`false`), `:subscriber`. Errors follow
  `Specter.Options`.

      iex> Specter.Room.start_link(name: "x")
      {:error, {:missing_option, :specter}}
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    with {:ok, opts} <- Specter.Options.validate(opts, @schema),
         do: GenServer.start_link(__MODULE__, opts)
  end

  @doc """
  The participants connected to this room process (this node's), as
  `%{id: id, name: name, pid: peer_process}`.
  """
  @spec peers(t()) :: [%{id: String.t(), name: String.t(), pid: pid()}]
  def peers(room), do: GenServer.call(room, :peers)

  @doc "Every publication the room knows, this node's and the other nodes'."
  @spec publications(t()) :: [publication_t()]
  def publications(room), do: GenServer.call(room, :publications)

  @doc """
  Counters and links: `nodes` (the linked rooms' nodes), `imports` (publications of other
  nodes imported here), `exports` (relays of this node's publications to others),
  `data_relayed` (messages handed to this node's participants; what each lost is in
  `Specter.Room.Peer.info/1`).
  """
  @spec info(t()) :: map()
  def info(room), do: GenServer.call(room, :info)

  @doc "Sends the room's events to `pid` (monitored)."
  @spec subscribe(t(), pid()) :: :ok
  def subscribe(room, pid \\ self()), do: GenServer.call(room, {:subscribe, pid})

  @doc """
  The name a room registers under on its node when `cluster: true`.

      iex> Specter.Room.registered_name("lobby")
      :"specter_room:lobby"
  """
  @spec registered_name(String.t()) :: atom()
  def registered_name(name) when is_binary(name), do: String.to_atom("specter_room:" <> name)

  ## Server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    specter = opts[:specter]
    name = opts[:name]

    client_opts = [peer_name: Keyword.get(opts, :peer_name, "room:" <> name)]
    client_opts = client_opts ++ Keyword.take(opts, [:port, :ip])

    with {:ok, client} <- Client.start_link(client_opts),
         {:ok, _id} <- Client.await_signed_in(client, 5_000) do
      cluster = opts[:cluster]

      s = %{
        specter: specter,
        name: name,
        api: PeerConnection.default_api!(specter),
        client: client,
        cluster: cluster,
        subscribers: %{},
        # id => %{pid, name}
        peers: %{},
        by_pid: %{},
        # pub_id => publication (plus :track, :peer_id, :room)
        pubs: %{},
        # {pub_id, peer_id} => local track (this node's publications) | :import
        subs: %{},
        # pub_id => %{pid, local}
        imports: %{},
        # exporter pid => pub_id
        exports: %{},
        # room pid => %{node, mon}
        rooms: %{},
        counters: %{data_relayed: 0}
      }

      s = if opts[:subscriber], do: add_subscriber(s, opts[:subscriber]), else: s

      if cluster do
        Process.register(self(), registered_name(name))
        :ok = :net_kernel.monitor_nodes(true)
        for n <- Node.list(), do: hello(s, n, true)
      end

      {:ok, s}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:peers, _from, s) do
    {:reply, for({id, p} <- s.peers, do: %{id: id, name: p.name, pid: p.pid}), s}
  end

  def handle_call(:publications, _from, s),
    do: {:reply, Enum.map(Map.values(s.pubs), &public/1), s}

  def handle_call(:info, _from, s) do
    info =
      Map.merge(s.counters, %{
        name: s.name,
        peers: map_size(s.peers),
        publications: map_size(s.pubs),
        nodes: for({_, r} <- s.rooms, do: r.node),
        imports: map_size(s.imports),
        exports: map_size(s.exports)
      })

    {:reply, info, s}
  end

  def handle_call({:subscribe, pid}, _from, s), do: {:reply, :ok, add_subscriber(s, pid)}

  ## Signalling

  @impl true
  def handle_info({:specter_signalling, client, event}, %{client: client} = s),
    do: {:noreply, on_signalling(s, event)}

  ## The participants' processes

  def handle_info({:room_peer, pid, event}, s) do
    case Map.fetch(s.by_pid, pid) do
      {:ok, id} -> {:noreply, on_peer(s, id, event)}
      :error -> {:noreply, s}
    end
  end

  def handle_info({:EXIT, pid, reason}, s) do
    cond do
      Map.has_key?(s.by_pid, pid) ->
        {:noreply, peer_gone(s, Map.fetch!(s.by_pid, pid), reason)}

      Map.has_key?(s.exports, pid) ->
        {:noreply, %{s | exports: Map.delete(s.exports, pid)}}

      pub_id = import_of(s, pid) ->
        s = %{s | imports: Map.delete(s.imports, pub_id)}
        {:noreply, unpublish(s, pub_id, {:relay_down, reason})}

      pid == s.client ->
        {:stop, {:shutdown, {:signalling, reason}}, s}

      true ->
        {:noreply, s}
    end
  end

  ## The other nodes' rooms

  def handle_info({:nodeup, node}, s) do
    hello(s, node, true)
    {:noreply, s}
  end

  def handle_info({:nodedown, _node}, s), do: {:noreply, s}

  def handle_info({:room_hello, pid, name, pubs, reply?}, %{name: name} = s) do
    s =
      if Map.has_key?(s.rooms, pid) do
        s
      else
        if reply?, do: hello(s, node(pid), false)
        emit(s, {:room_joined, node(pid)})
        put_in(s.rooms[pid], %{node: node(pid), mon: Process.monitor(pid)})
      end

    {:noreply, Enum.reduce(pubs, s, &add_remote_pub(&2, pid, &1))}
  end

  def handle_info({:room_published, pid, pub}, s) do
    if Map.has_key?(s.rooms, pid),
      do: {:noreply, add_remote_pub(s, pid, pub)},
      else: {:noreply, s}
  end

  def handle_info({:room_unpublished, _pid, pub_id}, s),
    do: {:noreply, unpublish(s, pub_id, :unpublished)}

  def handle_info({:room_export, pub_id, importer}, s) do
    case s.pubs do
      %{^pub_id => %{track: track}} when is_binary(track) ->
        {:ok, exporter} = Relay.start_exporter(s.specter, pub_id, track, importer)
        {:noreply, put_in(s.exports[exporter], pub_id)}

      _ ->
        send(importer, {:relay_refused, pub_id})
        {:noreply, s}
    end
  end

  def handle_info({:room_data, pid, message}, s) do
    if Map.has_key?(s.rooms, pid),
      do: {:noreply, deliver(s, nil, message)},
      else: {:noreply, s}
  end

  def handle_info({:DOWN, ref, :process, pid, reason}, s) do
    cond do
      match?(%{^pid => %{mon: ^ref}}, s.rooms) ->
        %{node: node} = s.rooms[pid]
        s = %{s | rooms: Map.delete(s.rooms, pid)}

        gone = for {id, %{room: ^pid}} <- s.pubs, do: id
        s = Enum.reduce(gone, s, &unpublish(&2, &1, {:room_down, reason}))
        emit(s, {:room_left, node})
        {:noreply, s}

      match?(%{^pid => ^ref}, s.subscribers) ->
        {:noreply, %{s | subscribers: Map.delete(s.subscribers, pid)}}

      true ->
        {:noreply, s}
    end
  end

  def handle_info({:close_track, local}, s) do
    _ = TrackLocalStaticRTP.close(s.specter, local)
    {:noreply, s}
  end

  def handle_info(_message, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    for {pid, _} <- s.exports, do: send(pid, :stop)
    for {_, p} <- s.peers, do: Process.exit(p.pid, :shutdown)
    _ = Client.sign_out(s.client)
    :ok
  end

  ## Participants

  defp on_signalling(s, {:signal, from, message}) do
    case {Map.fetch(s.peers, from), message} do
      {{:ok, peer}, {:control, :hangup, _}} ->
        Process.exit(peer.pid, :shutdown)
        s

      {{:ok, peer}, message} ->
        Peer.signal(peer.pid, message)
        s

      {:error, {:sdp, %{"type" => "offer"}}} ->
        s |> join(from) |> on_signalling({:signal, from, message})

      _ ->
        s
    end
  end

  defp on_signalling(s, {:peer_left, id, _name}) do
    case Map.fetch(s.peers, id) do
      {:ok, peer} -> Process.exit(peer.pid, :shutdown)
      :error -> :ok
    end

    s
  end

  defp on_signalling(s, _event), do: s

  defp join(s, id) do
    name = Map.get(Client.peers(s.client), id, id)
    config = %{room: self(), specter: s.specter, api: s.api, client: s.client, id: id}

    case Peer.start_link(config) do
      {:ok, pid} ->
        s = %{s | peers: Map.put(s.peers, id, %{pid: pid, name: name})}
        s = put_in(s.by_pid[pid], id)
        emit(s, {:peer_joined, id, name})
        # Everything already published goes to the newcomer once its own offer is answered.
        Enum.reduce(Map.values(s.pubs), s, &subscribe_peer(&2, id, &1))

      {:error, _} ->
        s
    end
  end

  defp on_peer(s, id, {:track, track, info}) do
    pub = %{
      id: track,
      publisher: s.peers[id].name,
      kind: info.kind,
      codec: info.codec,
      node: node(),
      track: track,
      peer_id: id,
      room: self()
    }

    s = %{s | pubs: Map.put(s.pubs, track, pub)}
    emit(s, {:published, public(pub)})
    for {pid, _} <- s.rooms, do: send(pid, {:room_published, self(), public(pub)})
    Enum.reduce(Map.keys(s.peers), s, &subscribe_peer(&2, &1, pub))
  end

  defp on_peer(s, _id, {:track_ended, track}), do: unpublish(s, track, :track_ended)

  defp on_peer(s, id, {:data, message}) do
    for {pid, _} <- s.rooms, do: send(pid, {:room_data, self(), message})
    deliver(s, id, message)
  end

  defp on_peer(s, _id, {:keyframe_request, pub_id}) do
    case s.imports do
      %{^pub_id => %{pid: importer}} -> Relay.keyframe_request(importer)
      _ -> :ok
    end

    s
  end

  defp on_peer(s, _id, _event), do: s

  defp deliver(s, from_id, message) do
    Enum.reduce(s.peers, s, fn
      {^from_id, _}, s ->
        s

      {_id, peer}, s ->
        Peer.send_data(peer.pid, message)
        update_in(s.counters.data_relayed, &(&1 + 1))
    end)
  end

  defp peer_gone(s, id, reason) do
    # Whatever ended it on this side, the participant hears it (a no-op when it left).
    _ = Client.send_signal(s.client, nil, id, {:control, :hangup, hangup_reason(reason)})
    s = %{s | peers: Map.delete(s.peers, id), by_pid: Map.reject(s.by_pid, &(elem(&1, 1) == id))}

    own = for {pub_id, %{peer_id: ^id}} <- s.pubs, do: pub_id
    s = Enum.reduce(own, s, &unpublish(&2, &1, :peer_left))

    # What it was sent.
    {mine, subs} = Enum.split_with(s.subs, fn {{_pub, peer}, _} -> peer == id end)

    for {{pub_id, _}, local} <- mine, local != :import do
      close_forward(s, pub_id, local)
    end

    s = %{s | subs: Map.new(subs)}
    emit(s, {:peer_left, id, reason})
    s
  end

  ## Publications

  defp subscribe_peer(s, peer_id, %{peer_id: peer_id}), do: s

  defp subscribe_peer(s, peer_id, pub) do
    with %{pid: peer_pid} <- s.peers[peer_id],
         false <- Map.has_key?(s.subs, {pub.id, peer_id}),
         {:ok, s, local, kind} <- local_for(s, pub) do
      Peer.subscribe(peer_pid, pub.id, local)
      if kind == :forward, do: _ = TrackRemote.forward(s.specter, pub.track, local)
      put_in(s.subs[{pub.id, peer_id}], if(kind == :forward, do: local, else: :import))
    else
      _ -> s
    end
  end

  # This node's publication: a local track of its own for the subscriber.
  defp local_for(s, %{track: track} = pub) when is_binary(track) do
    with {:ok, codec} <- Relay.codec(pub.codec),
         {:ok, local} <- TrackLocalStaticRTP.new(s.specter, codec, pub.id, pub.publisher) do
      {:ok, s, local, :forward}
    end
  end

  # Another node's: its one import here.
  defp local_for(s, pub) do
    case s.imports do
      %{} = imports when is_map_key(imports, pub.id) ->
        {:ok, s, imports[pub.id].local, :import}

      _ ->
        with {:ok, pid, local} <- Relay.start_importer(s.specter, pub, pub.room) do
          {:ok, put_in(s.imports[pub.id], %{pid: pid, local: local}), local, :import}
        end
    end
  end

  defp add_remote_pub(s, room, pub) do
    if Map.has_key?(s.pubs, pub.id) do
      s
    else
      pub = Map.merge(pub, %{track: nil, peer_id: nil, room: room})
      s = %{s | pubs: Map.put(s.pubs, pub.id, pub)}
      emit(s, {:published, public(pub)})
      Enum.reduce(Map.keys(s.peers), s, &subscribe_peer(&2, &1, pub))
    end
  end

  defp unpublish(s, pub_id, reason) do
    case Map.pop(s.pubs, pub_id) do
      {nil, _} ->
        s

      {pub, pubs} ->
        s = %{s | pubs: pubs}
        {gone, subs} = Enum.split_with(s.subs, fn {{p, _}, _} -> p == pub_id end)

        for {{_, peer_id}, local} <- gone do
          with %{pid: pid} <- s.peers[peer_id], do: Peer.unsubscribe(pid, pub_id)
          if local != :import, do: close_forward(s, pub_id, local)
        end

        s = %{s | subs: Map.new(subs)}

        s =
          case Map.pop(s.imports, pub_id) do
            {nil, _} ->
              s

            {%{pid: pid}, imports} ->
              Process.unlink(pid)
              send(pid, :stop)
              %{s | imports: imports}
          end

        if pub.node == node(),
          do: for({pid, _} <- s.rooms, do: send(pid, {:room_unpublished, self(), pub_id}))

        emit(s, {:unpublished, pub_id, reason})
        s
    end
  end

  defp hangup_reason(:normal), do: "closed"
  defp hangup_reason(:shutdown), do: "left"
  defp hangup_reason(reason), do: inspect(reason)

  defp close_forward(s, pub_id, local) do
    _ = TrackRemote.unforward(s.specter, pub_id, local)
    # The sender goes first (renegotiation), then the track.
    Process.send_after(self(), {:close_track, local}, 5_000)
    :ok
  end

  defp import_of(s, pid) do
    Enum.find_value(s.imports, fn {pub_id, i} -> if i.pid == pid, do: pub_id end)
  end

  defp hello(s, node, reply?) do
    local = for {_, %{node: n} = pub} <- s.pubs, n == node(), do: public(pub)
    send({registered_name(s.name), node}, {:room_hello, self(), s.name, local, reply?})
  end

  defp public(pub), do: Map.take(pub, [:id, :publisher, :kind, :codec, :node])

  defp add_subscriber(s, pid) do
    if Map.has_key?(s.subscribers, pid),
      do: s,
      else: %{s | subscribers: Map.put(s.subscribers, pid, Process.monitor(pid))}
  end

  defp emit(s, event) do
    for pid <- Map.keys(s.subscribers), do: send(pid, {:specter_room, self(), event})
    :ok
  end
end
