defmodule Specter.SecurityTest do
  @moduledoc false
  # What a hostile or broken remote (or a confused application) cannot do:
  #
  #   * (a) impersonate a peer: a DTLS certificate that does not match the `a=fingerprint`
  #     of the description it came with fails the connection; no channel opens, no data
  #     flows, in either direction;
  #   * (b) negotiate encryption away: an offer with plain RTP (`RTP/AVP`) or without any
  #     fingerprint is refused before anything is sent;
  #   * (c) reach across instances: ids from one `Specter.init/1` instance are unknown to
  #     every function called on another, which leaves the first instance's objects alone.
  use ExUnit.Case, async: true

  import Specter.TestSupport

  alias Specter.{
    DataChannel,
    MediaFile,
    PeerConnection,
    RTP,
    RtpTransceiver,
    TrackLocalStaticRTP,
    TrackLocalStaticSample,
    TrackRemote
  }

  @moduletag timeout: 60_000

  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  ## (a) fingerprint mismatch --------------------------------------------------------------

  # A different, well-formed SHA-256 fingerprint: every byte of the real one inverted.
  defp forge_fingerprint(json) do
    {:ok, %{"type" => type, "sdp" => sdp}} = Specter.JSON.decode(json)

    forged =
      Regex.replace(~r/a=fingerprint:sha-256 ([0-9A-F:]+)/, sdp, fn _, hex ->
        bytes = hex |> String.split(":") |> Enum.map(&String.to_integer(&1, 16))

        inverted =
          Enum.map_join(
            bytes,
            ":",
            &((255 - &1) |> Integer.to_string(16) |> String.pad_leading(2, "0"))
          )

        "a=fingerprint:sha-256 " <> inverted
      end)

    assert forged != sdp, "no SHA-256 fingerprint in the description"
    [_ | _] = Regex.scan(~r/a=fingerprint:sha-256 [0-9A-F:]{95}\r\n/, forged)
    %{"type" => type, "sdp" => forged}
  end

  # Relays candidates between a (in instance sa) and b (in sb) and records everything for
  # `ms`, or until both connections are :failed or :closed.
  defp watch(a, b, {sa, sb}, ms) do
    deadline = System.monotonic_time(:millisecond) + ms
    acc = %{states: %{a => [], b => []}, opened: [], messages: []}
    watch_loop(%{a => sb, b => sa}, a, b, deadline, acc)
  end

  defp watch_loop(peer_instance, a, b, deadline, acc) do
    done? = Enum.all?([a, b], fn pc -> Enum.any?(acc.states[pc], &(&1 in [:failed, :closed])) end)

    remaining = deadline - System.monotonic_time(:millisecond)

    if done? or remaining <= 0 do
      acc
    else
      receive do
        {:ice_candidate, from, c} when is_binary(c) and from in [a, b] ->
          to = if from == a, do: b, else: a
          _ = PeerConnection.add_ice_candidate(peer_instance[from], to, c)
          watch_loop(peer_instance, a, b, deadline, acc)

        {:connection_state_change, pc, state} when pc in [a, b] ->
          acc = update_in(acc, [:states, pc], &(&1 ++ [state]))
          watch_loop(peer_instance, a, b, deadline, acc)

        {:data_channel_open, dc} ->
          watch_loop(peer_instance, a, b, deadline, %{acc | opened: [dc | acc.opened]})

        {:data_channel_message, dc, m} ->
          watch_loop(peer_instance, a, b, deadline, %{acc | messages: [{dc, m} | acc.messages]})

        _ ->
          watch_loop(peer_instance, a, b, deadline, acc)
      after
        min(remaining, 100) -> watch_loop(peer_instance, a, b, deadline, acc)
      end
    end
  end

  # Every combination of which description carries the forged fingerprint and which DTLS
  # role the answerer takes, so the side that must refuse is, in turn, the DTLS client
  # (active) and the DTLS server (passive), as offerer and as answerer.
  for {forged_side, answerer_role} <- [
        {:offer, :auto},
        {:answer, :auto},
        {:offer, :server},
        {:answer, :server}
      ] do
    victim_role =
      case {forged_side, answerer_role} do
        {:offer, :auto} -> "DTLS client (active), answering"
        {:answer, :auto} -> "DTLS server (passive), offering"
        {:offer, :server} -> "DTLS server (passive), answering"
        {:answer, :server} -> "DTLS client (active), offering"
      end

    test "a certificate that does not match the #{forged_side}'s fingerprint fails the connection for the #{victim_role} side" do
      # webrtc-rs only logs the handshake error; Specter fails the connection once the
      # handshake has not completed `dtls_handshake_timeout` ms after ICE connected.
      {:ok, s} = Specter.init(dtls_handshake_timeout: 1_000)

      {:ok, sb} =
        Specter.init(dtls_handshake_timeout: 1_000, answering_dtls_role: unquote(answerer_role))

      a = new_pc!(s)
      b = new_pc!(sb)
      {:ok, dc_a} = DataChannel.create(s, a, "chat")
      :ok = PeerConnection.create_offer(s, a)
      assert_receive {:offer, ^a, offer}
      :ok = PeerConnection.set_local_description(s, a, offer)
      assert_receive {:ok, ^a, :set_local_description}

      offer_for_b = if unquote(forged_side) == :offer, do: forge_fingerprint(offer), else: offer
      :ok = PeerConnection.set_remote_description(sb, b, offer_for_b)
      assert_receive {:ok, ^b, :set_remote_description}
      :ok = PeerConnection.create_answer(sb, b)
      assert_receive {:answer, ^b, answer}
      :ok = PeerConnection.set_local_description(sb, b, answer)
      assert_receive {:ok, ^b, :set_local_description}

      # The roles are the ones the test names.
      {:ok, %{"sdp" => answer_sdp}} = Specter.JSON.decode(answer)
      setup = if unquote(answerer_role) == :server, do: "passive", else: "active"
      assert answer_sdp =~ "a=setup:#{setup}\r\n"

      answer_for_a =
        if unquote(forged_side) == :answer, do: forge_fingerprint(answer), else: answer

      :ok = PeerConnection.set_remote_description(s, a, answer_for_a)
      assert_receive {:ok, ^a, :set_remote_description}

      # The side holding the forged fingerprint is the one that must refuse.
      {victim, victim_instance} = if unquote(forged_side) == :answer, do: {a, s}, else: {b, sb}
      started = System.monotonic_time(:millisecond)
      seen = watch(a, b, {s, sb}, 8_000)

      # Both sides end :failed (the handshake never completes: one refuses the other's
      # certificate and sends no Finished), within the handshake timeout plus ICE.
      for pc <- [a, b] do
        assert :failed in seen.states[pc],
               "#{inspect(seen.states)}: #{if pc == victim, do: "the side that checked", else: "its peer"} did not fail"

        # webrtc-rs says "connected" when the other side's close_notify closes a DTLS
        # transport mid-handshake; Specter checks the handshake on every "connected" and
        # fails the connection at once: a :connected, if any, is followed by :failed.
        assert List.last(seen.states[pc]) in [:failed, :closed], inspect(seen.states)
      end

      assert System.monotonic_time(:millisecond) - started < 8_000
      assert :ok = PeerConnection.connection_state(victim_instance, victim)
      assert_receive {:connection_state, ^victim, state} when state in [:failed, :closed]
      assert seen.opened == [], "a data channel opened: #{inspect(seen.opened)}"

      # Nothing can be sent, nothing arrives.
      assert {:error, _} = DataChannel.send(s, dc_a, "secret")
      refute_receive {:data_channel_message, _, _}, 300
      refute_receive {:data_channel, ^b, _}, 0
      assert seen.messages == []
    end
  end

  ## (b) no negotiating encryption away --------------------------------------------------

  defp media_offer(s) do
    a = new_pc!(s)
    {:ok, _} = DataChannel.create(s, a, "chat")
    :ok = PeerConnection.add_transceiver_from_kind(s, a, :audio)
    :ok = PeerConnection.add_transceiver_from_kind(s, a, :video)
    :ok = PeerConnection.create_offer(s, a)
    assert_receive {:offer, ^a, offer}
    {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(offer)
    assert sdp =~ "UDP/TLS/RTP/SAVPF"
    sdp
  end

  # Sets `sdp` as a remote offer on a fresh connection: the synchronous refusal, or the
  # asynchronous outcome.
  defp apply_offer(s, sdp) do
    b = new_pc!(s)

    case PeerConnection.set_remote_description(s, b, %{"type" => "offer", "sdp" => sdp}) do
      {:error, reason} ->
        {:sync_error, reason}

      :ok ->
        receive do
          {:ok, ^b, :set_remote_description} -> {:applied, b}
          {:set_remote_description_error, ^b, reason} -> {:async_error, reason}
        after
          5_000 -> flunk("no answer to set_remote_description in 5 s")
        end
    end
  end

  test "an offer with plain RTP (RTP/AVP) instead of UDP/TLS/RTP/SAVPF is refused", %{
    specter: s
  } do
    # webrtc-rs 0.21.1 would apply it (and answer as if DTLS-SRTP had been offered);
    # Specter refuses it synchronously, before anything is negotiated.
    secure = media_offer(s)

    for proto <- ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"] do
      plain = String.replace(secure, "UDP/TLS/RTP/SAVPF", proto)
      assert {:sync_error, {:invalid_sdp, detail}} = apply_offer(s, plain), proto
      assert detail =~ "m=audio uses #{proto}"
    end

    # Only the audio section downgraded: still refused.
    [head, rest] = String.split(secure, "UDP/TLS/RTP/SAVPF", parts: 2)
    assert {:sync_error, {:invalid_sdp, _}} = apply_offer(s, head <> "RTP/AVP" <> rest)

    # The data channel's section without DTLS, too.
    assert {:sync_error, {:invalid_sdp, detail}} =
             apply_offer(s, String.replace(secure, "UDP/DTLS/SCTP", "UDP/SCTP"))

    assert detail =~ "m=application"
    # And the secure original is applied.
    assert {:applied, _} = apply_offer(s, secure)
  end

  test "an offer without a fingerprint is refused", %{specter: s} do
    bare =
      media_offer(s)
      |> String.split("\r\n")
      |> Enum.reject(&String.starts_with?(&1, "a=fingerprint:"))
      |> Enum.join("\r\n")

    refute bare =~ "fingerprint"
    # webrtc-rs refuses it when it applies it: the asynchronous reply.
    assert {:async_error, {:invalid_sdp, detail}} = apply_offer(s, bare)
    assert detail =~ "fingerprint"
  end

  ## (c) one instance cannot reach another's objects --------------------------------------

  defp rtp_packet(n) do
    RTP.encode(%RTP{
      marker: true,
      payload_type: 96,
      sequence_number: n,
      timestamp: n * 3000,
      ssrc: 1,
      payload: <<0x10, n::32>>
    })
  end

  defp writer(s, track, n \\ 0) do
    receive do
      :stop -> :ok
    after
      10 ->
        _ = TrackLocalStaticRTP.write_rtp(s, track, rtp_packet(n))
        writer(s, track, n + 1)
    end
  end

  test "ids of one instance are unknown to every function of another", %{specter: s} do
    # Instance s: a connected pair with a data channel, a sent track, the remote track it
    # becomes, a transceiver, a sender, a recorder; plus a spare sample track.
    a = new_pc!(s)
    b = new_pc!(s)
    {:ok, rtp} = TrackLocalStaticRTP.new(s, @vp8, "cam", "a")
    opus = %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
    {:ok, sample} = TrackLocalStaticSample.new(s, opus, "mic", "a")
    sender = add_track!(s, a, rtp)
    dc = connect!(s, a, b)
    assert_receive {:data_channel_open, ^dc}
    w = spawn_link(fn -> writer(s, rtp) end)
    assert_receive {:track, ^b, remote, _}, 5_000
    :ok = PeerConnection.get_transceivers(s, a)
    assert_receive {:transceivers, ^a, [%{id: transceiver} | _]}
    {:ok, media_engine} = Specter.new_media_engine(s)
    {:ok, registry} = Specter.new_registry(s, media_engine)
    {:ok, media_engine2} = Specter.new_media_engine(s)
    api = PeerConnection.default_api!(s)
    dir = System.tmp_dir!() |> Path.join("specter-sec-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, recorder} = MediaFile.record(s, remote, Path.join(dir, "a.ivf"))
    flush()

    # Instance other, with objects of its own to mix in.
    {:ok, other} = Specter.init()
    own_pc = new_pc!(other)
    {:ok, own_rtp} = TrackLocalStaticRTP.new(other, @vp8, "v", "o")
    {:ok, before} = Specter.instance_info(s)

    nf = [{:error, :not_found}]
    nf_or_track = [{:error, :not_found}, {:error, :invalid_track}]
    desc = %{"type" => "offer", "sdp" => "v=0"}
    cand = %{"candidate" => "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid" => "0"}
    path = Path.join(dir, "b.ivf")

    calls = [
      {"Specter.new_registry", fn -> Specter.new_registry(other, media_engine2) end, nf},
      {"Specter.new_api", fn -> Specter.new_api(other, media_engine, registry) end, nf},
      {"Specter.register_codec",
       fn -> Specter.register_codec(other, media_engine2, opus, 111) end, nf},
      {"Specter.media_engine_exists?",
       fn -> Specter.media_engine_exists?(other, media_engine) end, [false]},
      {"Specter.registry_exists?", fn -> Specter.registry_exists?(other, registry) end, [false]},
      {"Specter.api_exists?", fn -> Specter.api_exists?(other, api) end, [false]},
      {"PeerConnection.new", fn -> PeerConnection.new(other, api) end, nf},
      {"PeerConnection.exists?", fn -> PeerConnection.exists?(other, a) end, [false]},
      {"PeerConnection.controlling_process",
       fn -> PeerConnection.controlling_process(other, a, self()) end, nf},
      {"PeerConnection.create_offer", fn -> PeerConnection.create_offer(other, a) end, nf},
      {"PeerConnection.create_answer", fn -> PeerConnection.create_answer(other, b) end, nf},
      {"PeerConnection.set_local_description",
       fn -> PeerConnection.set_local_description(other, a, desc) end,
       nf ++ [{:error, {:invalid_sdp, :_}}]},
      {"PeerConnection.set_remote_description",
       fn -> PeerConnection.set_remote_description(other, b, desc) end,
       nf ++ [{:error, {:invalid_sdp, :_}}]},
      {"PeerConnection.add_ice_candidate",
       fn -> PeerConnection.add_ice_candidate(other, a, cand) end, nf},
      {"PeerConnection.local_description", fn -> PeerConnection.local_description(other, a) end,
       nf},
      {"PeerConnection.current_local_description",
       fn -> PeerConnection.current_local_description(other, a) end, nf},
      {"PeerConnection.pending_local_description",
       fn -> PeerConnection.pending_local_description(other, a) end, nf},
      {"PeerConnection.remote_description", fn -> PeerConnection.remote_description(other, a) end,
       nf},
      {"PeerConnection.current_remote_description",
       fn -> PeerConnection.current_remote_description(other, a) end, nf},
      {"PeerConnection.pending_remote_description",
       fn -> PeerConnection.pending_remote_description(other, a) end, nf},
      {"PeerConnection.connection_state", fn -> PeerConnection.connection_state(other, a) end,
       nf},
      {"PeerConnection.ice_connection_state",
       fn -> PeerConnection.ice_connection_state(other, a) end, nf},
      {"PeerConnection.ice_gathering_state",
       fn -> PeerConnection.ice_gathering_state(other, a) end, nf},
      {"PeerConnection.signaling_state", fn -> PeerConnection.signaling_state(other, a) end, nf},
      {"PeerConnection.get_stats", fn -> PeerConnection.get_stats(other, a) end, nf},
      {"PeerConnection.create_data_channel",
       fn -> PeerConnection.create_data_channel(other, a, "x") end, nf},
      {"PeerConnection.add_track (their connection)",
       fn -> PeerConnection.add_track(other, a, own_rtp) end, nf_or_track},
      {"PeerConnection.add_track (their track)",
       fn -> PeerConnection.add_track(other, own_pc, rtp) end, nf_or_track},
      {"PeerConnection.remove_track", fn -> PeerConnection.remove_track(other, a, sender) end,
       nf},
      {"PeerConnection.replace_track",
       fn -> PeerConnection.replace_track(other, a, sender, nil) end, nf},
      {"PeerConnection.add_transceiver_from_kind",
       fn -> PeerConnection.add_transceiver_from_kind(other, a, :audio) end, nf},
      {"PeerConnection.add_transceiver_from_track",
       fn -> PeerConnection.add_transceiver_from_track(other, own_pc, sample) end, nf_or_track},
      {"PeerConnection.get_transceivers", fn -> PeerConnection.get_transceivers(other, a) end,
       nf},
      {"PeerConnection.get_senders", fn -> PeerConnection.get_senders(other, a) end, nf},
      {"PeerConnection.get_receivers", fn -> PeerConnection.get_receivers(other, b) end, nf},
      {"PeerConnection.restart_ice", fn -> PeerConnection.restart_ice(other, a) end, nf},
      {"PeerConnection.get_configuration", fn -> PeerConnection.get_configuration(other, a) end,
       nf},
      {"PeerConnection.set_configuration",
       fn -> PeerConnection.set_configuration(other, a, ice_transport_policy: :relay) end, nf},
      {"RtpTransceiver.set_direction",
       fn -> RtpTransceiver.set_direction(other, a, transceiver, :inactive) end, nf},
      {"RtpTransceiver.stop", fn -> RtpTransceiver.stop(other, a, transceiver) end, nf},
      {"DataChannel.create", fn -> DataChannel.create(other, a, "x") end, nf},
      {"DataChannel.send", fn -> DataChannel.send(other, dc, "x") end, nf},
      {"DataChannel.send_text", fn -> DataChannel.send_text(other, dc, "x") end, nf},
      {"DataChannel.ready_state", fn -> DataChannel.ready_state(other, dc) end, nf},
      {"DataChannel.info", fn -> DataChannel.info(other, dc) end, nf},
      {"DataChannel.set_active", fn -> DataChannel.set_active(other, dc, false) end, nf},
      {"DataChannel.set_batch", fn -> DataChannel.set_batch(other, dc, 8) end, nf},
      {"DataChannel.buffered_amount", fn -> DataChannel.buffered_amount(other, dc) end, nf},
      {"DataChannel.set_buffered_amount_low_threshold",
       fn -> DataChannel.set_buffered_amount_low_threshold(other, dc, 1) end, nf},
      {"DataChannel.recv", fn -> DataChannel.recv(other, dc, 0) end, nf},
      {"DataChannel.close", fn -> DataChannel.close(other, dc) end, nf},
      {"TrackLocalStaticSample.exists?", fn -> TrackLocalStaticSample.exists?(other, sample) end,
       [false]},
      {"TrackLocalStaticSample.write_sample",
       fn -> TrackLocalStaticSample.write_sample(other, sample, <<0xFC>>, 20_000) end,
       nf_or_track},
      {"TrackLocalStaticSample.close", fn -> TrackLocalStaticSample.close(other, sample) end,
       nf_or_track},
      {"TrackLocalStaticRTP.exists?", fn -> TrackLocalStaticRTP.exists?(other, rtp) end, [false]},
      {"TrackLocalStaticRTP.write_rtp",
       fn -> TrackLocalStaticRTP.write_rtp(other, rtp, rtp_packet(1)) end, nf_or_track},
      {"TrackLocalStaticRTP.close", fn -> TrackLocalStaticRTP.close(other, rtp) end, nf_or_track},
      {"TrackRemote.exists?", fn -> TrackRemote.exists?(other, remote) end, [false]},
      {"TrackRemote.info", fn -> TrackRemote.info(other, remote) end, nf},
      {"TrackRemote.set_active", fn -> TrackRemote.set_active(other, remote, true) end, nf},
      {"TrackRemote.request_keyframe", fn -> TrackRemote.request_keyframe(other, remote) end, nf},
      {"TrackRemote.forward (to their own track)",
       fn -> TrackRemote.forward(other, remote, own_rtp) end, nf},
      {"TrackRemote.forward (from their track)",
       fn -> TrackRemote.forward(s, remote, own_rtp) end, nf_or_track},
      {"TrackRemote.unforward", fn -> TrackRemote.unforward(other, remote, rtp) end, nf_or_track},
      {"MediaFile.record", fn -> MediaFile.record(other, remote, path) end, nf},
      {"MediaFile.stop_record", fn -> MediaFile.stop_record(other, recorder) end, nf},
      {"MediaFile.play", fn -> MediaFile.play(other, sample, path) end,
       nf_or_track ++ [{:error, {:invalid_argument, :path}}]},
      {"PeerConnection.close", fn -> PeerConnection.close(other, a) end, nf}
    ]

    for {label, fun, allowed} <- calls do
      result = fun.()

      assert Enum.any?(allowed, fn
               {:error, {tag, :_}} -> match?({:error, {^tag, _}}, result)
               ok -> ok == result
             end),
             "#{label} from another instance answered #{inspect(result)}"
    end

    refute File.exists?(path), "a recording was started from another instance"

    # Nothing happened to instance s: same objects, still connected, data still flows, the
    # remote track still receives, the recorder still records, and no reply of an operation
    # on its connections reached this process.
    assert {:ok, ^before} = Specter.instance_info(s)
    assert :ok = PeerConnection.connection_state(s, a)
    assert_receive {:connection_state, ^a, :connected}
    assert :ok = DataChannel.send_text(s, dc, "still here")
    assert_receive {:data_channel_message, _, {:text, "still here"}}
    assert :ok = TrackRemote.set_active(s, remote, :once)
    assert_receive {:rtp, ^remote, _}
    refute_received {:offer, ^a, _}
    refute_received {:stats, ^a, _}
    refute_received {:transceiver, ^a, _}
    refute_received {:data_channel_created, ^a, _}
    refute_received {:peer_connection_closed, _}

    send(w, :stop)
    :ok = MediaFile.stop_record(s, recorder)
    assert_receive {:record_finished, ^recorder, %{packet_count: n}} when n > 0
  end
end
