defmodule Specter.OwnershipTest do
  # Measures process-wide resources (threads, descriptors, runtime tasks): runs alone.
  use ExUnit.Case, async: false

  import Specter.TestSupport
  alias Specter.PeerConnection

  @cycles 200

  defp snapshot, do: %{threads: os_threads(), fds: open_fds(), tasks: runtime_tasks()}

  # One owner process creates two connections, negotiates them to :connected with an open
  # data channel, reports, and is then killed.
  defp negotiate_and_kill(specter) do
    test = self()

    owner =
      spawn(fn ->
        a = new_pc!(specter)
        b = new_pc!(specter)
        connect!(specter, a, b)
        send(test, {:connected, self(), a, b})
        Process.sleep(:infinity)
      end)

    assert_receive {:connected, ^owner, a, b}, 10_000
    ref = Process.monitor(owner)
    Process.exit(owner, :kill)
    assert_receive {:DOWN, ^ref, :process, ^owner, :killed}
    {a, b}
  end

  test "#{@cycles} create -> negotiate -> kill cycles return threads, fds and tasks to baseline" do
    {:ok, specter} = Specter.init()
    # Warm up: the runtime and its workers exist after the first cycle.
    negotiate_and_kill(specter)
    baseline = steady(&snapshot/0)

    pcs =
      for _ <- 1..@cycles do
        negotiate_and_kill(specter)
      end

    # Back to the baseline or below it (other modules' leftovers may end meanwhile).
    assert eventually(
             fn -> Enum.all?(snapshot(), fn {k, v} -> v <= baseline[k] end) end,
             15_000
           ),
           "after #{@cycles} cycles: #{inspect(snapshot())}, baseline #{inspect(baseline)}"

    assert {:ok, %{peer_connections: 0, data_channels: 0}} = Specter.instance_info(specter)

    for {a, b} <- Enum.take(pcs, 5) do
      refute PeerConnection.exists?(specter, a)
      assert {:error, :closed} = PeerConnection.create_offer(specter, b)
    end
  end

  test "dropping the last reference to an instance closes its connections" do
    warm = Specter.init() |> elem(1)
    _ = new_pc!(warm)
    %{tasks: baseline_tasks, fds: baseline_fds} = steady(&snapshot/0)
    test = self()

    holder =
      spawn(fn ->
        {:ok, specter} = Specter.init()
        a = new_pc!(specter)
        b = new_pc!(specter)
        connect!(specter, a, b)
        send(test, {:connected, runtime_tasks()})

        receive do
          :drop -> :ok
        end

        # The process lives on, but no term refers to the instance any more.
        :erlang.garbage_collect()
        send(test, :dropped)
        Process.sleep(:infinity)
      end)

    assert_receive {:connected, busy_tasks}, 10_000
    assert busy_tasks > baseline_tasks
    send(holder, :drop)
    assert_receive :dropped

    assert eventually(fn -> runtime_tasks() <= baseline_tasks and open_fds() <= baseline_fds end),
           "tasks #{runtime_tasks()} (baseline #{baseline_tasks}), fds #{open_fds()} (baseline #{baseline_fds})"

    Process.exit(holder, :kill)
  end
end
