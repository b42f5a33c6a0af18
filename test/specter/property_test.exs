defmodule Specter.PropertyTest do
  @moduledoc false
  # Property-based bad input, with PropEr (Debian's erlang-proper, see Specter.PropEr).
  #
  # bad_input_test.exs feeds a fixed list of wrong values to a subset of the API; here
  # generators throw random terms (atoms, small/huge/negative integers, floats, binaries,
  # invalid UTF-8, improper lists, nested lists/maps/tuples, pids, refs, funs, ids of the
  # wrong kind, forged %Specter{} structs) at every position of every public function,
  # mutate real offers and answers (truncation, byte flips, deleted/duplicated/injected
  # lines) and candidates (both casings, wrong types), and random start_link options at
  # Specter.Session. Properties: nothing raises (a NIF panic would raise :nif_panicked),
  # every answer is a documented success or {:error, documented reason}, and every
  # asynchronous {:<op>_error, pc, reason} carries a documented reason too.
  use ExUnit.Case, async: false

  import Specter.TestSupport
  import Specter.PropEr, only: [t: 1, t: 2]

  alias Specter.{
    DataChannel,
    MediaFile,
    PeerConnection,
    RtpTransceiver,
    TrackLocalStaticRTP,
    TrackLocalStaticSample,
    TrackRemote
  }

  @moduletag :property
  @moduletag timeout: 120_000

  @cases 300

  setup_all do
    Specter.PropEr.load!()
    :ok
  end

  ## Documented reasons ------------------------------------------------------------------

  # Specter's error table (Specter.error/0), plus the few reasons single functions document.
  @bare [
    :not_found,
    :closed,
    :invalid_json,
    :invalid_session_description,
    :invalid_track,
    :too_large,
    :buffer_full,
    :not_owner
  ]
  @tagged_detail [
    :invalid_sdp,
    :invalid_candidate,
    :invalid_state,
    :invalid_codec,
    :webrtc,
    :runtime_unavailable
  ]

  defp documented?(reason) do
    case reason do
      r when r in @bare -> true
      {tag, name} when tag in [:invalid_argument, :invalid_option] and is_atom(name) -> true
      {tag, detail} when tag in @tagged_detail and is_binary(detail) -> true
      _ -> false
    end
  end

  # Function-specific documented reasons.
  defp documented?(label, reason) do
    documented?(reason) or
      case {label, reason} do
        {"RTP.decode/1", :invalid_packet} -> true
        {"RTP.encode/1", :invalid_packet} -> true
        {"DataChannel.recv/3", :timeout} -> true
        {"PeerConnection.await_connected/3", {:timeout, pending}} -> is_list(pending)
        {"PeerConnection.await_connected/3", {:failed, pc}} -> is_binary(pc)
        _ -> false
      end
  end

  ## Generators ------------------------------------------------------------------------

  defp bind(gen, fun), do: t(:bind, [gen, fun, false])

  defp invalid_utf8 do
    bind(t(:binary), fn b -> <<0xFF>> <> b <> <<0xC3>> end)
  end

  defp huge_integer do
    bind(t(:tuple, [[t(:integer), t(:elements, [[32, 63, 64, 65, 128, 1000]])]]), fn {n, e} ->
      n * Integer.pow(2, e) + if(n < 0, do: -1, else: 1)
    end)
  end

  defp map_of(gen), do: bind(t(:list, [t(:tuple, [[gen, gen]])]), &Map.new/1)

  defp improper_list,
    do:
      bind(
        t(:tuple, [[t(:list, [t(:int)]), t(:atom)]]),
        &(&1 |> elem(0) |> Kernel.++(elem(&1, 1)))
      )

  defp small_term do
    t(:oneof, [[t(:atom), t(:int), t(:binary), t(:float), t(:exactly, [nil]), t(:bool)]])
  end

  # Everything that is not what a function wants, and some things that almost are.
  defp garbage(ctx) do
    t(:weighted_union, [
      [
        {3, t(:atom)},
        {3, t(:integer)},
        {2, huge_integer()},
        {2, t(:float)},
        {3, t(:binary)},
        {2, invalid_utf8()},
        {2, t(:list, [small_term()])},
        {1, improper_list()},
        {2, t(:loose_tuple, [small_term()])},
        {2, map_of(small_term())},
        {1, t(:list, [t(:tuple, [[t(:atom), small_term()]])])},
        {1, t(:any)},
        {1,
         t(:elements, [
           [
             self(),
             ctx.dead_pid,
             make_ref(),
             fn -> :ok end,
             %Specter{native: make_ref()},
             %Specter{native: :forged},
             %Specter.RtpCodecCapability{mime_type: 5},
             "",
             "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c",
             "not-a-uuid",
             :binary.copy("x", 70_000),
             [],
             %{},
             {},
             :infinity,
             0,
             -1,
             0xFFFFFFFF + 1
           ]
         ])},
        # real ids, in the wrong place
        {3, t(:elements, [ctx.ids])}
      ]
    ])
  end

  ## The calls ---------------------------------------------------------------------------

  # {label, function, valid arguments, success?}. Destructive calls (close, ownership
  # handover) get objects of their own so the rest keep theirs.
  defp calls(c) do
    s = c.specter
    opus = %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
    vp8 = %Specter.RtpCodecCapability{mime_type: "video/VP8"}
    offer = %{"type" => "offer", "sdp" => c.offer_sdp}
    cand = %{"candidate" => "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid" => "0"}
    missing = "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c"
    nofile = Path.join(System.tmp_dir!(), "specter-no-such-file-#{System.unique_integer()}.ivf")

    [
      {"Specter.init/1", &Specter.init/1, [[loopback_only: true]]},
      {"Specter.config/1", &Specter.config/1, [s]},
      {"Specter.new_media_engine/2", &Specter.new_media_engine/2, [s, [default_codecs: false]]},
      {"Specter.register_codec/4", &Specter.register_codec/4, [s, c.media_engine, opus, 111]},
      {"Specter.new_registry/2", &Specter.new_registry/2, [s, c.media_engine]},
      {"Specter.new_api/3", &Specter.new_api/3, [s, missing, missing]},
      {"Specter.media_engine_exists?/2", &Specter.media_engine_exists?/2, [s, c.media_engine]},
      {"Specter.registry_exists?/2", &Specter.registry_exists?/2, [s, missing]},
      {"Specter.api_exists?/2", &Specter.api_exists?/2, [s, c.api]},
      {"Specter.instance_info/1", &Specter.instance_info/1, [s]},
      {"PeerConnection.new/2", &PeerConnection.new/2, [s, missing]},
      {"PeerConnection.close/2", &PeerConnection.close/2, [s, c.pc_to_close]},
      {"PeerConnection.exists?/2", &PeerConnection.exists?/2, [s, c.pc]},
      {"PeerConnection.controlling_process/3", &PeerConnection.controlling_process/3,
       [s, c.pc_to_hand, self()]},
      {"PeerConnection.create_offer/3", &PeerConnection.create_offer/3, [s, c.pc, []]},
      {"PeerConnection.create_answer/3", &PeerConnection.create_answer/3, [s, c.pc, []]},
      {"PeerConnection.set_local_description/3", &PeerConnection.set_local_description/3,
       [s, c.pc, offer]},
      {"PeerConnection.set_remote_description/3", &PeerConnection.set_remote_description/3,
       [s, c.pc, offer]},
      {"PeerConnection.add_ice_candidate/3", &PeerConnection.add_ice_candidate/3,
       [s, c.pc, cand]},
      {"PeerConnection.local_description/3", &PeerConnection.local_description/3,
       [s, c.pc, [include_candidates: true]]},
      {"PeerConnection.current_local_description/3", &PeerConnection.current_local_description/3,
       [s, c.pc, []]},
      {"PeerConnection.pending_local_description/3", &PeerConnection.pending_local_description/3,
       [s, c.pc, []]},
      {"PeerConnection.remote_description/2", &PeerConnection.remote_description/2, [s, c.pc]},
      {"PeerConnection.current_remote_description/2",
       &PeerConnection.current_remote_description/2, [s, c.pc]},
      {"PeerConnection.pending_remote_description/2",
       &PeerConnection.pending_remote_description/2, [s, c.pc]},
      {"PeerConnection.connection_state/2", &PeerConnection.connection_state/2, [s, c.pc]},
      {"PeerConnection.ice_connection_state/2", &PeerConnection.ice_connection_state/2,
       [s, c.pc]},
      {"PeerConnection.ice_gathering_state/2", &PeerConnection.ice_gathering_state/2, [s, c.pc]},
      {"PeerConnection.signaling_state/2", &PeerConnection.signaling_state/2, [s, c.pc]},
      {"PeerConnection.get_stats/3", &PeerConnection.get_stats/3, [s, c.pc, [format: :map]]},
      {"PeerConnection.create_data_channel/3", &PeerConnection.create_data_channel/3,
       [s, c.pc, "l"]},
      {"PeerConnection.add_track/3", &PeerConnection.add_track/3, [s, c.pc, c.track]},
      {"PeerConnection.remove_track/3", &PeerConnection.remove_track/3, [s, c.pc, missing]},
      {"PeerConnection.replace_track/4", &PeerConnection.replace_track/4,
       [s, c.pc, missing, c.track]},
      {"PeerConnection.add_transceiver_from_kind/4", &PeerConnection.add_transceiver_from_kind/4,
       [s, c.pc, :audio, [direction: :recvonly]]},
      {"PeerConnection.add_transceiver_from_track/4",
       &PeerConnection.add_transceiver_from_track/4, [s, c.pc, c.rtp_track, []]},
      {"PeerConnection.get_transceivers/2", &PeerConnection.get_transceivers/2, [s, c.pc]},
      {"PeerConnection.get_senders/2", &PeerConnection.get_senders/2, [s, c.pc]},
      {"PeerConnection.get_receivers/2", &PeerConnection.get_receivers/2, [s, c.pc]},
      {"PeerConnection.restart_ice/2", &PeerConnection.restart_ice/2, [s, c.pc]},
      {"PeerConnection.get_configuration/2", &PeerConnection.get_configuration/2, [s, c.pc]},
      {"PeerConnection.set_configuration/3", &PeerConnection.set_configuration/3,
       [s, c.pc, [ice_transport_policy: :all]]},
      # no connections to wait for, and never a long wait: the timeout is 0
      {"PeerConnection.await_connected/3", &PeerConnection.await_connected/3, [s, [], 0]},
      {"DataChannel.create/4", &DataChannel.create/4, [s, c.pc, "l", [ordered: false]]},
      {"DataChannel.set_batch/3", &DataChannel.set_batch/3, [s, c.dc, 4]},
      {"DataChannel.send/3", &DataChannel.send/3, [s, c.dc, "x"]},
      {"DataChannel.send_text/3", &DataChannel.send_text/3, [s, c.dc, "x"]},
      {"DataChannel.close/2", &DataChannel.close/2, [s, c.dc_to_close]},
      {"DataChannel.ready_state/2", &DataChannel.ready_state/2, [s, c.dc]},
      {"DataChannel.info/2", &DataChannel.info/2, [s, c.dc]},
      {"DataChannel.set_active/3", &DataChannel.set_active/3, [s, c.dc, false]},
      {"DataChannel.recv/3", &DataChannel.recv/3, [s, c.dc, 0]},
      {"DataChannel.buffered_amount/2", &DataChannel.buffered_amount/2, [s, c.dc]},
      {"DataChannel.set_buffered_amount_low_threshold/3",
       &DataChannel.set_buffered_amount_low_threshold/3, [s, c.dc, 1024]},
      {"TrackLocalStaticSample.new/4", &TrackLocalStaticSample.new/4, [s, opus, "a", "s"]},
      {"TrackLocalStaticSample.exists?/2", &TrackLocalStaticSample.exists?/2, [s, c.track]},
      {"TrackLocalStaticSample.write_sample/4", &TrackLocalStaticSample.write_sample/4,
       [s, c.track, <<0xFC, 0xFF, 0xFE>>, {20, :millisecond}]},
      {"TrackLocalStaticSample.close/2", &TrackLocalStaticSample.close/2, [s, c.track_to_close]},
      {"TrackLocalStaticRTP.new/4", &TrackLocalStaticRTP.new/4, [s, vp8, "v", "s"]},
      {"TrackLocalStaticRTP.write_rtp/3", &TrackLocalStaticRTP.write_rtp/3,
       [s, c.rtp_track, Specter.RTP.encode(%Specter.RTP{payload_type: 96, payload: "x"})]},
      {"TrackLocalStaticRTP.exists?/2", &TrackLocalStaticRTP.exists?/2, [s, c.rtp_track]},
      {"TrackLocalStaticRTP.close/2", &TrackLocalStaticRTP.close/2, [s, c.rtp_track_to_close]},
      {"TrackRemote.exists?/2", &TrackRemote.exists?/2, [s, missing]},
      {"TrackRemote.set_active/3", &TrackRemote.set_active/3, [s, missing, :once]},
      {"TrackRemote.info/2", &TrackRemote.info/2, [s, missing]},
      {"TrackRemote.request_keyframe/3", &TrackRemote.request_keyframe/3,
       [s, missing, [fir: true]]},
      {"TrackRemote.forward/3", &TrackRemote.forward/3, [s, missing, c.rtp_track]},
      {"TrackRemote.unforward/3", &TrackRemote.unforward/3, [s, missing, c.rtp_track]},
      {"RtpTransceiver.set_direction/4", &RtpTransceiver.set_direction/4,
       [s, c.pc, c.transceiver, :sendrecv]},
      {"RtpTransceiver.stop/3", &RtpTransceiver.stop/3, [s, c.pc, missing]},
      {"MediaFile.play/4", &MediaFile.play/4, [s, c.track, nofile, [fps: 30]]},
      {"MediaFile.stop_play/2", &MediaFile.stop_play/2, [s, missing]},
      {"MediaFile.record/4", &MediaFile.record/4, [s, missing, nofile, []]},
      {"MediaFile.stop_record/2", &MediaFile.stop_record/2, [s, missing]},
      {"RTP.decode/1", &Specter.RTP.decode/1, [<<0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1>>]},
      {"RTP.encode/1", &Specter.RTP.encode/1, [%Specter.RTP{payload: "x"}]},
      {"JSON.decode/1", &Specter.JSON.decode/1, ["{}"]},
      {"JSON.encode/1", &Specter.JSON.encode/1, [%{"a" => [1, 2.5, nil]}]}
    ]
  end

  # What a call may answer besides {:error, documented reason}.
  defp success?(label, result) do
    cond do
      String.ends_with?(label, "exists?/2") ->
        is_boolean(result)

      label == "RTP.encode/1" ->
        is_binary(result)

      label == "RTP.decode/1" ->
        match?({:ok, %Specter.RTP{}}, result)

      label == "JSON.encode/1" ->
        match?({:ok, json} when is_binary(json), result)

      label == "DataChannel.recv/3" ->
        match?({:ok, {kind, _}} when kind in [:text, :binary], result)

      true ->
        result == :ok or match?({:ok, _}, result)
    end
  end

  defp classify(label, fun) do
    try do
      result = fun.()

      cond do
        success?(label, result) -> :ok
        match?({:error, _}, result) and documented?(label, elem(result, 1)) -> :ok
        true -> {:bad_answer, result}
      end
    rescue
      e -> {:raised, Exception.format(:error, e, __STACKTRACE__)}
    catch
      kind, reason -> {:raised, {kind, reason}}
    end
  end

  # Every {:<op>_error, pc, reason} that arrived so far must carry a documented reason; other
  # messages are dropped.
  defp undocumented_async_errors(acc \\ []) do
    receive do
      {tag, _pc, reason} = msg when is_atom(tag) ->
        if String.ends_with?(Atom.to_string(tag), "_error") and not documented?(reason),
          do: undocumented_async_errors([msg | acc]),
          else: undocumented_async_errors(acc)

      _ ->
        undocumented_async_errors(acc)
    after
      0 -> acc
    end
  end

  ## Fixtures ----------------------------------------------------------------------------

  setup do
    :ets.new(:property_failures, [:named_table, :public, :ordered_set])
    {:ok, specter} = Specter.init()
    pc = new_pc!(specter)
    {:ok, dc} = DataChannel.create(specter, pc, "c")
    pc_to_close = new_pc!(specter)
    pc_to_hand = new_pc!(specter)
    {:ok, dc_to_close} = DataChannel.create(specter, pc_to_close, "d")
    opus = %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
    vp8 = %Specter.RtpCodecCapability{mime_type: "video/VP8"}
    {:ok, track} = TrackLocalStaticSample.new(specter, opus, "a", "s")
    {:ok, track_to_close} = TrackLocalStaticSample.new(specter, opus, "a2", "s")
    {:ok, rtp_track} = TrackLocalStaticRTP.new(specter, vp8, "v", "s")
    {:ok, rtp_track_to_close} = TrackLocalStaticRTP.new(specter, vp8, "v2", "s")
    :ok = PeerConnection.add_transceiver_from_kind(specter, pc, :video)
    assert_receive {:transceiver, ^pc, transceiver}
    {:ok, media_engine} = Specter.new_media_engine(specter)
    api = PeerConnection.default_api!(specter)

    # A real offer, for the descriptions' valid shape.
    offerer = new_pc!(specter)
    {:ok, _} = DataChannel.create(specter, offerer, "o")
    :ok = PeerConnection.create_offer(specter, offerer)
    assert_receive {:offer, ^offerer, offer_json}
    {:ok, %{"sdp" => offer_sdp}} = Specter.JSON.decode(offer_json)

    dead_pid = spawn(fn -> :ok end)
    flush()

    ctx = %{
      specter: specter,
      pc: pc,
      dc: dc,
      pc_to_close: pc_to_close,
      pc_to_hand: pc_to_hand,
      dc_to_close: dc_to_close,
      track: track,
      track_to_close: track_to_close,
      rtp_track: rtp_track,
      rtp_track_to_close: rtp_track_to_close,
      transceiver: transceiver,
      media_engine: media_engine,
      api: api,
      offer_sdp: offer_sdp,
      dead_pid: dead_pid
    }

    ids = [pc, dc, track, rtp_track, transceiver, media_engine, api]
    Map.put(ctx, :ids, ids)
  end

  ## Properties --------------------------------------------------------------------------

  # One property per group of modules, so each function gets dozens of cases.
  @groups [
    {"Specter", ["Specter."]},
    {"Specter.PeerConnection", ["PeerConnection."]},
    {"Specter.DataChannel", ["DataChannel."]},
    {"the tracks", ["TrackLocalStaticSample.", "TrackLocalStaticRTP.", "TrackRemote."]},
    {"Specter.RtpTransceiver and Specter.MediaFile", ["RtpTransceiver.", "MediaFile."]},
    {"Specter.RTP and Specter.JSON", ["RTP.", "JSON."]}
  ]

  for {name, prefixes} <- @groups do
    test "random terms at every position of every public function of #{name}", ctx do
      prefixes = unquote(prefixes)
      calls = for {label, _, _} = c <- calls(ctx), String.starts_with?(label, prefixes), do: c
      garbage_property(ctx, calls)
    end
  end

  defp garbage_property(ctx, calls) do
    # `all?`: every argument gets garbage, else the one at `pos`.
    gen =
      t(:tuple, [
        [
          t(:elements, [calls]),
          t(:bool),
          t(:nat),
          t(:list, [garbage(ctx)])
        ]
      ])

    prop =
      forall_safely(gen, fn {{label, fun, args}, all?, pos, garbage} ->
        n = length(args)

        positions = if all?, do: Enum.to_list(0..(n - 1)//1), else: [rem(pos, max(n, 1))]

        values = Stream.cycle(if garbage == [], do: [nil], else: garbage)

        bad_args =
          positions
          |> Enum.zip(values)
          |> Enum.reduce(args, fn {p, v}, acc -> List.replace_at(acc, p, v) end)

        verdict = classify(label, fn -> apply(fun, bad_args) end)
        async = undocumented_async_errors()

        if verdict != :ok or async != [] do
          record_failure({label, bad_args, verdict, async})
          false
        else
          true
        end
      end)

    assert_property(prop, @cases)

    # The runtime still works, and late asynchronous failures are documented too.
    Process.sleep(100)
    assert undocumented_async_errors() == []
    # (ctx.pc itself may have been closed: real ids are among the garbage.)
    pc = new_pc!(ctx.specter)
    assert :ok = PeerConnection.create_offer(ctx.specter, pc)
    assert_receive {:offer, ^pc, _}, 5_000
  end

  test "garbage timeouts never crash the waits", ctx do
    s = ctx.specter

    for timeout <- [-1, 1.5, :soon, "5", 0xFFFFFFFF + 1, Integer.pow(2, 70), [], nil] do
      assert {:error, {:invalid_argument, :timeout}} =
               PeerConnection.await_connected(s, [ctx.pc], timeout),
             inspect(timeout)

      assert {:error, {:invalid_argument, :timeout}} = DataChannel.recv(s, ctx.dc, timeout),
             inspect(timeout)
    end

    # :infinity (a timeout()) is a wait, not an error: it is still waiting after 100 ms.
    waiter = spawn(fn -> PeerConnection.await_connected(s, [ctx.pc], :infinity) end)
    Process.sleep(100)
    assert Process.alive?(waiter)
    Process.exit(waiter, :kill)
  end

  ## RTP packets: encode and decode are inverses on valid packets; anything else is refused.

  defp rtp_packet_gen do
    one_byte_ext =
      t(:tuple, [[t(:range, [1, 14]), bind(t(:range, [1, 16]), &:crypto.strong_rand_bytes/1)]])

    two_byte_ext =
      t(:tuple, [[t(:range, [1, 255]), bind(t(:range, [0, 40]), &:crypto.strong_rand_bytes/1)]])

    ext =
      t(:oneof, [
        [
          t(:exactly, [{nil, []}]),
          bind(t(:list, [one_byte_ext]), &{0xBEDE, &1}),
          bind(t(:list, [two_byte_ext]), &{0x1000, &1})
        ]
      ])

    bind(
      t(:tuple, [
        [
          t(:bool),
          t(:range, [0, 127]),
          t(:range, [0, 65_535]),
          t(:range, [0, 0xFFFFFFFF]),
          t(:range, [0, 0xFFFFFFFF]),
          t(:list, [t(:range, [0, 0xFFFFFFFF])]),
          ext,
          t(:binary),
          t(:range, [0, 255])
        ]
      ]),
      fn {m, pt, seq, ts, ssrc, csrc, {profile, exts}, payload, padding} ->
        %Specter.RTP{
          marker: m,
          payload_type: pt,
          sequence_number: seq,
          timestamp: ts,
          ssrc: ssrc,
          csrc: Enum.take(csrc, 15),
          extension_profile: profile,
          extensions: exts,
          # RTP padding counts itself, so there is no padding of one byte that is 0
          payload: payload,
          padding: padding
        }
      end
    )
  end

  test "RTP: decode(encode(p)) == p, and bytes or fields out of range are refused", ctx do
    roundtrip =
      forall_safely(rtp_packet_gen(), fn p ->
        case classify("RTP.encode/1", fn -> Specter.RTP.encode(p) end) do
          :ok ->
            bin = Specter.RTP.encode(p)
            # A two-byte block may hold padding-only bytes that decode drops; compare ids/data.
            {:ok, back} = Specter.RTP.decode(bin)
            back == p or (record_failure({"RTP round trip", [p], back, []}) && false)

          other ->
            record_failure({"RTP.encode/1", [p], other, []})
            false
        end
      end)

    assert_property(roundtrip, @cases)

    # Mutated wire packets: decode answers {:ok, p} or {:error, :invalid_packet}, and a
    # packet it accepts encodes back to a packet that decodes the same.
    mutated =
      forall_safely(t(:tuple, [[rtp_packet_gen(), t(:list, [byte_edit()])]]), fn {p, edits} ->
        bin = apply_byte_edits(Specter.RTP.encode(p), edits)

        case classify("RTP.decode/1", fn -> Specter.RTP.decode(bin) end) do
          :ok ->
            case Specter.RTP.decode(bin) do
              {:ok, q} -> Specter.RTP.decode(Specter.RTP.encode(q)) == {:ok, q}
              {:error, :invalid_packet} -> true
            end

          other ->
            record_failure({"RTP.decode/1", [bin], other, []})
            false
        end
      end)

    assert_property(mutated, @cases)

    # Fields out of range, or not a packet at all.
    garbage_fields =
      forall_safely(
        t(:tuple, [
          [
            t(:elements, [
              [
                :marker,
                :payload_type,
                :sequence_number,
                :timestamp,
                :ssrc,
                :csrc,
                :extension_profile,
                :extensions,
                :payload,
                :padding
              ]
            ]),
            garbage(ctx)
          ]
        ]),
        fn {field, value} ->
          p = Map.put(%Specter.RTP{}, field, value)

          case classify("RTP.encode/1", fn -> Specter.RTP.encode(p) end) do
            :ok ->
              # Either refused, or a value that really is valid and round-trips.
              case Specter.RTP.encode(p) do
                {:error, :invalid_packet} -> true
                bin -> Specter.RTP.decode(bin) == {:ok, p}
              end

            other ->
              record_failure({"RTP.encode/1", [p], other, []})
              false
          end
        end
      )

    assert_property(garbage_fields, @cases)
  end

  ## Session descriptions: real offers and answers, mutated. -----------------------------

  defp byte_edit do
    t(:oneof, [
      [
        t(:tuple, [[t(:exactly, [:truncate]), t(:nat)]]),
        t(:tuple, [[t(:exactly, [:flip]), t(:nat), t(:range, [1, 255])]]),
        t(:tuple, [[t(:exactly, [:insert]), t(:nat), t(:binary)]])
      ]
    ])
  end

  @evil_lines [
    "a=fingerprint:sha-256 00",
    "a=fingerprint:md5 AA:BB",
    "a=setup:holdconn",
    "m=video 0 RTP/AVP 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF",
    "m=application 9 UDP/DTLS/SCTP",
    "a=ice-ufrag:",
    "a=ice-pwd:x",
    "a=rtpmap:96 VP8/0",
    "a=rtpmap:300 opus/48000/2",
    "a=rtpmap:96",
    "a=fmtp:96 apt=999",
    "a=ssrc-group:FID 1",
    "a=ssrc:4294967296 cname:x",
    "a=msid:",
    "a=extmap:99999 urn:x",
    "a=extmap:0 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sctp-port:-1",
    "a=sctp-port:99999999999",
    "a=max-message-size:0",
    "a=rid:h send pt=96;max-width=-1",
    "a=simulcast:send h;m;l",
    "a=group:BUNDLE 9 9 9",
    "a=mid:",
    "c=IN IP6 ::1",
    "c=IN IP4 999.0.0.1",
    "a=candidate:1 1 udp 1 127.0.0.1 70000 typ host",
    "a=candidate:x",
    "a=end-of-candidates",
    "a=recvonly",
    "a=inactive",
    "b=AS:-5",
    "t=9 1",
    "o=- x y IN IP4 127.0.0.1",
    "v=1",
    ""
  ]

  defp line_edit do
    t(:oneof, [
      [
        t(:tuple, [[t(:exactly, [:delete_line]), t(:nat)]]),
        t(:tuple, [[t(:exactly, [:duplicate_line]), t(:nat), t(:nat)]]),
        t(:tuple, [[t(:exactly, [:inject_line]), t(:nat), t(:elements, [@evil_lines])]])
      ]
    ])
  end

  defp apply_byte_edits(bin, edits) do
    Enum.reduce(edits, bin, fn
      {:truncate, n}, b ->
        binary_part(b, 0, rem(n, byte_size(b) + 1))

      {:flip, _, _}, "" ->
        ""

      {:flip, n, x}, b ->
        i = rem(n, byte_size(b))
        <<pre::binary-size(i), c, post::binary>> = b
        <<pre::binary, Bitwise.bxor(c, x), post::binary>>

      {:insert, n, ins}, b ->
        i = rem(n, byte_size(b) + 1)
        <<pre::binary-size(i), post::binary>> = b
        pre <> ins <> post

      _, b ->
        b
    end)
  end

  defp apply_edits(sdp, edits) do
    Enum.reduce(edits, sdp, fn
      {op, _} = e, s when op in [:truncate] ->
        apply_byte_edits(s, [e])

      {:flip, _, _} = e, s ->
        apply_byte_edits(s, [e])

      {:insert, _, _} = e, s ->
        apply_byte_edits(s, [e])

      {:delete_line, n}, s ->
        lines(s, fn ls -> List.delete_at(ls, rem(n, length(ls))) end)

      {:duplicate_line, n, m}, s ->
        lines(s, fn ls ->
          List.insert_at(ls, rem(m, length(ls) + 1), Enum.at(ls, rem(n, length(ls))))
        end)

      {:inject_line, n, l}, s ->
        lines(s, fn ls -> List.insert_at(ls, rem(n, length(ls) + 1), l) end)
    end)
  end

  defp lines(s, fun), do: s |> String.split("\r\n") |> fun.() |> Enum.join("\r\n")

  defp edits_gen do
    t(:list, [t(:weighted_union, [[{2, line_edit()}, {1, byte_edit()}]])])
  end

  # The description as a browser's JSON text, a string-keyed map or an atom-keyed map.
  # (SDP that is not UTF-8 cannot be JSON text: it goes as a map.)
  defp as_input(type, sdp, :json) do
    case Specter.JSON.encode(%{"type" => type, "sdp" => sdp}) do
      {:ok, json} -> json
      {:error, :invalid_json} -> %{"type" => type, "sdp" => sdp}
    end
  end

  defp as_input(type, sdp, :string_map), do: %{"type" => type, "sdp" => sdp}
  defp as_input(type, sdp, :atom_map), do: %{type: type, sdp: sdp}

  # Calls `fun` (an operation answering :ok, then a reply message) and waits for the reply:
  # {:ok, reply} | {:error, reason} (sync or async, documented) | {:bad, why}.
  defp run_op(pc, fun, ok_message) do
    result =
      try do
        fun.()
      rescue
        e -> {:raised, Exception.format(:error, e, __STACKTRACE__)}
      catch
        k, r -> {:raised, {k, r}}
      end

    case result do
      :ok -> await_reply(pc, ok_message, System.monotonic_time(:millisecond) + 5_000)
      {:error, r} -> if documented?(r), do: {:error, r}, else: {:bad, {:undocumented, r}}
      other -> {:bad, other}
    end
  end

  defp await_reply(pc, ok_message, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^ok_message, ^pc, _} = m ->
        {:ok, m}

      {:ok, ^pc, ^ok_message} = m ->
        {:ok, m}

      {tag, ^pc, reason} when is_atom(tag) and tag != :ok ->
        cond do
          not String.ends_with?(Atom.to_string(tag), "_error") ->
            await_reply(pc, ok_message, deadline)

          documented?(reason) ->
            {:error, reason}

          true ->
            {:bad, {:undocumented_async, tag, reason}}
        end
    after
      remaining -> {:bad, {:no_reply_in_5s, ok_message}}
    end
  end

  test "mutated real offers and answers: refused with a documented reason, or applied", ctx do
    s = ctx.specter
    a = new_pc!(s)
    b = new_pc!(s)
    {:ok, _} = DataChannel.create(s, a, "chat")

    for kind <- [:audio, :video],
        do: :ok = PeerConnection.add_transceiver_from_kind(s, a, kind)

    {offer_json, answer_json} = negotiate!(s, a, b)
    {:ok, %{"sdp" => offer}} = Specter.JSON.decode(offer_json)
    {:ok, %{"sdp" => answer}} = Specter.JSON.decode(answer_json)
    flush()

    gen =
      t(:tuple, [
        [
          t(:elements, [[:offer, :answer]]),
          edits_gen(),
          t(:elements, [[:json, :string_map, :atom_map]])
        ]
      ])

    prop =
      forall_safely(gen, fn {which, edits, form} ->
        sdp = apply_edits(if(which == :offer, do: offer, else: answer), edits)
        pc = new_pc!(s)

        steps =
          case which do
            :offer ->
              with {:ok, _} <-
                     run_op(
                       pc,
                       fn ->
                         PeerConnection.set_remote_description(
                           s,
                           pc,
                           as_input("offer", sdp, form)
                         )
                       end,
                       :set_remote_description
                     ),
                   {:ok, {:answer, ^pc, ans}} <-
                     run_op(pc, fn -> PeerConnection.create_answer(s, pc) end, :answer) do
                run_op(
                  pc,
                  fn -> PeerConnection.set_local_description(s, pc, ans) end,
                  :set_local_description
                )
              end

            :answer ->
              {:ok, _} = DataChannel.create(s, pc, "chat")
              :ok = PeerConnection.add_transceiver_from_kind(s, pc, :audio)
              :ok = PeerConnection.add_transceiver_from_kind(s, pc, :video)
              :ok = PeerConnection.create_offer(s, pc)
              assert_receive {:offer, ^pc, own}, 5_000
              :ok = PeerConnection.set_local_description(s, pc, own)
              assert_receive {:ok, ^pc, :set_local_description}, 5_000

              run_op(
                pc,
                fn ->
                  PeerConnection.set_remote_description(s, pc, as_input("answer", sdp, form))
                end,
                :set_remote_description
              )
          end

        :ok = PeerConnection.close(s, pc)
        assert_receive {:peer_connection_closed, ^pc}, 5_000
        async = undocumented_async_errors()

        case steps do
          {:bad, why} ->
            record_failure({"#{which} #{form}", [sdp], why, async})
            false

          _ when async != [] ->
            record_failure({"#{which} #{form}", [sdp], :async, async})
            false

          _ ->
            true
        end
      end)

    assert_property(prop, 200)
    assert :ok = PeerConnection.close(s, a)
  end

  ## ICE candidates ----------------------------------------------------------------------

  @candidates [
    "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "candidate:842163049 1 udp 1677729535 127.0.0.1 47021 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999",
    "candidate:3 1 tcp 1518280447 ::1 9 typ host tcptype active",
    "candidate:4 2 udp 41885439 127.0.0.1 3478 typ relay raddr 127.0.0.1 rport 50000",
    "candidate:5 1 udp 2122260223 abcd-1234.local 50001 typ host",
    ""
  ]

  defp field_gen(ctx, good) do
    t(:weighted_union, [
      [
        {4, t(:exactly, [good])},
        {1, t(:exactly, [:absent])},
        {1, t(:exactly, [nil])},
        {2, garbage(ctx)}
      ]
    ])
  end

  defp candidate_gen(ctx) do
    t(:tuple, [
      [
        bind(t(:tuple, [[t(:elements, [@candidates]), t(:list, [byte_edit()])]]), fn {c, e} ->
          if c == "", do: c, else: apply_byte_edits(c, e)
        end),
        t(:elements, [[:camel, :snake, :mixed]]),
        field_gen(ctx, "0"),
        field_gen(ctx, 0),
        field_gen(ctx, "EsAw"),
        t(:bool),
        t(:elements, [[:json, :string_map, :atom_map]])
      ]
    ])
  end

  defp candidate_input({cand, casing, mid, index, ufrag, garbage_candidate?, form}, junk) do
    keys =
      case casing do
        :camel -> ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"]
        :snake -> ["candidate", "sdp_mid", "sdp_mline_index", "username_fragment"]
        :mixed -> ["candidate", "sdpMid", "sdp_mline_index", "usernameFragment"]
      end

    cand = if garbage_candidate?, do: junk, else: cand

    map =
      keys
      |> Enum.zip([cand, mid, index, ufrag])
      |> Enum.reject(fn {_, v} -> v == :absent end)
      |> Map.new()

    case form do
      :string_map ->
        map

      :atom_map ->
        Map.new(map, fn {k, v} -> {String.to_atom(k), v} end)

      :json ->
        case Specter.JSON.encode(map) do
          {:ok, json} -> json
          {:error, _} -> map
        end
    end
  end

  test "mutated candidates, both casings, wrong types: documented answers only", ctx do
    s = ctx.specter
    offerer = new_pc!(s)
    pc = new_pc!(s)
    {:ok, _} = DataChannel.create(s, offerer, "chat")
    :ok = PeerConnection.create_offer(s, offerer)
    assert_receive {:offer, ^offerer, offer}, 5_000
    :ok = PeerConnection.set_remote_description(s, pc, offer)
    assert_receive {:ok, ^pc, :set_remote_description}, 5_000
    flush()

    prop =
      forall_safely(t(:tuple, [[candidate_gen(ctx), garbage(ctx)]]), fn {c, junk} ->
        input = candidate_input(c, junk)

        result =
          run_op(pc, fn -> PeerConnection.add_ice_candidate(s, pc, input) end, :add_ice_candidate)

        case result do
          {:bad, why} ->
            record_failure({"add_ice_candidate", [input], why, []})
            false

          _ ->
            true
        end
      end)

    assert_property(prop, @cases)
    assert PeerConnection.exists?(s, pc)
  end

  ## Specter.Session options -------------------------------------------------------------

  @session_keys [
    :specter,
    :signaller,
    :peer_id,
    :subscriber,
    :data_channel,
    :data_channel_label,
    :audio,
    :video,
    :audio_codec,
    :video_codec,
    :ice_servers,
    :api,
    :negotiation_timeout,
    :disconnect_timeout,
    :name,
    :colour
  ]

  defp session_documented?(reason) do
    case reason do
      {:missing_option, k} when is_atom(k) -> true
      {:invalid_option, k} when is_atom(k) -> true
      {:invalid_option, {k, r}} when k in [:audio_codec, :video_codec] -> documented?(r)
      {:invalid_argument, :options} -> true
      :nothing_to_negotiate -> true
      :already_registered -> true
      :signaller_down -> true
      _ -> false
    end
  end

  test "Specter.Session.start_link/1: random options start a session or are refused", ctx do
    s = ctx.specter
    name = :"prop_signaller_#{System.unique_integer([:positive])}"
    {:ok, _} = Specter.Signaller.Local.start_link(name: name)
    Process.flag(:trap_exit, true)

    good = fn key ->
      case key do
        :specter ->
          s

        :signaller ->
          {Specter.Signaller.Local, name}

        :peer_id ->
          "peer-#{System.unique_integer([:positive])}"

        :name ->
          :"prop_session_#{System.unique_integer([:positive])}"

        :subscriber ->
          self()

        :data_channel ->
          true

        :data_channel_label ->
          "data"

        :audio ->
          :sendrecv

        :video ->
          :recvonly

        :audio_codec ->
          %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}

        :video_codec ->
          %Specter.RtpCodecCapability{mime_type: "video/VP8"}

        :ice_servers ->
          ["stun:127.0.0.1:3478"]

        :api ->
          PeerConnection.default_api!(s)

        :negotiation_timeout ->
          1_000

        :disconnect_timeout ->
          1_000

        :colour ->
          :blue
      end
    end

    option = t(:tuple, [[t(:elements, [@session_keys]), t(:bool), garbage(ctx)]])

    gen =
      t(:weighted_union, [
        [
          {8, t(:tuple, [[t(:exactly, [:opts]), t(:list, [option]), t(:bool)]])},
          {1, t(:tuple, [[t(:exactly, [:raw]), garbage(ctx), t(:exactly, [false])]])}
        ]
      ])

    prop =
      forall_safely(gen, fn {form, spec, base?} ->
        opts =
          case form do
            :raw ->
              spec

            :opts ->
              base =
                if base?,
                  do: Enum.map([:specter, :signaller, :peer_id], &{&1, good.(&1)}),
                  else: []

              given =
                Enum.map(spec, fn {k, good?, v} -> {k, if(good?, do: good.(k), else: v)} end)

              Keyword.merge(base, given)
          end

        result =
          try do
            Specter.Session.start_link(opts)
          rescue
            e -> {:raised, Exception.format(:error, e, __STACKTRACE__)}
          catch
            k, r -> {:raised, {k, r}}
          end

        ok =
          case result do
            {:ok, pid} when is_pid(pid) ->
              GenServer.stop(pid)
              true

            {:error, reason} ->
              session_documented?(reason)

            _ ->
              false
          end

        # A refused start's exit signal, if any.
        receive do
          {:EXIT, _, _} -> :ok
        after
          0 -> :ok
        end

        ok or (record_failure({"Session.start_link/1", [opts], result, []}) && false)
      end)

    assert_property(prop, @cases)
  end

  ## Helpers -----------------------------------------------------------------------------

  # PropEr 1.2 (Debian's) calls erlang:get_stacktrace/0, gone since OTP 23, when a property
  # raises: every property body runs here, where a raise is a recorded failure instead.
  defp forall_safely(gen, fun) do
    Specter.PropEr.forall(gen, fn value ->
      :ets.update_counter(:property_failures, :cases, 1)

      try do
        fun.(value) == true
      rescue
        e ->
          record_failure({"raised", [value], Exception.format(:error, e, __STACKTRACE__), []})
          false
      catch
        kind, reason ->
          record_failure({"raised", [value], {kind, reason}, []})
          false
      end
    end)
  end

  defp assert_property(prop, n) do
    :ets.insert(:property_failures, {:cases, 0})

    case Specter.PropEr.check(prop, n) do
      :ok ->
        # Not vacuous: every case ran its body.
        assert [{:cases, ran}] = :ets.lookup(:property_failures, :cases)
        assert ran >= n, "only #{ran} of #{n} cases ran"
        drain_failures()
        :ok

      {:error, counterexample} ->
        # The last failure recorded is the shrunk counterexample's.
        failures = drain_failures()

        detail =
          case List.last(failures) do
            nil ->
              "(no detail recorded)"

            {label, args, verdict, async} ->
              "#{label}\n  args: #{inspect(args, limit: 20, printable_limit: 200)}\n  " <>
                "answer: #{inspect(verdict, limit: 50)}\n  async: #{inspect(async)}"
          end

        flunk("property failed after shrinking: #{inspect(counterexample, limit: 20)}\n#{detail}")
    end
  end

  # Failures are kept in an ETS table (the properties drain the mailbox as they go).
  defp record_failure({label, args, verdict, async}) do
    :ets.insert(
      :property_failures,
      {System.unique_integer([:monotonic]), {label, args, verdict, async}}
    )

    true
  end

  defp drain_failures do
    failures =
      for {key, failure} <- :ets.tab2list(:property_failures), is_integer(key), do: failure

    :ets.delete_all_objects(:property_failures)
    failures
  end
end
