defmodule Specter.DataChannelTest do
  use ExUnit.Case, async: true
  doctest Specter.DataChannel

  import Specter.TestSupport
  alias Specter.DataChannel

  setup do
    {:ok, specter} = Specter.init()
    a = new_pc!(specter)
    b = new_pc!(specter)
    dc = connect!(specter, a, b)
    assert_receive {:data_channel_open, ^dc}
    assert_receive {:data_channel, ^b, remote}
    assert_receive {:data_channel_open, ^remote}
    %{specter: specter, dc: dc, remote: remote}
  end

  # {messages, how many Erlang messages carried them}
  defp collect(remote, n, acc \\ [], deliveries \\ 0) do
    if length(acc) >= n do
      {acc, deliveries}
    else
      receive do
        {:data_channel_messages, ^remote, list} ->
          assert list != [] and length(list) <= 8
          collect(remote, n, acc ++ list, deliveries + 1)

        {:data_channel_message, ^remote, message} ->
          collect(remote, n, acc ++ [message], deliveries + 1)
      after
        5_000 -> flunk("got #{length(acc)} of #{n}")
      end
    end
  end

  test "batched delivery hands over waiting messages in lists, in order", %{
    specter: specter,
    dc: dc,
    remote: remote
  } do
    :ok = DataChannel.set_active(specter, remote, false)
    :ok = DataChannel.set_batch(specter, remote, 8)
    for i <- 1..100, do: :ok = DataChannel.send(specter, dc, <<i>>)
    # Let them all arrive and be held.
    Process.sleep(200)
    :ok = DataChannel.set_active(specter, remote, true)
    {messages, deliveries} = collect(remote, 100)
    assert messages == for(i <- 1..100, do: {:binary, <<i>>})
    # Held messages go eight at a time.
    assert deliveries < 100
  end

  test "each batched message takes one unit of credit", %{
    specter: specter,
    dc: dc,
    remote: remote
  } do
    :ok = DataChannel.set_active(specter, remote, false)
    :ok = DataChannel.set_batch(specter, remote, 8)
    for i <- 1..20, do: :ok = DataChannel.send(specter, dc, <<i>>)
    Process.sleep(200)
    :ok = DataChannel.set_active(specter, remote, 5)
    assert {for(i <- 1..5, do: {:binary, <<i>>}), 1} == collect(remote, 5)
    assert_receive {:data_channel_passive, ^remote}
    refute_receive {:data_channel_messages, ^remote, _}, 200
    refute_received {:data_channel_message, ^remote, _}
  end
end
