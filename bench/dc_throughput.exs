# Data channel throughput: Elixir process -> Specter -> Specter -> Elixir process, in one VM
# over loopback, next to the pure-Rust baseline (bench/native_baseline: same webrtc-rs, same
# runtime and socket settings, no BEAM), in the same run.
#
#   MIX_ENV=bench mix run bench/dc_throughput.exs [quick]
#
# Ordered, reliable channel. The sender retries on {:error, :buffer_full} after
# {:data_channel_buffered_amount_low, dc}; the receiver runs in {:active, n} mode, topped up
# as it goes, once with one Erlang message per data channel message and once batched.
# Reports MB/s, messages/s, CPU seconds (whole VM), peak RSS, UDP receive-buffer drops and
# scheduler health (long_schedule >= 1 ms).

Code.require_file("bench_support.exs", __DIR__)

alias Specter.{DataChannel, PeerConnection}

quick? = System.argv() == ["quick"]

Bench.header(
  "Data channel throughput#{if quick?, do: " (quick)", else: ""}",
  "MIX_ENV=bench mix run bench/dc_throughput.exs#{if quick?, do: " quick", else: ""}"
)

defmodule Tput do
  @window 2_000

  def cpu_seconds do
    [_, rest] = File.read!("/proc/self/stat") |> String.split(") ", parts: 2)
    fields = String.split(rest)
    (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) / 100
  end

  def status_kib(key) do
    File.read!("/proc/self/status")
    |> String.split("\n")
    |> Enum.find_value(0, fn line ->
      case String.split(line) do
        [^key, v | _] -> String.to_integer(v)
        _ -> nil
      end
    end)
  end

  def udp_rcvbuf_errors do
    [head, vals] =
      File.read!("/proc/net/snmp")
      |> String.split("\n")
      |> Enum.filter(&String.starts_with?(&1, "Udp:"))
      |> Enum.take(2)

    idx = head |> String.split() |> Enum.find_index(&(&1 == "RcvbufErrors"))
    vals |> String.split() |> Enum.at(idx) |> String.to_integer()
  end

  def drain do
    receive do
      _ -> drain()
    after
      0 -> :ok
    end
  end

  # Two connected peers; returns {a, b, dc_a, dc_b, setup_ms}.
  def pair(specter) do
    t0 = System.monotonic_time(:microsecond)
    {:ok, a} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, b} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    {:ok, dc} = DataChannel.create(specter, a, "bulk", active: false)
    :ok = PeerConnection.create_offer(specter, a)
    offer = receive(do: ({:offer, ^a, o} -> o))
    :ok = PeerConnection.set_local_description(specter, a, offer)
    :ok = PeerConnection.set_remote_description(specter, b, offer)
    :ok = PeerConnection.create_answer(specter, b)
    answer = receive(do: ({:answer, ^b, o} -> o))
    :ok = PeerConnection.set_local_description(specter, b, answer)
    :ok = PeerConnection.set_remote_description(specter, a, answer)
    :ok = PeerConnection.await_connected(specter, [a, b], 5_000)
    receive(do: ({:data_channel_open, ^dc} -> :ok), after: (5_000 -> raise "no open"))
    remote = receive(do: ({:data_channel, ^b, r} -> r), after: (5_000 -> raise "no remote"))
    receive(do: ({:data_channel_open, ^remote} -> :ok), after: (5_000 -> raise "no remote open"))
    setup = (System.monotonic_time(:microsecond) - t0) / 1000
    :ok = DataChannel.set_active(specter, remote, false)
    {a, b, dc, remote, setup}
  end

  # The sender owns its connection: it must outlive the transfer, or the connection closes
  # with it.
  def sender(specter, dc, payload, count, parent) do
    send_loop(specter, dc, payload, count)
    send(parent, {:sent, self()})
    Process.sleep(:infinity)
  end

  defp send_loop(_specter, _dc, _payload, 0), do: :ok

  defp send_loop(specter, dc, payload, n) do
    case DataChannel.send(specter, dc, payload) do
      :ok ->
        send_loop(specter, dc, payload, n - 1)

      {:error, :buffer_full} ->
        receive do
          {:data_channel_buffered_amount_low, ^dc} -> :ok
        after
          1_000 -> :ok
        end

        send_loop(specter, dc, payload, n)
    end
  end

  # The receiver runs in {:active, n} mode and tops the count up every n/2 messages (counts
  # add up), so credit never runs out while it keeps pace: the gen_tcp idiom for a
  # high-rate consumer.
  def receiver(specter, dc, total, parent) do
    # A mailbox that grows with a fast sender would make every GC of this process copy it.
    Process.flag(:message_queue_data, :off_heap)
    :ok = DataChannel.set_active(specter, dc, @window)
    t = recv_loop(specter, dc, total, 0, 0, 0)
    send(parent, {:received, self(), t})
    Process.sleep(:infinity)
  end

  defp recv_loop(_specter, _dc, total, got, msgs, _since) when got >= total do
    {System.monotonic_time(:microsecond), got, msgs}
  end

  defp recv_loop(specter, dc, total, got, msgs, since) when since >= div(@window, 2) do
    :ok = DataChannel.set_active(specter, dc, since)
    recv_loop(specter, dc, total, got, msgs, 0)
  end

  defp recv_loop(specter, dc, total, got, msgs, since) do
    receive do
      {:data_channel_messages, ^dc, list} ->
        bytes = Enum.reduce(list, 0, fn {_kind, data}, acc -> acc + byte_size(data) end)
        n = length(list)
        recv_loop(specter, dc, total, got + bytes, msgs + n, since + n)

      {:data_channel_message, ^dc, {_kind, data}} ->
        if System.get_env("GAPS") do
          now = System.monotonic_time(:millisecond)
          last = Process.get(:last, now)

          if now - last > 50,
            do: IO.puts("    gap #{now - last} ms at message #{msgs}, #{got} bytes")

          Process.put(:last, now)
        end

        recv_loop(specter, dc, total, got + byte_size(data), msgs + 1, since + 1)

      {:data_channel_passive, ^dc} ->
        # Only if the top-ups fell behind.
        :ok = DataChannel.set_active(specter, dc, @window)
        recv_loop(specter, dc, total, got, msgs, 0)
    after
      10_000 ->
        raise "receiver stalled at #{got}/#{total} bytes (#{inspect(DataChannel.info(specter, dc))})"
    end
  end

  def run(label, total, size, batch \\ 1) do
    {:ok, specter} = Specter.init()
    {a, b, dc_a, dc_b, setup} = pair(specter)
    :ok = DataChannel.set_batch(specter, dc_b, batch)
    :ok = DataChannel.set_buffered_amount_low_threshold(specter, dc_a, 4 * 1024 * 1024)
    count = div(total, size)
    payload = :binary.copy(<<0xA5>>, size)
    parent = self()

    receiver =
      spawn_link(fn -> receive(do: (:go -> receiver(specter, dc_b, count * size, parent))) end)

    sender =
      spawn_link(fn -> receive(do: (:go -> sender(specter, dc_a, payload, count, parent))) end)

    :ok = PeerConnection.controlling_process(specter, b, receiver)
    :ok = PeerConnection.controlling_process(specter, a, sender)
    drain()

    drops0 = udp_rcvbuf_errors()
    cpu0 = cpu_seconds()

    {{t_end, got, msgs}, events} =
      Bench.monitored(fn ->
        t0 = System.monotonic_time(:microsecond)
        send(receiver, :go)
        send(sender, :go)

        receive do
          {:received, ^receiver, {t_end, got, msgs}} -> {t_end - t0, got, msgs}
        after
          120_000 -> raise "transfer did not finish"
        end
      end)

    cpu = cpu_seconds() - cpu0
    drops = udp_rcvbuf_errors() - drops0
    secs = t_end / 1_000_000

    IO.puts(
      "  #{label}: #{Float.round(got / secs / 1.0e6, 1)} MB/s, #{round(msgs / secs)} msgs/s, " <>
        "#{Float.round(secs, 3)} s, setup #{Float.round(setup, 2)} ms, cpu #{Float.round(cpu, 2)} s " <>
        "(#{Float.round(cpu / secs, 2)} cores), peak RSS #{status_kib("VmHWM:")} KiB, " <>
        "UDP drops #{drops}, long_schedule events #{length(events)} " <>
        "(Specter NIF at in/out: #{nif_events(events)})"
    )

    PeerConnection.close(specter, a)
    PeerConnection.close(specter, b)
    Process.unlink(sender)
    Process.unlink(receiver)
    Process.exit(sender, :kill)
    Process.exit(receiver, :kill)
    drain()
    %{mbps: got / secs / 1.0e6, msgs_per_s: msgs / secs, cpu: cpu}
  end

  defp nif_events(events) do
    Enum.count(events, fn {kind, _pid, info} ->
      kind == :long_schedule and
        Enum.any?([info[:in], info[:out]], &match?({Specter.Native, _, _}, &1))
    end)
  end

  def baseline(args) do
    exe = Path.expand("../native/target/release/native_baseline", __DIR__)

    if File.exists?(exe) do
      {out, 0} = System.cmd(exe, args)
      out = String.trim(out)
      IO.puts("  native_baseline #{Enum.join(args, " ")}: #{out}")
      parse(out)
    else
      IO.puts("  (native_baseline not built)")
      nil
    end
  end

  defp parse(out) do
    get = fn key ->
      case Regex.run(~r/#{Regex.escape(key)}=([\d.]+)/, out) do
        [_, v] -> String.to_float(if String.contains?(v, "."), do: v, else: v <> ".0")
        _ -> nil
      end
    end

    %{mbps: get.("MB/s"), msgs_per_s: get.("msgs/s")}
  end
end

cases =
  if quick? do
    [
      {"16 KiB messages, 32 MiB", 32 * 1024 * 1024, 16_384, ["transfer", "32", "16384"]},
      {"1 KiB messages, 8 MiB", 8 * 1024 * 1024, 1024, ["transfer", "8", "1024"]},
      {"100-byte messages, 100k", 100_000 * 100, 100, ["rate", "100000", "100"]}
    ]
  else
    [
      {"16 KiB messages, 256 MiB", 256 * 1024 * 1024, 16_384, ["transfer", "256", "16384"]},
      {"1 KiB messages, 64 MiB", 64 * 1024 * 1024, 1024, ["transfer", "64", "1024"]},
      {"100-byte messages, 1M", 1_000_000 * 100, 100, ["rate", "1000000", "100"]}
    ]
  end

for {label, total, size, base_args} <- cases do
  IO.puts("## #{label}")
  specter = Tput.run("Specter (Elixir -> Elixir), one message per message", total, size)
  batched = Tput.run("Specter (Elixir -> Elixir), receiver batch: 256", total, size, 256)
  native = Tput.baseline(base_args)

  if native && native.mbps do
    for {name, r} <- [{"one per message", specter}, {"batched", batched}] do
      IO.puts(
        "  Specter #{name} / native: #{Float.round(100 * r.mbps / native.mbps, 1)}% of MB/s, " <>
          "#{Float.round(100 * r.msgs_per_s / native.msgs_per_s, 1)}% of msgs/s"
      )
    end
  end

  IO.puts("")
end
