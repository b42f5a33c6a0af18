defmodule Specter.RemoteVM do
  @moduledoc false
  # A second BEAM OS process running Specter, for tests where a connection's remote side
  # dies. Started with OTP's `:peer` over `connection: :standard_io` (no distribution, no
  # epmd): the test talks to it with `:peer.call/5` only. On the peer, one process owns an
  # instance and one answering connection; it echoes text data channel messages back as
  # "echo: <text>" and logs its connection's events.
  #
  # `start!/0` returns `{peer, os_pid}`; kill the OS process with `kill_9!/1` or halt the
  # VM with `halt/1`. The peer is not linked to the caller, so its death is not the test's.

  alias Specter.{DataChannel, PeerConnection}

  @server :specter_remote_vm

  @doc "Starts the peer VM with this VM's code path; returns `{peer, os_pid_string}`."
  def start! do
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _node} = :peer.start(%{connection: :standard_io, args: paths})
    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:specter], 30_000)
    os_pid = :peer.call(peer, :os, :getpid, []) |> List.to_string()
    {peer, os_pid}
  end

  @doc """
  Runs on the peer: answers `offer_json` (an offer carrying all its candidates) from a new
  connection on a new instance with `opts`, and returns the answer with all its candidates.
  """
  def answer(offer_json, opts) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        Process.register(self(), @server)
        {:ok, specter} = Specter.init(opts)
        {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
        :ok = await({:peer_connection_ready, pc})
        :ok = PeerConnection.set_remote_description(specter, pc, offer_json)
        :ok = await({:ok, pc, :set_remote_description})
        :ok = PeerConnection.create_answer(specter, pc)
        {:answer, ^pc, answer} = await_msg(fn m -> match?({:answer, ^pc, _}, m) end)
        :ok = PeerConnection.set_local_description(specter, pc, answer)
        :ok = await({:ok, pc, :set_local_description})
        :ok = await({:ice_candidate, pc, nil})
        :ok = PeerConnection.local_description(specter, pc, include_candidates: true)

        {:local_description, ^pc, full} =
          await_msg(fn m -> match?({:local_description, ^pc, _}, m) end)

        send(parent, {:answered, self(), full})
        serve(specter, pc, [])
      end)

    receive do
      {:answered, ^pid, answer} ->
        Process.demonitor(ref, [:flush])
        {:ok, answer}

      {:DOWN, ^ref, :process, ^pid, reason} ->
        {:error, reason}
    after
      10_000 -> {:error, :timeout}
    end
  end

  @doc "Runs on the peer: the events the answering connection has seen, oldest first."
  def events do
    send(@server, {:events, self()})

    receive do
      {:events, events} -> events
    after
      5_000 -> :timeout
    end
  end

  @doc "Kills the peer's OS process with SIGKILL."
  def kill_9!(os_pid) do
    {_, 0} = System.cmd("kill", ["-9", os_pid])
    :ok
  end

  @doc "Halts the peer VM abruptly (`:erlang.halt/0`: no application stops, no cleanup)."
  def halt(peer), do: :peer.cast(peer, :erlang, :halt, [])

  @doc "Whether the OS process `os_pid` still exists (a zombie counts as gone)."
  def alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _} -> false
    end
  end

  defp serve(specter, pc, log) do
    receive do
      {:events, from} ->
        send(from, {:events, Enum.reverse(log)})
        serve(specter, pc, log)

      {:data_channel_message, dc, {:text, text}} = msg ->
        _ = DataChannel.send_text(specter, dc, "echo: " <> text)
        serve(specter, pc, [msg | log])

      msg ->
        serve(specter, pc, [msg | log])
    end
  end

  defp await(msg), do: await_msg(&(&1 == msg)) && :ok

  defp await_msg(pred) do
    receive do
      m -> if pred.(m), do: m, else: await_msg(pred)
    after
      10_000 -> exit(:timeout)
    end
  end
end
