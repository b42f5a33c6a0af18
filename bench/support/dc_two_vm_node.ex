defmodule DcTwoVm.Node do
  @moduledoc false
  # What bench/dc_two_vm.exs runs in each of its two VMs (loaded by binary on the second
  # one: in MIX_ENV=bench, test/support is not compiled).
  #
  # * `answer/2` (the echo VM): answers an offer that carries all its candidates with a new
  #   connection owned by an echo process, which sends every binary message of the channel
  #   the offerer opens straight back, under flow control: `{:active, n}` topped up as it
  #   goes, and on `{:error, :buffer_full}` it stops reading until
  #   `{:data_channel_buffered_amount_low, dc}`.
  # * `origin/4` (the measuring VM): owns the offering connection's channel, receives the
  #   echoes and records their arrival gaps, while a helper process sends.
  # * `snapshot/1`: the VM's CPU time, `Specter.runtime_info/0` and the connection's
  #   `Specter.PeerConnection.get_stats/2` transport figures, for before/after deltas.

  alias Specter.{DataChannel, PeerConnection}

  @window 2_000
  # Gaps between two echoed messages at least this long are stalls (the steady state is
  # tens of microseconds per message).
  @stall_ms 20

  ## The echo VM

  @doc "Starts the VM's instance holder (registered) and returns :ok."
  def start(opts) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, specter} = Specter.init(opts)
        :persistent_term.put({__MODULE__, :specter}, specter)
        send(parent, {:started, self()})
        Process.sleep(:infinity)
      end)

    receive do
      {:started, ^pid} -> :ok
    after
      10_000 -> {:error, :timeout}
    end
  end

  def specter, do: :persistent_term.get({__MODULE__, :specter})

  @doc """
  Answers `offer` from a new connection whose owner echoes the channel the offerer opens;
  returns `{:ok, answer_with_candidates, echo_pid}`.
  """
  def answer(offer, batch) do
    specter = specter()
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
        :ok = await({:peer_connection_ready, pc})
        :ok = PeerConnection.set_remote_description(specter, pc, offer)
        :ok = await({:ok, pc, :set_remote_description})
        :ok = PeerConnection.create_answer(specter, pc)
        {:answer, ^pc, answer} = await_match(fn m -> match?({:answer, ^pc, _}, m) end)
        :ok = PeerConnection.set_local_description(specter, pc, answer)
        :ok = await({:ok, pc, :set_local_description})
        :ok = await({:ice_candidate, pc, nil})
        :ok = PeerConnection.local_description(specter, pc, include_candidates: true)

        {:local_description, ^pc, full} =
          await_match(fn m -> match?({:local_description, ^pc, _}, m) end)

        send(parent, {:answered, self(), full, pc})
        {:data_channel, ^pc, dc} = await_match(fn m -> match?({:data_channel, ^pc, _}, m) end)
        :ok = DataChannel.set_active(specter, dc, false)
        :ok = DataChannel.set_batch(specter, dc, batch)
        :ok = DataChannel.set_active(specter, dc, @window)
        echo(specter, pc, dc, 0)
      end)

    receive do
      {:answered, ^pid, answer, pc} ->
        Process.demonitor(ref, [:flush])
        {:ok, answer, pid, pc}

      {:DOWN, ^ref, :process, ^pid, reason} ->
        {:error, reason}
    after
      10_000 -> {:error, :timeout}
    end
  end

  defp echo(specter, pc, dc, since) when since >= div(@window, 2) do
    :ok = DataChannel.set_active(specter, dc, since)
    echo(specter, pc, dc, 0)
  end

  defp echo(specter, pc, dc, since) do
    receive do
      {:data_channel_message, ^dc, {_kind, data}} ->
        echo_one(specter, dc, data)
        echo(specter, pc, dc, since + 1)

      {:data_channel_messages, ^dc, list} ->
        Enum.each(list, fn {_kind, data} -> echo_one(specter, dc, data) end)
        echo(specter, pc, dc, since + length(list))

      {:data_channel_passive, ^dc} ->
        :ok = DataChannel.set_active(specter, dc, @window)
        echo(specter, pc, dc, 0)

      {:close, from} ->
        PeerConnection.close(specter, pc)
        send(from, {:closed, self()})

      _other ->
        echo(specter, pc, dc, since)
    end
  end

  defp echo_one(specter, dc, data) do
    case DataChannel.send(specter, dc, data) do
      :ok ->
        :ok

      {:error, :buffer_full} ->
        receive do
          {:data_channel_buffered_amount_low, ^dc} -> :ok
        after
          100 -> :ok
        end

        echo_one(specter, dc, data)

      {:error, reason} ->
        exit({:echo_send, reason})
    end
  end

  @doc "Closes the connection of echo process `pid`."
  def close_echo(pid) do
    send(pid, {:close, self()})

    receive do
      {:closed, ^pid} -> :ok
    after
      5_000 -> :timeout
    end
  end

  ## The measuring VM

  @doc """
  Runs in the owner process of `dc`: starts a sender for `count` messages of `size`
  bytes, receives the echoes, and returns `%{us: elapsed, gaps: [...], ...}`.
  """
  def origin(specter, dc, count, size) do
    Process.flag(:message_queue_data, :off_heap)
    me = self()
    payload = :binary.copy(<<0xA5>>, size)
    :ok = DataChannel.set_active(specter, dc, @window)
    t0 = System.monotonic_time(:microsecond)
    sender = spawn_link(fn -> send_loop(specter, dc, payload, count, me) end)
    total = count * size
    result = recv_loop(specter, dc, sender, total, 0, 0, t0, t0, [])
    Process.unlink(sender)
    Process.exit(sender, :kill)
    result
  end

  defp send_loop(_specter, _dc, _payload, 0, parent), do: send(parent, {:sent, self()})

  defp send_loop(specter, dc, payload, n, parent) do
    case DataChannel.send(specter, dc, payload) do
      :ok ->
        send_loop(specter, dc, payload, n - 1, parent)

      {:error, :buffer_full} ->
        receive do
          :buffered_amount_low -> :ok
        after
          100 -> :ok
        end

        send_loop(specter, dc, payload, n, parent)
    end
  end

  defp recv_loop(specter, dc, sender, total, got, since, t0, last, gaps) when got >= total do
    _ = {specter, dc, sender, since}
    t = System.monotonic_time(:microsecond)
    %{us: t - t0, bytes: got, gaps: Enum.reverse(gaps), last_gap_us: t - last}
  end

  defp recv_loop(specter, dc, sender, total, got, since, t0, last, gaps)
       when since >= div(@window, 2) do
    :ok = DataChannel.set_active(specter, dc, since)
    recv_loop(specter, dc, sender, total, got, 0, t0, last, gaps)
  end

  defp recv_loop(specter, dc, sender, total, got, since, t0, last, gaps) do
    receive do
      {:data_channel_message, ^dc, {_kind, data}} ->
        {now, gaps} = gap(last, got, gaps)
        recv_loop(specter, dc, sender, total, got + byte_size(data), since + 1, t0, now, gaps)

      {:data_channel_messages, ^dc, list} ->
        {now, gaps} = gap(last, got, gaps)
        bytes = Enum.reduce(list, 0, fn {_k, d}, acc -> acc + byte_size(d) end)
        n = length(list)
        recv_loop(specter, dc, sender, total, got + bytes, since + n, t0, now, gaps)

      {:data_channel_passive, ^dc} ->
        :ok = DataChannel.set_active(specter, dc, @window)
        recv_loop(specter, dc, sender, total, got, 0, t0, last, gaps)

      {:data_channel_buffered_amount_low, ^dc} ->
        send(sender, :buffered_amount_low)
        recv_loop(specter, dc, sender, total, got, since, t0, last, gaps)

      {:sent, ^sender} ->
        recv_loop(specter, dc, sender, total, got, since, t0, last, gaps)
    after
      30_000 ->
        %{us: :timeout, bytes: got, gaps: Enum.reverse(gaps), info: DataChannel.info(specter, dc)}
    end
  end

  # A stall: {start offset in bytes echoed so far, length in µs}.
  defp gap(last, got, gaps) do
    now = System.monotonic_time(:microsecond)

    if now - last >= @stall_ms * 1000,
      do: {now, [{got, now - last} | gaps]},
      else: {now, gaps}
  end

  ## Both VMs

  @doc "CPU seconds of this OS process, `Specter.runtime_info/0`, and the time."
  def snapshot do
    [_, rest] = File.read!("/proc/self/stat") |> String.split(") ", parts: 2)
    fields = String.split(rest)
    cpu = (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) / 100
    {:ok, rt} = Specter.runtime_info()
    %{cpu: cpu, runtime: rt, at: System.monotonic_time(:microsecond)}
  end

  defp await(msg), do: await_match(&(&1 == msg)) && :ok

  defp await_match(pred) do
    receive do
      m -> if pred.(m), do: m, else: await_match(pred)
    after
      10_000 -> exit(:timeout)
    end
  end
end
