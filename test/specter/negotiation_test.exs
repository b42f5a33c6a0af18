defmodule Specter.NegotiationTest do
  # Signalling styles other than trickle ICE, checks that race the answer, and the selected
  # candidate pair in stats (JSEP RFC 9429, ICE RFC 8445, trickle ICE RFC 8838, ICE SDP
  # RFC 8839, W3C localDescription and RTCIceCandidateStats).
  use ExUnit.Case, async: true
  doctest Specter.Negotiation

  import Specter.TestSupport

  alias Specter.{DataChannel, PeerConnection, TrackLocalStaticRTP, TrackRemote}
  alias Specter.Test.{RtpWriter, Stun}

  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  # Sets `desc` as the local description, waits for the end of gathering and returns the
  # local description then: what a peer that does not trickle sends.
  defp complete_local!(specter, pc, desc) do
    :ok = PeerConnection.set_local_description(specter, pc, desc)
    assert_receive {:ok, ^pc, :set_local_description}, 5_000
    assert_receive {:ice_candidate, ^pc, nil}, 5_000
    :ok = PeerConnection.local_description(specter, pc)
    assert_receive {:local_description, ^pc, complete}, 5_000
    complete
  end

  # `a` offers a complete description (in `sa`), `b` applies it and answers (in `sb`);
  # `b`'s answer is not applied yet. Returns `{offer, answer}`.
  defp offer_complete!(sa, a, sb, b) do
    :ok = PeerConnection.create_offer(sa, a)
    assert_receive {:offer, ^a, offer}, 5_000
    offer = complete_local!(sa, a, offer)
    :ok = PeerConnection.set_remote_description(sb, b, offer)
    assert_receive {:ok, ^b, :set_remote_description}, 5_000
    :ok = PeerConnection.create_answer(sb, b)
    assert_receive {:answer, ^b, answer}, 5_000
    {offer, answer}
  end

  # Offer/answer with complete descriptions only: no candidate is ever trickled.
  defp negotiate_complete!(specter, a, b) do
    {offer, answer} = offer_complete!(specter, a, specter, b)
    answer = complete_local!(specter, b, answer)
    :ok = PeerConnection.set_remote_description(specter, a, answer)
    assert_receive {:ok, ^a, :set_remote_description}, 5_000
    {offer, answer}
  end

  defp await_connected!(a, b) do
    for pc <- [a, b], do: assert_receive({:connection_state_change, ^pc, :connected}, 5_000)
  end

  defp sdp(json) do
    {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(json)
    sdp
  end

  describe "local descriptions" do
    test "carry every gathered candidate and a=end-of-candidates; include_candidates: false gives them as applied",
         %{specter: specter} do
      a = new_pc!(specter)
      {:ok, _} = DataChannel.create(specter, a, "chat")
      :ok = PeerConnection.create_offer(specter, a)
      assert_receive {:offer, ^a, offer}
      complete = complete_local!(specter, a, offer)

      assert [{{127, 0, 0, 1}, port}] = Stun.host_candidates(complete)
      assert port > 0
      assert sdp(complete) =~ ~r/a=end-of-candidates\r\n$/
      # Component 1 only: RTCP is always multiplexed.
      refute sdp(complete) =~ ~r/a=candidate:\S+ 2 /

      for which <- [:pending_local_description, :current_local_description] do
        :ok = apply(PeerConnection, which, [specter, a])
        assert_receive {^which, ^a, desc}

        if which == :pending_local_description,
          do: assert(desc == complete),
          else: assert(desc == nil)
      end

      :ok = PeerConnection.local_description(specter, a, include_candidates: false)
      assert_receive {:local_description, ^a, ^offer}
      refute sdp(offer) =~ "a=candidate:"
    end
  end

  describe "without trickle ICE (complete descriptions only)" do
    test "two connections connect and exchange data both ways", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, dc} = DataChannel.create(specter, a, "chat")
      {offer, answer} = negotiate_complete!(specter, a, b)
      assert sdp(offer) =~ "a=candidate:"
      assert sdp(answer) =~ "a=candidate:"
      await_connected!(a, b)

      assert_receive {:data_channel_open, ^dc}, 5_000
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000
      :ok = DataChannel.send_text(specter, dc, "over a complete offer")
      assert_receive {:data_channel_message, ^remote, {:text, "over a complete offer"}}, 5_000
      :ok = DataChannel.send(specter, remote, <<0, 255>>)
      assert_receive {:data_channel_message, ^dc, {:binary, <<0, 255>>}}, 5_000
    end

    test "two connections connect and carry media", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, track} = TrackLocalStaticRTP.new(specter, @vp8, "cam", "call")
      add_track!(specter, a, track)
      negotiate_complete!(specter, a, b)
      await_connected!(a, b)

      {:ok, writer} = RtpWriter.start_link(specter: specter, track: track, interval: 5)
      assert_receive {:track, ^b, remote, %{kind: :video}}, 5_000
      :ok = TrackRemote.set_active(specter, remote, true)
      for _ <- 1..20, do: assert_receive({:rtp, ^remote, _packet}, 5_000)
      Process.unlink(writer)
      Process.exit(writer, :kill)
    end
  end

  describe "DTLS roles" do
    test "an answerer with answering_dtls_role: :server answers a=setup:passive and connects",
         %{specter: specter} do
      {:ok, server} = Specter.init(answering_dtls_role: :server)
      a = new_pc!(specter)
      b = new_pc!(server)
      {:ok, dc} = DataChannel.create(specter, a, "chat")
      {_offer, answer} = offer_complete!(specter, a, server, b)
      assert sdp(answer) =~ "a=setup:passive\r\n"
      answer = complete_local!(server, b, answer)
      :ok = PeerConnection.set_remote_description(specter, a, answer)
      assert_receive {:ok, ^a, :set_remote_description}
      await_connected!(a, b)
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert_receive {:data_channel, ^b, remote}, 5_000
      :ok = DataChannel.send_text(specter, dc, "client hello")
      assert_receive {:data_channel_message, ^remote, {:text, "client hello"}}, 5_000
    end
  end

  describe "trickled candidates of other transports" do
    test "candidates of other m-lines and of component 2 are ignored", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      :ok = PeerConnection.add_transceiver_from_kind(specter, a, :audio)
      :ok = PeerConnection.add_transceiver_from_kind(specter, a, :video)
      {:ok, _} = DataChannel.create(specter, a, "chat")
      {offer, _answer} = negotiate!(specter, a, b)
      assert sdp(offer) =~ ~r/a=group:BUNDLE 0 1 2/

      # A socket that stands for the remote's other sockets: ICE must never check it.
      {:ok, decoy} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: true])
      {:ok, decoy_port} = :inet.port(decoy)
      base = "candidate:9 1 udp 2122252543 127.0.0.1 #{decoy_port} typ host"

      for {c, mid, index} <- [
            {base, "1", 1},
            {base, "2", 2},
            {String.replace(base, "candidate:9 1 ", "candidate:9 2 "), "0", 0}
          ] do
        json = %{"candidate" => c, "sdpMid" => mid, "sdpMLineIndex" => index}
        :ok = PeerConnection.add_ice_candidate(specter, a, json)
        assert_receive {:ok, ^a, :add_ice_candidate}
      end

      assert :ok = PeerConnection.await_connected(specter, [a, b], 5_000)
      refute_receive {:udp, ^decoy, _, _, _}, 300

      :ok = PeerConnection.get_stats(specter, a, format: :map)
      assert_receive {:stats, ^a, stats}
      refute Enum.any?(Map.values(stats), &(&1["port"] == decoy_port)), inspect(stats)
      :gen_udp.close(decoy)
    end
  end

  describe "a connectivity check that arrives before the answer" do
    test "is answered as soon as the remote description is applied", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, _} = DataChannel.create(specter, a, "chat")
      :ok = PeerConnection.create_offer(specter, a)
      assert_receive {:offer, ^a, offer}
      offer = complete_local!(specter, a, offer)
      {a_ufrag, a_pwd} = Stun.credentials(offer)
      [{ip, port}] = Stun.host_candidates(offer)

      # b only writes the answer; the checks come from this socket, as b's.
      :ok = PeerConnection.set_remote_description(specter, b, offer)
      assert_receive {:ok, ^b, :set_remote_description}
      :ok = PeerConnection.create_answer(specter, b)
      assert_receive {:answer, ^b, answer}
      {b_ufrag, _} = Stun.credentials(answer)

      {:ok, sock} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: true])
      {:ok, own_port} = :inet.port(sock)
      {tid, request} = Stun.binding_request(a_ufrag, b_ufrag, a_pwd)
      :ok = :gen_udp.send(sock, ip, port, request)
      # Not answerable yet: a does not know b's credentials.
      refute_receive {:udp, ^sock, _, _, _}, 100

      :ok = PeerConnection.set_remote_description(specter, a, answer)
      assert_receive {:ok, ^a, :set_remote_description}
      applied = System.monotonic_time(:millisecond)

      # No retransmission: the one request sent before the answer is answered.
      assert_receive {:udp, ^sock, ^ip, ^port, response}, 1_000
      assert System.monotonic_time(:millisecond) - applied < 500

      assert {:ok, %{class: :success, method: 1, transaction_id: ^tid} = msg} =
               Stun.decode(response)

      assert msg.xor_mapped_address == {{127, 0, 0, 1}, own_port}
      {:ok, %{replayed_checks: replayed}} = Specter.runtime_info()
      assert replayed >= 1
      :gen_udp.close(sock)
    end
  end

  describe "stats of the selected candidate pair" do
    # {local, remote} candidate stats of the transport's selected pair.
    defp selected_pair(specter, pc) do
      :ok = PeerConnection.get_stats(specter, pc, format: :map)
      assert_receive {:stats, ^pc, stats}, 5_000
      [transport] = for {_, %{"type" => "transport"} = t} <- stats, do: t
      pair = Map.fetch!(stats, transport["selectedCandidatePairId"])
      assert pair["nominated"]

      local = Map.fetch!(stats, pair["localCandidateId"])
      remote = Map.fetch!(stats, pair["remoteCandidateId"])
      assert local["type"] == "local-candidate"
      assert remote["type"] == "remote-candidate"
      remotes = for {_, %{"type" => "remote-candidate"} = r} <- stats, do: r
      {local, remote, remotes}
    end

    defp endpoint(c), do: {c["address"], c["port"], c["protocol"]}

    # Each side's selected local candidate is the other's selected remote one, at the address
    # of the other side's socket (its host candidate).
    defp assert_mirrored(specter, a, b, a_port, b_port) do
      {a_local, a_remote, _} = selected_pair(specter, a)
      {b_local, b_remote, _} = selected_pair(specter, b)
      assert endpoint(a_local) == {"127.0.0.1", a_port, "udp"}
      assert endpoint(b_local) == {"127.0.0.1", b_port, "udp"}
      assert endpoint(a_remote) == endpoint(b_local)
      assert endpoint(b_remote) == endpoint(a_local)
      {a_remote, b_remote}
    end

    defp local_port(specter, pc) do
      :ok = PeerConnection.local_description(specter, pc)
      assert_receive {:local_description, ^pc, desc}
      [{_, port}] = Stun.host_candidates(desc)
      port
    end

    test "with trickle ICE", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      connect!(specter, a, b)

      {a_remote, b_remote} =
        assert_mirrored(specter, a, b, local_port(specter, a), local_port(specter, b))

      # Trickled, or learned from a check that beat the trickled candidate.
      assert a_remote["candidateType"] in ["host", "prflx"]
      assert b_remote["candidateType"] in ["host", "prflx"]
    end

    test "with candidates in the descriptions", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, _} = DataChannel.create(specter, a, "chat")
      negotiate_complete!(specter, a, b)
      await_connected!(a, b)

      {a_remote, b_remote} =
        assert_mirrored(specter, a, b, local_port(specter, a), local_port(specter, b))

      assert a_remote["candidateType"] in ["host", "prflx"]
      assert b_remote["candidateType"] in ["host", "prflx"]
    end

    test "with a candidate learned from checks, then trickled: listed once, as learned", %{
      specter: specter
    } do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, _} = DataChannel.create(specter, a, "chat")
      {_offer, answer} = offer_complete!(specter, a, specter, b)
      :ok = PeerConnection.set_local_description(specter, b, answer)
      assert_receive {:ok, ^b, :set_local_description}
      # a learns b's address only from b's checks.
      :ok = PeerConnection.set_remote_description(specter, a, answer)
      assert_receive {:ok, ^a, :set_remote_description}
      await_connected!(a, b)

      {a_remote, _} =
        assert_mirrored(specter, a, b, local_port(specter, a), local_port(specter, b))

      assert a_remote["candidateType"] == "prflx"

      # b's candidate arrives late, at the address a already learned.
      assert_receive {:ice_candidate, ^b, candidate} when is_binary(candidate)
      :ok = PeerConnection.add_ice_candidate(specter, a, candidate)
      assert_receive {:ok, ^a, :add_ice_candidate}

      {_, a_remote_after, remotes} = selected_pair(specter, a)
      assert endpoint(a_remote_after) == endpoint(a_remote)
      at_b = Enum.filter(remotes, &(endpoint(&1) == endpoint(a_remote)))
      assert [%{"candidateType" => "prflx"}] = at_b
    end
  end
end
