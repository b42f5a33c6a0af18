defmodule RoomRelay.Node do
  @moduledoc false
  # The agent bench/room_relay.exs runs on each :peer node (loaded there by binary: in
  # MIX_ENV=bench, test/support is not compiled). It holds the node's `Specter.init/1`
  # instance, starts rooms and participants for the bench (linked to the agent, not to a
  # short-lived :erpc process), and runs the paced publisher and the measuring receiver,
  # which must live on the node that owns the tracks.
  use GenServer

  @magic "RBEN"
  # Latency histogram: 1 µs buckets below 10 ms, 100 µs buckets from 10 ms to 1 s.
  @fine 10_000
  @coarse 9_900
  @buckets @fine + @coarse + 1

  def start, do: GenServer.start(__MODULE__, [], name: __MODULE__)

  def call(node, request), do: GenServer.call({__MODULE__, node}, request, 30_000)

  @impl true
  def init(_) do
    Process.flag(:trap_exit, true)
    {:ok, specter} = Specter.init()
    {:ok, %{specter: specter, monitor: nil}}
  end

  @impl true
  def handle_call({:start, module, opts}, _from, s),
    do: {:reply, module.start_link([specter: s.specter] ++ opts), s}

  def handle_call({:apply, m, f, args}, _from, s),
    do: {:reply, Kernel.apply(m, f, [s.specter | args]), s}

  def handle_call({:publisher, track}, _from, s) do
    specter = s.specter
    {:reply, {:ok, spawn_link(fn -> publisher(specter, track) end)}, s}
  end

  def handle_call({:receiver, track}, _from, s) do
    specter = s.specter
    me = self()
    pid = spawn_link(fn -> receiver(specter, track, me) end)

    receive do
      {:relaying, ^pid, result} -> {:reply, {result, pid}, s}
    after
      5_000 -> {:reply, {{:error, :timeout}, pid}, s}
    end
  end

  # Packets the senders of a connection refused (full queues), summed.
  def handle_call({:senders_dropped, pc}, _from, s) do
    :ok = Specter.PeerConnection.get_senders(s.specter, pc)

    receive do
      {:senders, ^pc, senders} -> {:reply, Enum.sum(Enum.map(senders, & &1.dropped)), s}
    after
      5_000 -> {:reply, 0, s}
    end
  end

  def handle_call(:monitor_start, _from, s) do
    pid = spawn_link(fn -> monitor() end)
    {:reply, :ok, %{s | monitor: pid}}
  end

  def handle_call(:monitor_stop, _from, %{monitor: pid} = s) when is_pid(pid) do
    send(pid, {:done, self()})

    receive do
      {:events, ^pid, events} -> {:reply, events, %{s | monitor: nil}}
    after
      5_000 -> {:reply, [], %{s | monitor: nil}}
    end
  end

  def handle_call(:monitor_stop, _from, s), do: {:reply, [], s}

  @impl true
  def handle_info(_message, s), do: {:noreply, s}

  ## System monitor (long_schedule / long_gc / large_heap), as Bench.monitored/1 on node a.

  defp monitor do
    :erlang.system_monitor(self(), [
      {:long_schedule, 1},
      {:long_gc, 10},
      {:large_heap, 20_000_000}
    ])

    monitor_loop([])
  end

  defp monitor_loop(acc) do
    receive do
      {:monitor, pid, kind, info} ->
        where =
          if is_pid(pid), do: inspect(Process.info(pid, :current_function)), else: inspect(pid)

        timeout = if is_list(info), do: Keyword.get(info, :timeout)
        monitor_loop([{kind, where, timeout} | acc])

      {:done, from} ->
        :erlang.system_monitor(:undefined)
        send(from, {:events, self(), Enum.reverse(acc)})
    end
  end

  ## Publisher: VP8-shaped RTP packets with (run, sequence, send time) in the payload.

  @doc false
  def packet(rtp_seq, run, seq, pad) do
    now = :os.system_time(:nanosecond)
    keyframe = if rem(seq, 30) == 0, do: 0, else: 1
    ts = rem(div(now, 11_111), 4_294_967_296)

    <<2::2, 0::1, 0::1, 0::4, 1::1, 96::7, rtp_seq::16, ts::32, 0x5EC7::32, 0x10, keyframe, 0x9D,
      0x01, 0x2A, @magic, run::16, seq::32, now::64, pad::binary>>
  end

  defp publisher(specter, track) do
    # 1200-byte payload: 5 bytes of VP8 descriptor and header, 18 of ours, padding.
    pad = :binary.copy(<<0>>, 1200 - 5 - 18)
    publisher_idle(%{specter: specter, track: track, pad: pad, rtp_seq: 0})
  end

  defp publisher_idle(s) do
    receive do
      {:run, from, run, rate, duration_ms, tick_ms} ->
        t0 = System.monotonic_time(:microsecond)
        r = %{from: from, run: run, rate: rate, dur_us: duration_ms * 1000, tick: tick_ms}
        publish(s, r, t0, 0, 0)

      :stop ->
        :ok
    end
  end

  defp publish(s, r, t0, sent, errors) do
    elapsed = System.monotonic_time(:microsecond) - t0

    if elapsed >= r.dur_us do
      send(r.from, {:published, r.run, %{sent: sent, errors: errors, elapsed_us: elapsed}})
      publisher_idle(s)
    else
      target = min(div(r.rate * elapsed, 1_000_000) + 1, div(r.rate * r.dur_us, 1_000_000))
      {s, sent, errors} = write(s, r.run, sent, target, errors)

      receive do
        :stop -> :ok
      after
        r.tick -> publish(s, r, t0, sent, errors)
      end
    end
  end

  defp write(s, _run, sent, target, errors) when sent >= target, do: {s, sent, errors}

  defp write(s, run, sent, target, errors) do
    p = packet(rem(s.rtp_seq, 65_536), run, sent, s.pad)
    s = %{s | rtp_seq: s.rtp_seq + 1}

    case Specter.TrackLocalStaticRTP.write_rtp(s.specter, s.track, p) do
      :ok -> write(s, run, sent + 1, target, errors)
      {:error, _} -> write(s, run, sent + 1, target, errors + 1)
    end
  end

  ## Receiver: every packet of the subscriber's remote track (TrackRemote.relay/3).

  defp receiver(specter, track, agent) do
    result = Specter.TrackRemote.relay(specter, track, self())
    send(agent, {:relaying, self(), result})
    receiver_loop(%{run: nil})
  end

  defp receiver_loop(s) do
    receive do
      {:rtp, _track, packet} ->
        receiver_loop(on_packet(s, packet, :os.system_time(:nanosecond)))

      {:begin, from, run, expected} ->
        size = expected + 1_000

        s = %{
          run: run,
          size: size,
          seen: :atomics.new(size, []),
          hist: :counters.new(@buckets, [:write_concurrency]),
          unique: 0,
          duplicates: 0,
          other: 0,
          bytes: 0,
          max_ns: 0,
          sum_ns: 0
        }

        send(from, {:begun, run})
        receiver_loop(s)

      {:report, from} ->
        send(from, {:report, report(s)})
        receiver_loop(s)

      :stop ->
        :ok
    end
  end

  defp on_packet(%{run: nil} = s, _packet, _now), do: s

  defp on_packet(s, packet, now) do
    scope = {0, min(byte_size(packet), 128)}

    with {at, 4} <- :binary.match(packet, @magic, scope: scope),
         <<_::binary-size(at + 4), run::16, seq::32, sent::64, _::binary>> <- packet,
         true <- run == s.run and seq < s.size do
      if :atomics.exchange(s.seen, seq + 1, 1) == 0 do
        lat = max(now - sent, 0)
        :counters.add(s.hist, bucket(div(lat, 1000)), 1)

        %{
          s
          | unique: s.unique + 1,
            bytes: s.bytes + byte_size(packet),
            max_ns: max(s.max_ns, lat),
            sum_ns: s.sum_ns + lat
        }
      else
        %{s | duplicates: s.duplicates + 1}
      end
    else
      _ -> %{s | other: s.other + 1}
    end
  end

  defp bucket(us) when us < @fine, do: us + 1
  defp bucket(us), do: @fine + min(div(us - @fine, 100), @coarse) + 1

  defp bucket_us(i) when i <= @fine, do: i - 1
  defp bucket_us(i), do: @fine + (i - @fine - 1) * 100

  defp report(%{run: nil}), do: nil

  defp report(s) do
    %{
      run: s.run,
      received: s.unique,
      duplicates: s.duplicates,
      other: s.other,
      bytes: s.bytes,
      p50_us: percentile(s, 0.5),
      p99_us: percentile(s, 0.99),
      max_us: div(s.max_ns, 1000),
      mean_us: if(s.unique > 0, do: s.sum_ns / s.unique / 1000, else: nil)
    }
  end

  defp percentile(%{unique: 0}, _p), do: nil

  defp percentile(s, p) do
    rank = max(ceil(s.unique * p), 1)
    find(s.hist, 1, rank, 0)
  end

  defp find(hist, i, rank, acc) do
    acc = acc + :counters.get(hist, i)
    if acc >= rank or i >= @buckets, do: bucket_us(i), else: find(hist, i + 1, rank, acc)
  end
end
