defmodule Specter.ConfigTest do
  # Reads process-wide counters and the application environment: runs alone.
  use ExUnit.Case, async: false
  doctest Specter.Config

  import Specter.TestSupport
  alias Specter.PeerConnection

  defp gather(specter) do
    pc = new_pc!(specter)
    :ok = PeerConnection.create_data_channel(specter, pc, "x")
    :ok = PeerConnection.create_offer(specter, pc)
    assert_receive {:offer, ^pc, offer}
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    collect_candidates(pc, [])
  end

  defp collect_candidates(pc, acc) do
    receive do
      {:ice_candidate, ^pc, nil} ->
        Enum.reverse(acc)

      {:ice_candidate, ^pc, json} ->
        {:ok, %{"candidate" => c}} = Specter.JSON.decode(json)
        collect_candidates(pc, [c | acc])
    after
      5_000 -> flunk("gathering did not complete; got #{inspect(acc)}")
    end
  end

  test "loopback confinement: only 127.0.0.1 candidates, STUN servers never contacted" do
    {:ok, before} = Specter.runtime_info()

    {:ok, specter} =
      Specter.init(ice_servers: ["stun:stun.l.google.com:19302", "stun:192.0.2.1:3478"])

    assert {:ok, %{loopback_only: true}} = Specter.config(specter)
    candidates = gather(specter)
    assert candidates != []

    for c <- candidates do
      assert c =~ ~r/ 127\.0\.0\.1 \d+ typ host/, c
    end

    {:ok, after_gathering} = Specter.runtime_info()
    # Both servers were refused before any packet or DNS query could leave.
    assert after_gathering.refused_resolutions >= before.refused_resolutions + 2
  end

  test "udp_port_range bounds the ports connections bind" do
    {:ok, specter} = Specter.init(udp_port_range: {42_000, 42_009})

    ports =
      for _ <- 1..3 do
        [c | _] = gather(specter)
        [_, port] = Regex.run(~r/ 127\.0\.0\.1 (\d+) /, c)
        String.to_integer(port)
      end

    assert Enum.all?(ports, &(&1 in 42_000..42_009)), inspect(ports)
    assert length(Enum.uniq(ports)) == 3
  end

  test "interfaces resolve to their addresses" do
    {:ok, config} = Specter.Config.new(interfaces: ["lo"])
    assert "127.0.0.1" in config.bind_addresses

    assert {:error, {:invalid_option, :bind_addresses}} =
             Specter.Config.new(bind_addresses: ["10.1.2.3"])
  end

  test "the application environment supplies defaults; init options win" do
    previous = Application.get_env(:specter, :mdns)

    try do
      Application.put_env(:specter, :mdns, :query_only)
      assert {:ok, %{mdns: :query_only}} = Specter.Config.new()
      assert {:ok, %{mdns: :disabled}} = Specter.Config.new(mdns: :disabled)
    after
      if previous,
        do: Application.put_env(:specter, :mdns, previous),
        else: Application.delete_env(:specter, :mdns)
    end
  end

  test "sctp_receive_buffer: the webrtc-rs default unless set, at least RFC 9260's 1500 bytes" do
    assert {:ok, %{sctp_receive_buffer: 1_048_576}} = Specter.Config.new()

    assert {:ok, %{sctp_receive_buffer: 4_194_304}} =
             Specter.Config.new(sctp_receive_buffer: 4_194_304)

    for bad <- [1_499, 0, -1, 1.5e6, :big, 2_000_000_000] do
      assert Specter.Config.new(sctp_receive_buffer: bad) ==
               {:error, {:invalid_option, :sctp_receive_buffer}},
             inspect(bad)
    end

    # A connection of an instance with a larger window still connects and carries data.
    {:ok, specter} = Specter.init(sctp_receive_buffer: 4_194_304)
    assert {:ok, %{sctp_receive_buffer: 4_194_304}} = Specter.config(specter)
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, dc} = Specter.DataChannel.create(specter, a, "window")
    connect_media!(specter, a, b)
    assert_receive {:data_channel_open, ^dc}, 5_000
    assert_receive {:data_channel, ^b, remote}, 5_000
    assert_receive {:data_channel_open, ^remote}, 5_000
    :ok = Specter.DataChannel.send(specter, dc, "through a 4 MiB window")
    assert_receive {:data_channel_message, ^remote, {:binary, "through a 4 MiB window"}}, 5_000
  end

  test "the kernel grants the configured socket buffers" do
    {:ok, specter} = Specter.init(socket_buffer_size: 1_048_576)
    gather(specter)
    {:ok, %{effective_socket_buffer: granted}} = Specter.runtime_info()
    # Linux reports twice the requested size (it counts its own bookkeeping).
    assert granted >= 1_048_576
  end
end
