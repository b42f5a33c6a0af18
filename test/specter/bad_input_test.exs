defmodule Specter.BadInputTest do
  @moduledoc false
  # Every public function, fed the wrong thing in every position: each answers a documented
  # `{:error, reason}` (or `false` for the `exists?` predicates) and never raises.
  use ExUnit.Case, async: true

  import Specter.TestSupport
  alias Specter.{DataChannel, PeerConnection, TrackLocalStaticSample}

  @garbage [
    nil,
    :atom,
    -1,
    1.5,
    "not-a-uuid",
    "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c",
    <<255, 0, 1>>,
    %{},
    [],
    [1, 2],
    {:tuple},
    :binary.copy("x", 300_000)
  ]

  defp documented?(reason) do
    case reason do
      r
      when r in [
             :not_found,
             :closed,
             :invalid_json,
             :invalid_session_description,
             :invalid_track,
             :too_large,
             :buffer_full,
             :not_owner
           ] ->
        true

      {tag, name} when tag in [:invalid_argument, :invalid_option] and is_atom(name) ->
        true

      # await_connected/3's own documented outcome
      {:timeout, pending} when is_list(pending) ->
        true

      {tag, detail}
      when tag in [:invalid_sdp, :invalid_candidate, :invalid_state, :invalid_codec, :webrtc] and
             is_binary(detail) ->
        true

      _ ->
        false
    end
  end

  defp assert_refused(label, fun) do
    result =
      try do
        fun.()
      rescue
        e -> flunk("#{label} raised #{Exception.format(:error, e, __STACKTRACE__)}")
      end

    case result do
      {:error, reason} ->
        assert documented?(reason), "#{label} answered undocumented #{inspect(reason)}"

      false ->
        :ok

      other ->
        flunk("#{label} accepted bad input: #{inspect(other)}")
    end
  end

  setup do
    {:ok, specter} = Specter.init()
    pc = new_pc!(specter)
    {:ok, dc} = DataChannel.create(specter, pc, "c")

    {:ok, track} =
      TrackLocalStaticSample.new(
        specter,
        %Specter.RtpCodecCapability{mime_type: "audio"},
        "a",
        "s"
      )

    %{specter: specter, pc: pc, dc: dc, track: track}
  end

  # {name, arity-builder}: each builder takes (specter, pc, dc, track, bad, position) and
  # returns the call with `bad` substituted at `position`.
  defp calls(%{specter: s, pc: pc, dc: dc, track: t}) do
    offer = ~s({"type":"offer","sdp":"v=0"})

    [
      {"Specter.config/1", [s], &Specter.config/1},
      {"Specter.new_media_engine/1", [s], &Specter.new_media_engine/1},
      {"Specter.new_registry/2", [s, "x"], &Specter.new_registry/2},
      {"Specter.new_api/3", [s, "x", "y"], &Specter.new_api/3},
      {"Specter.media_engine_exists?/2", [s, "x"], &Specter.media_engine_exists?/2},
      {"Specter.registry_exists?/2", [s, "x"], &Specter.registry_exists?/2},
      {"Specter.api_exists?/2", [s, "x"], &Specter.api_exists?/2},
      {"Specter.instance_info/1", [s], &Specter.instance_info/1},
      {"PeerConnection.new/2", [s, "api"], &PeerConnection.new/2},
      {"PeerConnection.exists?/2", [s, pc], &PeerConnection.exists?/2},
      {"PeerConnection.controlling_process/3", [s, pc, self()],
       &PeerConnection.controlling_process/3},
      {"PeerConnection.create_offer/3", [s, pc, [ice_restart: true]],
       &PeerConnection.create_offer/3},
      {"PeerConnection.create_answer/3", [s, pc, []], &PeerConnection.create_answer/3},
      {"PeerConnection.set_local_description/3", [s, pc, offer],
       &PeerConnection.set_local_description/3},
      {"PeerConnection.set_remote_description/3", [s, pc, offer],
       &PeerConnection.set_remote_description/3},
      {"PeerConnection.add_ice_candidate/3", [s, pc, ~s({"candidate":"x"})],
       &PeerConnection.add_ice_candidate/3},
      {"PeerConnection.local_description/3", [s, pc, []], &PeerConnection.local_description/3},
      {"PeerConnection.current_local_description/3", [s, pc, []],
       &PeerConnection.current_local_description/3},
      {"PeerConnection.pending_local_description/3", [s, pc, []],
       &PeerConnection.pending_local_description/3},
      {"PeerConnection.remote_description/2", [s, pc], &PeerConnection.remote_description/2},
      {"PeerConnection.current_remote_description/2", [s, pc],
       &PeerConnection.current_remote_description/2},
      {"PeerConnection.pending_remote_description/2", [s, pc],
       &PeerConnection.pending_remote_description/2},
      {"PeerConnection.connection_state/2", [s, pc], &PeerConnection.connection_state/2},
      {"PeerConnection.ice_connection_state/2", [s, pc], &PeerConnection.ice_connection_state/2},
      {"PeerConnection.ice_gathering_state/2", [s, pc], &PeerConnection.ice_gathering_state/2},
      {"PeerConnection.signaling_state/2", [s, pc], &PeerConnection.signaling_state/2},
      {"PeerConnection.get_stats/3", [s, pc, []], &PeerConnection.get_stats/3},
      {"PeerConnection.create_data_channel/3", [s, pc, "l"],
       &PeerConnection.create_data_channel/3},
      {"PeerConnection.add_track/3", [s, pc, t], &PeerConnection.add_track/3},
      {"PeerConnection.restart_ice/2", [s, pc], &PeerConnection.restart_ice/2},
      {"PeerConnection.get_configuration/2", [s, pc], &PeerConnection.get_configuration/2},
      {"PeerConnection.set_configuration/3", [s, pc, []], &PeerConnection.set_configuration/3},
      {"PeerConnection.await_connected/3", [s, [], 10], &PeerConnection.await_connected/3},
      {"Specter.Config.normalize_ice_servers/1", [[]], &normalize/1},
      {"Specter.JSON.decode/1", ["{}"], &Specter.JSON.decode/1},
      {"PeerConnection.close/2", [s, pc], &PeerConnection.close/2},
      {"DataChannel.create/4", [s, pc, "l", []], &DataChannel.create/4},
      {"DataChannel.send/3", [s, dc, "x"], &DataChannel.send/3},
      {"DataChannel.send_text/3", [s, dc, "x"], &DataChannel.send_text/3},
      {"DataChannel.close/2", [s, dc], &DataChannel.close/2},
      {"DataChannel.ready_state/2", [s, dc], &DataChannel.ready_state/2},
      {"DataChannel.info/2", [s, dc], &DataChannel.info/2},
      {"TrackLocalStaticSample.new/4",
       [s, %Specter.RtpCodecCapability{mime_type: "audio"}, "a", "s"],
       &TrackLocalStaticSample.new/4},
      {"TrackLocalStaticSample.exists?/2", [s, t], &TrackLocalStaticSample.exists?/2}
    ]
  end

  # Positions where a garbage value must be refused (the last argument of a few functions
  # is free-form and legitimately accepts some of the garbage, e.g. any binary label).
  @free_form %{
    "PeerConnection.create_data_channel/3" => [2],
    "DataChannel.create/4" => [2],
    "DataChannel.send/3" => [2],
    "DataChannel.send_text/3" => [2],
    "TrackLocalStaticSample.new/4" => [2, 3]
  }

  test "every function refuses garbage in every position", ctx do
    for {label, args, fun} <- calls(ctx),
        pos <- 0..(length(args) - 1),
        pos not in Map.get(@free_form, label, []),
        bad <- @garbage do
      call = fn -> apply(fun, List.replace_at(args, pos, bad)) end
      result = call.()

      # A few garbage values are legitimately valid in some positions (an empty option list,
      # a string that happens to be valid input); anything else must be refused.
      unless acceptable?(label, pos, bad, result) do
        assert_refused(
          "#{label} with #{inspect(bad, limit: 3, printable_limit: 20)} at #{pos}",
          fn ->
            result
          end
        )
      end
    end
  end

  # normalize_ice_servers/1 answers :error by contract; wrap it in the common shape.
  defp normalize(servers) do
    case Specter.Config.normalize_ice_servers(servers) do
      :error -> {:error, {:invalid_option, :ice_servers}}
      ok -> ok
    end
  end

  # await_connected/3 with no connections and a garbage specter has nothing to wait for.
  defp acceptable?("PeerConnection.await_connected/3", 0, _bad, :ok), do: true
  defp acceptable?("Specter.JSON.decode/1", 0, bad, {:ok, _}) when is_binary(bad), do: true
  defp acceptable?(_label, _pos, [], :ok), do: true
  defp acceptable?(_label, _pos, [], {:ok, _}), do: true
  defp acceptable?(_label, _pos, _bad, _result), do: false

  test "an id from one instance does not reach another's objects", %{pc: pc, dc: dc, track: t} do
    {:ok, other} = Specter.init()
    refute PeerConnection.exists?(other, pc)
    assert {:error, :not_found} = PeerConnection.create_offer(other, pc)
    assert {:error, :not_found} = PeerConnection.close(other, pc)
    assert {:error, :not_found} = DataChannel.send(other, dc, "x")
    assert {:error, :invalid_track} = PeerConnection.add_track(other, new_pc!(other), t)
  end

  test "every connection function answers :closed after close", %{specter: s, pc: pc} do
    :ok = PeerConnection.close(s, pc)
    assert_receive {:peer_connection_closed, ^pc}
    refute PeerConnection.exists?(s, pc)

    for {label, [_, ^pc | _] = args, fun} <- calls(%{specter: s, pc: pc, dc: "x", track: "y"}),
        not String.ends_with?(label, "exists?/2"),
        not String.contains?(label, "await_connected"),
        not String.starts_with?(label, "DataChannel"),
        not String.starts_with?(label, "Track") do
      assert {:error, reason} = apply(fun, args), label
      assert reason in [:closed, :invalid_track], "#{label}: #{inspect(reason)}"
    end
  end

  test "session descriptions and candidates: malformed JSON, wrong shapes, bad SDP", %{
    specter: s,
    pc: pc
  } do
    for desc <- [
          "",
          "{",
          "[]",
          "null",
          ~s({"type":"offer"}),
          ~s({"sdp":"v=0"}),
          ~s({"type":"weird","sdp":"v=0"}),
          ~s({"type":"offer","sdp":42}),
          %{"type" => "offer"},
          %{type: :offer, sdp: 1},
          [type: "offer", sdp: "v=0"]
        ] do
      assert {:error, reason} = PeerConnection.set_remote_description(s, pc, desc)
      assert reason in [:invalid_json, :invalid_session_description], inspect(desc)
    end

    for sdp <- ["v=0", "garbage\r\n", "v=0\r\nm=audio\r\n", String.duplicate("a=x\r\n", 10)] do
      assert {:error, {:invalid_sdp, _}} =
               PeerConnection.set_remote_description(s, pc, %{type: "offer", sdp: sdp})
    end

    for c <- [
          "",
          "{}",
          ~s({"candidate": 1}),
          ~s({"candidate": "candidate:1 1 udp"}),
          ~s({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMLineIndex": "0"}),
          %{"candidate" => "candidate:1 1 udp 1 999.0.0.1 5 typ host"},
          %{candidate: nil}
        ] do
      assert {:error, reason} = PeerConnection.add_ice_candidate(s, pc, c)
      assert documented?(reason), inspect({c, reason})
    end

    huge = %{"type" => "offer", "sdp" => :binary.copy("a", 300_000)}
    assert {:error, :too_large} = PeerConnection.set_remote_description(s, pc, huge)
  end

  test "JSON refuses what is not JSON" do
    assert {:error, :invalid_json} = Specter.JSON.encode(self())
    assert {:error, :invalid_json} = Specter.JSON.encode(%{{1} => 2})
    assert {:error, :invalid_json} = Specter.JSON.encode(:math.pi() |> then(&[&1, make_ref()]))
    assert {:error, {:invalid_argument, :json}} = Specter.JSON.decode(123)
    assert {:error, :invalid_json} = Specter.JSON.decode(<<255, 254>>)
    deep = Enum.reduce(1..1_000, 1, fn _, acc -> [acc] end)
    assert {:error, :invalid_json} = Specter.JSON.encode(deep)
    assert {:error, :invalid_json} = Specter.JSON.decode(String.duplicate("[", 1_000))
  end

  test "options: unknown keys and bad values" do
    for opts <- [
          [colour: :blue],
          [ice_servers: "stun:x"],
          [ice_servers: ["http://x"]],
          [ice_servers: [%{urls: []}]],
          [loopback_only: :yes],
          [udp_port_range: {0, 10}],
          [udp_port_range: {10, 5}],
          [mdns: true],
          [socket_buffer_size: -1],
          [bind_addresses: ["300.1.1.1"]],
          [interfaces: ["no-such-interface0"]],
          [ice_failed_timeout: 0],
          [data_channel_send_buffer_limit: 0],
          :not_a_list,
          [1, 2]
        ] do
      assert {:error, reason} = Specter.init(opts), inspect(opts)
      assert documented?(reason), inspect({opts, reason})
    end
  end
end
