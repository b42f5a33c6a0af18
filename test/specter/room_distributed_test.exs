defmodule Specter.RoomDistributedTest do
  # A room split over two nodes: this test node ("a") and a peer node ("b") started with
  # OTP's :peer on 127.0.0.1. Participants connect to the room on their own node through
  # one signalling server (on a); rooms link over distributed Erlang.
  use ExUnit.Case, async: false

  import Specter.TestSupport, only: [eventually: 1]

  alias Specter.{Room, TrackRemote}
  alias Specter.Room.Participant
  alias Specter.Signalling.Server
  alias Specter.Test.{Cluster, RtpWriter}

  @moduletag timeout: 120_000
  @moduletag :distributed

  setup do
    Cluster.ensure_alive!()
    name = :"b#{System.unique_integer([:positive])}"
    {peer, node_b} = Cluster.start_peer!(name)
    {:ok, server} = Server.start_link(port: 0)
    port = Server.port(server)
    {:ok, specter} = Specter.init()
    room_name = "r#{System.unique_integer([:positive])}"

    {:ok, room_a} =
      Room.start_link(
        specter: specter,
        name: room_name,
        peer_name: "room@a",
        port: port,
        cluster: true,
        subscriber: self()
      )

    {:ok, room_b} =
      Cluster.Agent.start_child(node_b, Room,
        name: room_name,
        peer_name: "room@b",
        port: port,
        cluster: true,
        subscriber: self()
      )

    assert_receive {:specter_room, ^room_a, {:room_joined, ^node_b}}, 5_000
    assert_receive {:specter_room, ^room_b, {:room_joined, _}}, 5_000

    # The peer node is linked to the test process: it stops when the test ends.
    %{
      specter: specter,
      port: port,
      peer: peer,
      node_b: node_b,
      room_a: room_a,
      room_b: room_b
    }
  end

  defp join_a!(ctx, name, opts \\ []) do
    opts =
      [specter: ctx.specter, name: name, room: "room@a", port: ctx.port, subscriber: self()] ++
        opts

    {:ok, p} = Participant.start_link(opts)
    connected!(p)
  end

  defp join_b!(ctx, name, opts \\ []) do
    opts = [name: name, room: "room@b", port: ctx.port, subscriber: self()] ++ opts
    {:ok, p} = Cluster.Agent.start_child(ctx.node_b, Participant, opts)
    connected!(p)
  end

  defp connected!(p) do
    assert_receive {:specter_participant, ^p, :connected}, 5_000
    assert_receive {:specter_participant, ^p, {:data_channel_open, _}}, 5_000
    p
  end

  defp packets_b(ctx, track) do
    {:ok, info} = Cluster.Agent.apply(ctx.node_b, TrackRemote, :info, [track])
    info.packet_count
  end

  defp packets_a(ctx, track) do
    {:ok, info} = TrackRemote.info(ctx.specter, track)
    info.packet_count
  end

  defp flush_keyframe_requests(p) do
    receive do
      {:specter_participant, ^p, {:keyframe_request, _}} -> flush_keyframe_requests(p)
    after
      0 -> :ok
    end
  end

  test "a track published on node a reaches a subscriber on node b; data both ways", ctx do
    alice = join_a!(ctx, "alice", video: true)
    bob = join_b!(ctx, "bob")
    %{video: video} = Participant.tracks(alice)
    {:ok, _} = RtpWriter.start_link(specter: ctx.specter, track: video)

    assert_receive {:specter_participant, ^bob,
                    {:track, track, %{stream_id: "alice", kind: :video}}},
                   10_000

    before = packets_b(ctx, track)
    assert eventually(fn -> packets_b(ctx, track) > before + 50 end)
    assert %{imports: 1} = Room.info(ctx.room_b)
    assert %{exports: 1} = Room.info(ctx.room_a)

    :ok = Participant.send_data(alice, {:text, "from a"})
    assert_receive {:specter_participant, ^bob, {:data, {:text, "from a"}}}, 5_000
    :ok = Participant.send_data(bob, {:binary, <<1, 2, 3>>})
    assert_receive {:specter_participant, ^alice, {:data, {:binary, <<1, 2, 3>>}}}, 5_000
  end

  test "keyframe requests from node b reach the publisher on node a", ctx do
    alice = join_a!(ctx, "alice", video: true)
    bob = join_b!(ctx, "bob")
    %{video: video} = Participant.tracks(alice)
    {:ok, _} = RtpWriter.start_link(specter: ctx.specter, track: video)
    assert_receive {:specter_participant, ^bob, {:track, track, %{stream_id: "alice"}}}, 10_000

    # The requests made when forwarding and relaying start are over; then nothing asks.
    Process.sleep(600)
    flush_keyframe_requests(alice)
    refute_receive {:specter_participant, ^alice, {:keyframe_request, _}}, 500

    # bob's PLI: room on b -> importer -> exporter on a -> alice's sender.
    :ok = Cluster.Agent.apply(ctx.node_b, TrackRemote, :request_keyframe, [track])
    assert_receive {:specter_participant, ^alice, {:keyframe_request, ^video}}, 5_000
  end

  test "node b killed mid-stream: a's participants see b's tracks end, a carries on", ctx do
    alice = join_a!(ctx, "alice", video: true)
    carol = join_a!(ctx, "carol")
    bob = join_b!(ctx, "bob", video: true)
    %{video: alice_video} = Participant.tracks(alice)
    %{video: bob_video} = Participant.tracks(bob)
    {:ok, _} = RtpWriter.start_link(specter: ctx.specter, track: alice_video)
    {:ok, _} = Cluster.Agent.start_child(ctx.node_b, RtpWriter, track: bob_video)

    assert_receive {:specter_participant, ^alice, {:track, from_bob, %{stream_id: "bob"}}},
                   10_000

    assert_receive {:specter_participant, ^carol, {:track, bob_at_carol, %{stream_id: "bob"}}},
                   10_000

    assert_receive {:specter_participant, ^carol, {:track, from_alice, %{stream_id: "alice"}}},
                   10_000

    assert eventually(fn -> packets_a(ctx, from_bob) > 30 end)

    Cluster.kill!(ctx.node_b)

    room_a = ctx.room_a
    node_b = ctx.node_b
    assert_receive {:specter_room, ^room_a, {:room_left, ^node_b}}, 10_000
    assert_receive {:specter_room, ^room_a, {:unpublished, _, {:room_down, _}}}, 5_000
    assert_receive {:specter_participant, ^alice, {:track_ended, ^from_bob}}, 10_000
    assert_receive {:specter_participant, ^carol, {:track_ended, ^bob_at_carol}}, 10_000

    before = packets_a(ctx, from_alice)
    assert eventually(fn -> packets_a(ctx, from_alice) > before + 30 end)
    assert %{nodes: [], imports: 0, publications: 1} = Room.info(room_a)
  end
end
