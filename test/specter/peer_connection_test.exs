defmodule Specter.PeerConnectionTest do
  use ExUnit.Case, async: true
  doctest Specter.PeerConnection

  import Specter.TestSupport
  alias Specter.PeerConnection

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  describe "offer/answer with trickle ICE" do
    test "reaches :connected on both sides, with every event in order", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)

      {:ok, _dc} = Specter.DataChannel.create(specter, a, "chat")
      assert_receive {:data_channel_created, ^a, _}
      assert_receive {:negotiation_needed, ^a}

      :ok = PeerConnection.create_offer(specter, a)
      assert_receive {:offer, ^a, offer}
      :ok = PeerConnection.set_local_description(specter, a, offer)
      assert_receive {:ok, ^a, :set_local_description}
      assert_receive {:signaling_state_change, ^a, :have_local_offer}
      assert_receive {:ice_gathering_state_change, ^a, :gathering}

      # Candidates in the browser's RTCIceCandidateInit JSON, then the end marker.
      assert_receive {:ice_candidate, ^a, json}
      assert {:ok, candidate} = Specter.JSON.decode(json)

      assert %{
               "candidate" => "candidate:" <> _,
               "sdpMid" => "0",
               "sdpMLineIndex" => 0,
               "usernameFragment" => ufrag
             } = candidate

      assert is_binary(ufrag) and ufrag != ""
      assert candidate["candidate"] =~ " 127.0.0.1 "
      assert_receive {:ice_gathering_state_change, ^a, :complete}
      assert_receive {:ice_candidate, ^a, nil}

      :ok = PeerConnection.set_remote_description(specter, b, offer)
      assert_receive {:ok, ^b, :set_remote_description}
      assert_receive {:signaling_state_change, ^b, :have_remote_offer}
      :ok = PeerConnection.create_answer(specter, b)
      assert_receive {:answer, ^b, answer}
      :ok = PeerConnection.set_local_description(specter, b, answer)
      assert_receive {:ok, ^b, :set_local_description}
      assert_receive {:signaling_state_change, ^b, :stable}

      # a's candidate as a decoded map (what a Phoenix channel hands over).
      :ok = PeerConnection.add_ice_candidate(specter, b, candidate)
      assert_receive {:ok, ^b, :add_ice_candidate}

      :ok = PeerConnection.set_remote_description(specter, a, answer)
      assert_receive {:ok, ^a, :set_remote_description}
      assert_receive {:signaling_state_change, ^a, :stable}

      # b's candidates in Specter 0.5's snake_case JSON.
      assert_receive {:ice_candidate, ^b, b_json}
      {:ok, b_candidate} = Specter.JSON.decode(b_json)

      {:ok, snake} =
        Specter.JSON.encode(%{
          candidate: b_candidate["candidate"],
          sdp_mid: b_candidate["sdpMid"],
          sdp_mline_index: b_candidate["sdpMLineIndex"],
          username_fragment: b_candidate["usernameFragment"]
        })

      :ok = PeerConnection.add_ice_candidate(specter, a, snake)
      assert_receive {:ok, ^a, :add_ice_candidate}

      for pc <- [a, b] do
        assert_receive {:ice_connection_state_change, ^pc, :checking}
        assert_receive {:ice_connection_state_change, ^pc, :connected}
        assert_receive {:connection_state_change, ^pc, :connecting}
        assert_receive {:connection_state_change, ^pc, :connected}
      end

      for pc <- [a, b] do
        :ok = PeerConnection.connection_state(specter, pc)
        assert_receive {:connection_state, ^pc, :connected}
        :ok = PeerConnection.ice_connection_state(specter, pc)
        assert_receive {:ice_connection_state, ^pc, :connected}
        :ok = PeerConnection.ice_gathering_state(specter, pc)
        assert_receive {:ice_gathering_state, ^pc, :complete}
        :ok = PeerConnection.signaling_state(specter, pc)
        assert_receive {:signaling_state, ^pc, :stable}
      end

      # Negotiated: current descriptions are set, pending ones are not. As applied, the
      # local one is the offer; by default it also lists the gathered candidates.
      :ok = PeerConnection.current_local_description(specter, a, include_candidates: false)
      assert_receive {:current_local_description, ^a, ^offer}
      :ok = PeerConnection.current_remote_description(specter, a)
      assert_receive {:current_remote_description, ^a, ^answer}
      :ok = PeerConnection.pending_local_description(specter, a)
      assert_receive {:pending_local_description, ^a, nil}
      :ok = PeerConnection.local_description(specter, a)
      assert_receive {:local_description, ^a, with_candidates}
      assert {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(with_candidates)
      assert sdp =~ "a=candidate:"

      # Stats, as JSON and as a map, show the selected pair.
      :ok = PeerConnection.get_stats(specter, a, format: :map)
      assert_receive {:stats, ^a, stats}
      types = stats |> Map.values() |> Enum.map(& &1["type"]) |> Enum.uniq()
      assert "candidate-pair" in types
      assert "transport" in types
      assert "data-channel" in types
    end

    test "answerer-created channels are announced and carry messages both ways", %{
      specter: specter
    } do
      a = new_pc!(specter)
      b = new_pc!(specter)
      dc = connect!(specter, a, b)
      assert_receive {:data_channel_open, ^dc}
      assert_receive {:data_channel, ^b, remote}
      assert_receive {:data_channel_open, ^remote}
      assert {:ok, %{label: "chat"}} = Specter.DataChannel.info(specter, remote)

      :ok = Specter.DataChannel.send_text(specter, dc, "ping")
      assert_receive {:data_channel_message, ^remote, {:text, "ping"}}
      :ok = Specter.DataChannel.send(specter, remote, <<0, 1, 2, 255>>)
      assert_receive {:data_channel_message, ^dc, {:binary, <<0, 1, 2, 255>>}}
    end

    test "a create_offer on a closed connection fails, and queued operations answer", %{
      specter: specter
    } do
      pc = new_pc!(specter)
      :ok = PeerConnection.create_offer(specter, pc)
      :ok = PeerConnection.close(specter, pc)
      assert_receive {:offer, ^pc, _}
      assert_receive {:peer_connection_closed, ^pc}
      assert {:error, :closed} = PeerConnection.create_offer(specter, pc)
      assert {:error, :closed} = PeerConnection.close(specter, pc)
      assert {:error, :closed} = PeerConnection.get_stats(specter, pc)
      refute PeerConnection.exists?(specter, pc)
    end
  end

  describe "ICE restart" do
    test "a restart offer carries new credentials and the pair reconnects", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      dc = connect!(specter, a, b)
      assert_receive {:data_channel, ^b, remote}
      assert_receive {:data_channel_open, ^remote}
      flush()

      :ok = PeerConnection.local_description(specter, a)
      assert_receive {:local_description, ^a, before}
      {:ok, %{"sdp" => sdp_before}} = Specter.JSON.decode(before)

      :ok = PeerConnection.restart_ice(specter, a)
      assert_receive {:ok, ^a, :restart_ice}
      :ok = PeerConnection.create_offer(specter, a)
      assert_receive {:offer, ^a, offer}
      {:ok, %{"sdp" => sdp_after}} = Specter.JSON.decode(offer)
      assert ufrag(sdp_before) != ufrag(sdp_after)

      :ok = PeerConnection.set_local_description(specter, a, offer)
      :ok = PeerConnection.set_remote_description(specter, b, offer)
      :ok = PeerConnection.create_answer(specter, b)
      assert_receive {:answer, ^b, answer}
      :ok = PeerConnection.set_local_description(specter, b, answer)
      :ok = PeerConnection.set_remote_description(specter, a, answer)
      assert_receive {:ok, ^a, :set_remote_description}

      # A new gathering round, trickled across; the channel still carries messages.
      assert_receive {:ice_gathering_state_change, ^a, :gathering}
      relay_candidates(specter, a, b, 500)
      :ok = Specter.DataChannel.send_text(specter, dc, "after restart")
      assert_receive {:data_channel_message, ^remote, {:text, "after restart"}}
      :ok = PeerConnection.connection_state(specter, a)
      assert_receive {:connection_state, ^a, :connected}
    end

    test "create_offer(ice_restart: true) changes the ufrag too", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      connect!(specter, a, b)
      :ok = PeerConnection.create_offer(specter, a)
      assert_receive {:offer, ^a, plain}
      :ok = PeerConnection.create_offer(specter, a, ice_restart: true)
      assert_receive {:offer, ^a, restarting}
      {:ok, %{"sdp" => s1}} = Specter.JSON.decode(plain)
      {:ok, %{"sdp" => s2}} = Specter.JSON.decode(restarting)
      assert ufrag(s1) != ufrag(s2)
    end
  end

  describe "configuration" do
    test "get_configuration reflects set_configuration", %{specter: specter} do
      pc = new_pc!(specter)

      :ok =
        PeerConnection.set_configuration(specter, pc,
          ice_servers: [%{urls: "turn:127.0.0.1:3478", username: "u", credential: "p"}],
          ice_transport_policy: :relay
        )

      assert_receive {:ok, ^pc, :set_configuration}
      :ok = PeerConnection.get_configuration(specter, pc)
      assert_receive {:configuration, ^pc, config}

      assert %{
               ice_servers: [
                 %{urls: ["turn:127.0.0.1:3478"], username: "u", credential: "p"}
               ],
               ice_transport_policy: :relay,
               bundle_policy: _,
               rtcp_mux_policy: _
             } = config
    end
  end

  describe "ownership" do
    test "controlling_process moves the events; the new owner's exit closes", %{
      specter: specter
    } do
      pc = new_pc!(specter)
      test = self()

      owner =
        spawn(fn ->
          receive do
            :go ->
              receive do
                msg -> send(test, {:owner_got, msg})
              end

              receive do
                :stop -> :ok
              end
          end
        end)

      :ok = PeerConnection.controlling_process(specter, pc, owner)
      send(owner, :go)
      {:ok, _dc} = Specter.DataChannel.create(specter, pc, "moved")
      assert_receive {:data_channel_created, ^pc, _}
      assert_receive {:owner_got, {:negotiation_needed, ^pc}}
      refute_received {:negotiation_needed, ^pc}

      ref = Process.monitor(owner)
      send(owner, :stop)
      assert_receive {:DOWN, ^ref, :process, ^owner, _}
      assert eventually(fn -> not PeerConnection.exists?(specter, pc) end)
      assert {:error, :closed} = PeerConnection.create_offer(specter, pc)
    end

    test "a connection outlives a process that only called into it", %{specter: specter} do
      pc = new_pc!(specter)
      task = Task.async(fn -> PeerConnection.create_offer(specter, pc) end)
      assert :ok = Task.await(task)
      Process.sleep(50)
      assert PeerConnection.exists?(specter, pc)
    end
  end

  defp ufrag(sdp) do
    [_, ufrag] = Regex.run(~r/a=ice-ufrag:(\S+)/, sdp)
    ufrag
  end

  defp relay_candidates(specter, a, b, ms) do
    receive do
      {:ice_candidate, ^a, c} when is_binary(c) ->
        PeerConnection.add_ice_candidate(specter, b, c)
        relay_candidates(specter, a, b, ms)

      {:ice_candidate, ^b, c} when is_binary(c) ->
        PeerConnection.add_ice_candidate(specter, a, c)
        relay_candidates(specter, a, b, ms)
    after
      ms -> :ok
    end
  end
end
