defmodule Specter.Test.ImpairedLink do
  @moduledoc false
  # A userspace stand-in for `tc qdisc ... netem`: a UDP relay between two sides of a test
  # network that loses, delays and reorders datagrams with a seeded random generator, and
  # can black out completely for a while.
  #
  # Why userspace: the kernel of the project's test hosts has no `sch_netem` (`tc qdisc add
  # ... netem` answers "Specified qdisc kind is unknown"), no loadable modules and no
  # nftables/iptables `statistic` match, so the impairment cannot live in the kernel.
  #
  # How it sits on the path. Each side is an IP address the relay owns (`:a` and `:b`, e.g.
  # 127.0.0.1 facing a peer on loopback and 10.77.0.1 facing a peer across a veth pair).
  # `proxy/3` gives every real endpoint `{ip, port}` of one side a proxy socket on the other
  # side; the signalling rewrites ICE candidates to name the proxies (`rewrite_candidate/3`,
  # `rewrite_sdp/3`), so each peer believes the other is at the relay. A datagram from `x`
  # arriving at `proxy(y)` leaves from `proxy(x)` towards `y`, so both peers always see a
  # consistent source address (a NAT with a fixed mapping) and ICE's checks pair up.
  #
  # Impairment, per direction and per datagram, in arrival order (as netem on the egress of
  # both ends of a veth): dropped with probability `loss`; otherwise delivered after `delay`
  # ms, plus `reorder_extra` ms with probability `reorder` (later datagrams overtake it).
  # `blackout/2` drops every datagram, both ways, for a number of ms. The random draws come
  # from `:rand` seeded with `seed`, so the same arrival sequence gives the same decisions.
  #
  # `stats/1` counts, per direction (`:a_to_b`, `:b_to_a`): datagrams `in`, `lost` (random
  # loss), `blacked_out`, `delivered`, `reordered` (delivered after a datagram that arrived
  # later), `bytes`, and the RTP sequence numbers the link dropped (`dropped_rtp`, SRTP keeps
  # the RTP header in clear) so a test can tell which media packets only a retransmission
  # can have brought.

  use GenServer

  @type side :: :a | :b
  @type endpoint :: {:inet.ip4_address(), :inet.port_number()}

  @defaults [loss: 0.0, delay: 0, reorder: 0.0, reorder_extra: 0, seed: 1]

  ## API

  @doc "Starts a link: `a:` and `b:` are the relay's own addresses on each side."
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  def stop(link), do: GenServer.stop(link)

  @doc "The proxy on the other side for a real endpoint on `side` (created on first use)."
  @spec proxy(pid(), side(), endpoint()) :: endpoint()
  def proxy(link, side, endpoint), do: GenServer.call(link, {:proxy, side, endpoint})

  @doc "Changes the impairment (`loss`, `delay`, `reorder`, `reorder_extra`)."
  def impair(link, opts), do: GenServer.call(link, {:impair, opts})

  @doc "Drops every datagram both ways for `ms` from now."
  def blackout(link, ms), do: GenServer.call(link, {:blackout, ms})

  @doc "The trace of a link started with `trace: true`."
  def trace(link), do: GenServer.call(link, :trace)

  @doc "Counters per direction; `reset: true` zeroes them after reading."
  def stats(link, opts \\ []), do: GenServer.call(link, {:stats, opts[:reset] == true})

  @doc """
  Rewrites a trickled candidate (JSON text or map, as `{:ice_candidate, pc, json}` gives it)
  of a peer on `side` so that it names the proxy; `nil` (end of candidates) passes. Returns
  `{:ok, candidate}` or `:drop` for candidates the link cannot carry (not UDP host IPv4 on
  the side's subnet, e.g. an IPv6 loopback candidate).
  """
  def rewrite_candidate(_link, _side, nil), do: {:ok, nil}

  def rewrite_candidate(link, side, json) when is_binary(json) do
    {:ok, map} = Specter.JSON.decode(json)

    case rewrite_candidate(link, side, map) do
      {:ok, map} -> Specter.JSON.encode(map)
      :drop -> :drop
    end
  end

  def rewrite_candidate(link, side, %{"candidate" => line} = map) do
    case rewrite_line(link, side, line) do
      {:ok, line} -> {:ok, %{map | "candidate" => line}}
      :drop -> :drop
    end
  end

  @doc "Rewrites (or removes) the `a=candidate:` lines of a description's JSON."
  def rewrite_sdp(link, side, json) do
    {:ok, %{"sdp" => sdp} = map} = Specter.JSON.decode(json)

    lines =
      sdp
      |> String.split("\r\n")
      |> Enum.flat_map(fn
        "a=candidate:" <> _ = line ->
          case rewrite_line(link, side, String.trim_leading(line, "a=")) do
            {:ok, line} -> ["a=" <> line]
            :drop -> []
          end

        line ->
          [line]
      end)

    {:ok, json} = Specter.JSON.encode(%{map | "sdp" => Enum.join(lines, "\r\n")})
    json
  end

  defp rewrite_line(link, side, "candidate:" <> rest) do
    case String.split(rest, " ") do
      [foundation, component, "udp" = proto, priority, ip, port, "typ", "host" | tail] ->
        with {:ok, addr} <- :inet.parse_ipv4strict_address(String.to_charlist(ip)),
             {port, ""} <- Integer.parse(port) do
          {pip, pport} = proxy(link, side, {addr, port})
          fields = [foundation, component, proto, priority, ip_string(pip), "#{pport}"]

          {:ok,
           Enum.join(["candidate:" <> hd(fields) | tl(fields)] ++ ["typ", "host" | tail], " ")}
        else
          _ -> :drop
        end

      _ ->
        :drop
    end
  end

  defp rewrite_line(_link, _side, _line), do: :drop

  defp ip_string(ip), do: ip |> :inet.ntoa() |> List.to_string()

  ## Server

  @impl true
  def init(opts) do
    opts = Keyword.merge(@defaults, opts)
    seed = Keyword.fetch!(opts, :seed)

    {:ok,
     %{
       ips: %{a: Keyword.fetch!(opts, :a), b: Keyword.fetch!(opts, :b)},
       params: Map.new(Keyword.take(opts, [:loss, :delay, :reorder, :reorder_extra])),
       rand: :rand.seed_s(:exsss, {seed, seed * 7919 + 1, seed * 104_729 + 2}),
       # real endpoint => proxy socket; socket => %{real:, side: (side of the real endpoint)}
       by_real: %{},
       by_socket: %{},
       blackout_until: nil,
       queue: :gb_trees.empty(),
       timer: nil,
       next_index: 0,
       trace: if(opts[:trace], do: [], else: nil),
       t0: now(),
       delivered_max: %{a_to_b: -1, b_to_a: -1},
       stats: %{a_to_b: empty_stats(), b_to_a: empty_stats()}
     }}
  end

  defp empty_stats,
    do: %{in: 0, lost: 0, blacked_out: 0, delivered: 0, reordered: 0, bytes: 0, dropped_rtp: []}

  @impl true
  def handle_call({:proxy, side, real}, _from, state) do
    {socket, state} = ensure_proxy(state, side, real)
    {:ok, port} = :inet.port(socket)
    {:reply, {state.ips[other(side)], port}, state}
  end

  def handle_call({:impair, opts}, _from, state) do
    {:reply, :ok, %{state | params: Map.merge(state.params, Map.new(opts))}}
  end

  def handle_call({:blackout, ms}, _from, state) do
    {:reply, :ok, %{state | blackout_until: now() + ms}}
  end

  def handle_call(:trace, _from, state), do: {:reply, Enum.reverse(state.trace || []), state}

  def handle_call({:stats, reset?}, _from, state) do
    stats =
      Map.new(state.stats, fn {dir, s} ->
        {dir, %{s | dropped_rtp: Enum.reverse(s.dropped_rtp)}}
      end)

    state =
      if reset?,
        do: %{state | stats: %{a_to_b: empty_stats(), b_to_a: empty_stats()}},
        else: state

    {:reply, stats, state}
  end

  @impl true
  def handle_info({:udp, socket, ip, port, data}, state) do
    case Map.fetch(state.by_socket, socket) do
      {:ok, %{real: to, side: to_side}} ->
        from_side = other(to_side)
        {out, state} = ensure_proxy(state, from_side, {ip, port})
        dir = if from_side == :a, do: :a_to_b, else: :b_to_a
        {:noreply, impair_datagram(state, dir, out, to, data)}

      :error ->
        {:noreply, state}
    end
  end

  def handle_info({:timeout, ref, :deliver}, %{timer: {ref, _}} = state) do
    {:noreply, deliver_due(%{state | timer: nil})}
  end

  def handle_info({:timeout, _stale, :deliver}, state), do: {:noreply, state}

  defp impair_datagram(state, dir, out, to, data) do
    state = bump(state, dir, :in, 1)
    now = now()
    state = trace(state, now, dir, data)

    cond do
      state.blackout_until != nil and now < state.blackout_until ->
        bump(state, dir, :blacked_out, 1)
        |> note_rtp(dir, data)
        |> verdict(now, dir, :blacked_out)

      true ->
        {r1, rand} = :rand.uniform_s(state.rand)
        {r2, rand} = :rand.uniform_s(rand)
        state = %{state | rand: rand}
        p = state.params

        if r1 < p.loss do
          bump(state, dir, :lost, 1) |> note_rtp(dir, data) |> verdict(now, dir, :lost)
        else
          extra = if r2 < p.reorder, do: p.reorder_extra, else: 0
          due = now + p.delay + extra
          index = state.next_index
          queue = :gb_trees.insert({due, index}, {dir, out, to, data}, state.queue)
          schedule(%{state | queue: queue, next_index: index + 1})
        end
    end
  end

  defp deliver_due(state) do
    now = now()

    if :gb_trees.is_empty(state.queue) do
      state
    else
      {{due, index} = key, {dir, out, {ip, port}, data}} = :gb_trees.smallest(state.queue)

      if due <= now do
        queue = :gb_trees.delete(key, state.queue)
        _ = :gen_udp.send(out, ip, port, data)
        max = state.delivered_max[dir]

        state =
          %{state | queue: queue}
          |> bump(dir, :delivered, 1)
          |> bump(dir, :bytes, byte_size(data))
          |> then(&if(index < max, do: bump(&1, dir, :reordered, 1), else: &1))
          |> then(&put_in(&1.delivered_max[dir], Kernel.max(max, index)))

        deliver_due(state)
      else
        schedule(state)
      end
    end
  end

  # One timer, for the earliest datagram due: `timer` is `{ref, due}` or nil.
  defp schedule(state) do
    if :gb_trees.is_empty(state.queue) do
      state
    else
      {{due, _}, _} = :gb_trees.smallest(state.queue)

      case state.timer do
        {_ref, timer_due} when timer_due <= due ->
          state

        timer ->
          if timer, do: :erlang.cancel_timer(elem(timer, 0))
          ref = :erlang.start_timer(due, self(), :deliver, abs: true)
          %{state | timer: {ref, due}}
      end
    end
  end

  # With `trace: true`, what each datagram was (for debugging): `{ms, dir, class}`, the
  # verdict following as `{ms, dir, :lost | :blacked_out}` where it applies.
  defp trace(%{trace: nil} = state, _now, _dir, _data), do: state

  defp trace(state, now, dir, data) do
    %{state | trace: [{now - state.t0, dir, classify(data)} | state.trace]}
  end

  defp verdict(%{trace: nil} = state, _now, _dir, _v), do: state
  defp verdict(state, now, dir, v), do: %{state | trace: [{now - state.t0, dir, v} | state.trace]}

  def classify(<<b, _::binary>>) when b in 0..3, do: :stun
  def classify(<<22, _::16, 0::16, _::48, _::16, type, _::binary>>), do: {:dtls_hs, type}
  def classify(<<22, _::16, epoch::16, _::binary>>), do: {:dtls_hs_enc, epoch}
  def classify(<<20, _::binary>>), do: :dtls_ccs
  def classify(<<21, _::binary>>), do: :dtls_alert
  def classify(<<23, _::binary>> = d), do: {:dtls_app, byte_size(d)}
  def classify(<<b, _::binary>>) when b in 128..191, do: :rtp_rtcp
  def classify(_), do: :other

  # RTP (version 2, payload type outside RTCP's 64..95): remember {ssrc, seq} of a drop.
  defp note_rtp(state, dir, <<2::2, _::7, pt::7, seq::16, _ts::32, ssrc::32, _::binary>>)
       when pt not in 64..95 do
    update_in(state.stats[dir].dropped_rtp, &[{ssrc, seq} | &1])
  end

  defp note_rtp(state, _dir, _data), do: state

  defp bump(state, dir, key, n), do: update_in(state.stats[dir][key], &(&1 + n))

  defp ensure_proxy(state, side, real) do
    case Map.fetch(state.by_real, {side, real}) do
      {:ok, socket} ->
        {socket, state}

      :error ->
        {:ok, socket} =
          :gen_udp.open(0, [
            :binary,
            ip: state.ips[other(side)],
            active: true,
            recbuf: 4 * 1024 * 1024,
            sndbuf: 4 * 1024 * 1024
          ])

        state = %{
          state
          | by_real: Map.put(state.by_real, {side, real}, socket),
            by_socket: Map.put(state.by_socket, socket, %{real: real, side: side})
        }

        {socket, state}
    end
  end

  defp other(:a), do: :b
  defp other(:b), do: :a

  defp now, do: :erlang.monotonic_time(:millisecond)
end
