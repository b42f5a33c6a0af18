defmodule Specter.TestSupport do
  @moduledoc false
  # Helpers shared by the tests: real connections on loopback, and process resource counts.

  import ExUnit.Assertions

  @doc "A connection whose `{:peer_connection_ready, pc}` has been received."
  def new_pc!(specter) do
    {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
    assert_receive {:peer_connection_ready, ^pc}, 5_000
    pc
  end

  @doc """
  Negotiates `a` (offerer, with a data channel "chat") and `b` over trickle ICE, in the
  calling process, and returns once both are connected. Returns the local channel id.
  """
  def connect!(specter, a, b) do
    {:ok, dc} = Specter.DataChannel.create(specter, a, "chat")
    assert_receive {:data_channel_created, ^a, ^dc}, 5_000
    :ok = Specter.PeerConnection.create_offer(specter, a)
    assert_receive {:offer, ^a, offer}, 5_000
    :ok = Specter.PeerConnection.set_local_description(specter, a, offer)
    assert_receive {:ok, ^a, :set_local_description}, 5_000
    :ok = Specter.PeerConnection.set_remote_description(specter, b, offer)
    assert_receive {:ok, ^b, :set_remote_description}, 5_000
    :ok = Specter.PeerConnection.create_answer(specter, b)
    assert_receive {:answer, ^b, answer}, 5_000
    :ok = Specter.PeerConnection.set_local_description(specter, b, answer)
    assert_receive {:ok, ^b, :set_local_description}, 5_000
    :ok = Specter.PeerConnection.set_remote_description(specter, a, answer)
    assert_receive {:ok, ^a, :set_remote_description}, 5_000
    assert :ok = Specter.PeerConnection.await_connected(specter, [a, b], 5_000)
    dc
  end

  @doc """
  One offer/answer round from `a` to `b` in the calling process (no data channel is added,
  so a media-only pair negotiates no SCTP). Returns `{offer, answer}`.
  """
  def negotiate!(specter, a, b, offer_opts \\ []) do
    :ok = Specter.PeerConnection.create_offer(specter, a, offer_opts)
    assert_receive {:offer, ^a, offer}, 5_000
    :ok = Specter.PeerConnection.set_local_description(specter, a, offer)
    assert_receive {:ok, ^a, :set_local_description}, 5_000
    :ok = Specter.PeerConnection.set_remote_description(specter, b, offer)
    assert_receive {:ok, ^b, :set_remote_description}, 5_000
    :ok = Specter.PeerConnection.create_answer(specter, b)
    assert_receive {:answer, ^b, answer}, 5_000
    :ok = Specter.PeerConnection.set_local_description(specter, b, answer)
    assert_receive {:ok, ^b, :set_local_description}, 5_000
    :ok = Specter.PeerConnection.set_remote_description(specter, a, answer)
    assert_receive {:ok, ^a, :set_remote_description}, 5_000
    {offer, answer}
  end

  @doc """
  Negotiates `a` → `b` (media only unless a channel or track was added) and waits until
  connected, relaying trickled candidates.
  """
  def connect_media!(specter, a, b) do
    negotiate!(specter, a, b)
    assert :ok = Specter.PeerConnection.await_connected(specter, [a, b], 5_000)
    :ok
  end

  @doc "Adds `track` to `pc` and returns the sender."
  def add_track!(specter, pc, track) do
    :ok = Specter.PeerConnection.add_track(specter, pc, track)
    assert_receive {:rtp_sender, ^pc, ^track, sender}, 5_000
    sender
  end

  @doc """
  The value of `fun` once it holds still for 200 ms (within 10 s). Counts are process-wide:
  another module's connections may still be closing, and an instance lives on until the
  process that last held its term collects garbage, so a baseline is not assumed to be zero.
  """
  def steady(fun) do
    assert eventually(
             fn ->
               a = fun.()
               Process.sleep(200)
               a == fun.()
             end,
             10_000
           )

    fun.()
  end

  @doc "Number of OS threads of this VM."
  def os_threads, do: length(File.ls!("/proc/self/task"))

  @doc "Number of open file descriptors of this VM."
  def open_fds, do: length(File.ls!("/proc/self/fd"))

  @doc "Tasks alive on Specter's runtime."
  def runtime_tasks do
    {:ok, %{alive_tasks: n}} = Specter.runtime_info()
    n
  end

  @doc "Polls `fun` every `interval` ms until it returns true or `timeout` ms pass; returns the last result."
  def eventually(fun, timeout \\ 5_000, interval \\ 20) do
    deadline = System.monotonic_time(:millisecond) + timeout
    poll(fun, deadline, interval)
  end

  defp poll(fun, deadline, interval) do
    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(interval)
        poll(fun, deadline, interval)
    end
  end

  @doc "Drains every message matching `{tag, ...}` style events from the mailbox."
  def flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end
end
