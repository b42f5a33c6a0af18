defmodule Bench do
  @moduledoc false
  # Shared by the benchmark scripts: the machine line, percentiles, scheduler monitoring.

  def header(title, command) do
    IO.puts("# #{title}")
    IO.puts("command: #{command}")
    IO.puts("machine: #{machine()}")
    IO.puts("date: #{DateTime.utc_now() |> DateTime.truncate(:second)}, load average #{load()}")
    IO.puts("")
  end

  def machine do
    {cpu, _} = System.cmd("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])

    commit =
      case System.cmd("git", ["rev-parse", "--short", "HEAD"], stderr_to_stdout: true) do
        {sha, 0} -> String.trim(sha)
        _ -> "unknown"
      end

    "#{String.trim(cpu)}, #{System.schedulers_online()} schedulers, " <>
      "Elixir #{System.version()}, OTP #{System.otp_release()}, webrtc-rs 0.21.1, commit #{commit}"
  end

  @doc "The 1, 5 and 15 minute load averages (other work on the machine skews timings)."
  def load do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split() |> Enum.take(3) |> Enum.join(" ")
      _ -> "unknown"
    end
  end

  def percentile([], _p), do: nil

  def percentile(values, p) do
    sorted = Enum.sort(values)
    idx = round((length(sorted) - 1) * p)
    Enum.at(sorted, idx)
  end

  def summary(values, unit, digits \\ 2) do
    f = fn v -> :erlang.float_to_binary(v / 1, decimals: digits) end

    "p50 #{f.(percentile(values, 0.5))} #{unit}, p90 #{f.(percentile(values, 0.9))} #{unit}, " <>
      "p99 #{f.(percentile(values, 0.99))} #{unit}, min #{f.(Enum.min(values))}, max #{f.(Enum.max(values))} (n=#{length(values)})"
  end

  @doc "Runs `fun` with long_schedule (>= 1 ms) and long_gc monitoring; returns {result, events}."
  def monitored(fun) do
    me = self()

    collector =
      spawn(fn ->
        :erlang.system_monitor(self(), [
          {:long_schedule, 1},
          {:long_gc, 10},
          {:large_heap, 20_000_000}
        ])

        collect(me, [])
      end)

    Process.sleep(10)
    result = fun.()
    send(collector, {:done, self()})

    events =
      receive do
        {:events, events} -> events
      after
        5_000 -> []
      end

    {result, events}
  end

  defp collect(owner, acc) do
    receive do
      {:monitor, pid, kind, info} -> collect(owner, [{kind, pid, info} | acc])
      {:done, ^owner} -> send(owner, {:events, Enum.reverse(acc)})
    end
  end

  def describe_events([]), do: "none"

  def describe_events(events) do
    events
    |> Enum.map(fn {kind, pid, info} ->
      where =
        if is_pid(pid), do: inspect(Process.info(pid, :current_function)), else: inspect(pid)

      "#{kind} #{where} #{inspect(info, limit: 6)}"
    end)
    |> Enum.join("\n  ")
  end

  @doc """
  One line per system_monitor event kind: how many, the longest (long_schedule, long_gc) or
  largest (large_heap), the most frequent schedule-in/out places, and how many
  long_schedule events had a Specter NIF (`Specter.Native`) at schedule-in or -out.
  """
  def summarize_events([]), do: "none"

  def summarize_events(events) do
    events
    |> Enum.group_by(&elem(&1, 0))
    |> Enum.map(fn {kind, evs} -> summarize_kind(kind, Enum.map(evs, &elem(&1, 2))) end)
    |> Enum.join("\n  ")
  end

  defp summarize_kind(:long_schedule, infos) do
    longest = infos |> Enum.map(&Keyword.get(&1, :timeout, 0)) |> Enum.max()

    nif =
      Enum.count(infos, fn i ->
        Enum.any?([i[:in], i[:out]], &match?({Specter.Native, _, _}, &1))
      end)

    places =
      infos
      |> Enum.frequencies_by(&{&1[:in], &1[:out]})
      |> Enum.sort_by(&(-elem(&1, 1)))
      |> Enum.take(3)
      |> Enum.map(fn {{i, o}, n} -> "#{n}x in #{fmt_mfa(i)} out #{fmt_mfa(o)}" end)

    "long_schedule: #{length(infos)} (longest #{longest} ms; #{nif} with a Specter NIF at " <>
      "schedule-in/out; most frequent: #{Enum.join(places, "; ")})"
  end

  defp summarize_kind(:long_gc, infos) do
    longest = infos |> Enum.map(&Keyword.get(&1, :timeout, 0)) |> Enum.max()
    "long_gc: #{length(infos)} (longest #{longest} ms)"
  end

  defp summarize_kind(kind, infos) do
    largest = infos |> Enum.map(&Keyword.get(&1, :heap_size, 0)) |> Enum.max()
    "#{kind}: #{length(infos)} (largest heap #{largest} words)"
  end

  defp fmt_mfa({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp fmt_mfa(other), do: inspect(other)
end
