defmodule Specter.RoomTest do
  use ExUnit.Case, async: false
  doctest Specter.Room
  doctest Specter.Room.Peer
  doctest Specter.Room.Relay
  doctest Specter.Room.Participant

  import Specter.TestSupport, only: [eventually: 1]

  alias Specter.{Room, TrackRemote}
  alias Specter.Room.Participant
  alias Specter.Signalling.Server
  alias Specter.Test.RtpWriter

  @moduletag timeout: 60_000

  setup ctx do
    {:ok, server} = Server.start_link(port: 0)
    {:ok, specter} = Specter.init(ctx[:specter_opts] || [])
    port = Server.port(server)
    {:ok, room} = Room.start_link(specter: specter, name: "t", port: port, subscriber: self())
    %{specter: specter, port: port, room: room}
  end

  defp join!(ctx, name, opts \\ []) do
    opts =
      [specter: ctx.specter, name: name, room: "room:t", port: ctx.port, subscriber: self()] ++
        opts

    {:ok, p} = Participant.start_link(opts)
    assert_receive {:specter_participant, ^p, :connected}, 5_000
    assert_receive {:specter_participant, ^p, {:data_channel_open, _}}, 5_000
    p
  end

  # VP8- and Opus-shaped RTP to the participant's tracks every 10 ms, until they close.
  defp start_media(ctx, participant) do
    for {kind, track} <- Participant.tracks(participant), track do
      {:ok, _} = RtpWriter.start_link(specter: ctx.specter, track: track, kind: kind)
    end
  end

  defp tracks_from(participant, publisher, n) do
    Enum.reduce(1..n, %{}, fn _, acc ->
      assert_receive {:specter_participant, ^participant,
                      {:track, track, %{stream_id: ^publisher} = info}},
                     10_000

      Map.put(acc, info.kind, track)
    end)
  end

  defp packets(ctx, track) do
    {:ok, info} = TrackRemote.info(ctx.specter, track)
    info.packet_count
  end

  test "participants receive each other's audio, video and data", ctx do
    alice = join!(ctx, "alice", audio: true, video: true)
    bob = join!(ctx, "bob", audio: true, video: true)
    carol = join!(ctx, "carol")
    _ = start_media(ctx, alice)
    _ = start_media(ctx, bob)

    from_alice_at_bob = tracks_from(bob, "alice", 2)
    from_alice_at_carol = tracks_from(carol, "alice", 2)
    from_bob_at_alice = tracks_from(alice, "bob", 2)
    from_bob_at_carol = tracks_from(carol, "bob", 2)

    for tracks <- [from_alice_at_bob, from_alice_at_carol, from_bob_at_alice, from_bob_at_carol] do
      assert Map.keys(tracks) |> Enum.sort() == [:audio, :video]
    end

    before = packets(ctx, from_alice_at_carol.video)
    assert eventually(fn -> packets(ctx, from_alice_at_carol.video) > before + 20 end)

    :ok = Participant.send_data(alice, {:text, "hello room"})
    assert_receive {:specter_participant, ^bob, {:data, {:text, "hello room"}}}, 5_000
    assert_receive {:specter_participant, ^carol, {:data, {:text, "hello room"}}}, 5_000
    refute_receive {:specter_participant, ^alice, {:data, _}}, 200

    :ok = Participant.send_data(carol, {:binary, <<0, 1, 2, 255>>})
    assert_receive {:specter_participant, ^alice, {:data, {:binary, <<0, 1, 2, 255>>}}}, 5_000
    assert_receive {:specter_participant, ^bob, {:data, {:binary, <<0, 1, 2, 255>>}}}, 5_000

    assert length(Room.peers(ctx.room)) == 3
    assert length(Room.publications(ctx.room)) == 4
  end

  test "a participant that leaves ends its tracks at the others; the rest carry on", ctx do
    alice = join!(ctx, "alice", video: true)
    bob = join!(ctx, "bob", video: true)
    carol = join!(ctx, "carol")
    _ = start_media(ctx, alice)
    _ = start_media(ctx, bob)
    %{video: bob_at_carol} = tracks_from(carol, "bob", 1)
    %{video: alice_at_carol} = tracks_from(carol, "alice", 1)

    :ok = Participant.leave(bob)
    assert_receive {:specter_room, _, {:peer_left, _, _}}, 5_000
    assert_receive {:specter_room, _, {:unpublished, _pub_id, :peer_left}}, 5_000
    assert_receive {:specter_participant, ^carol, {:track_ended, ^bob_at_carol}}, 10_000

    before = packets(ctx, alice_at_carol)
    assert eventually(fn -> packets(ctx, alice_at_carol) > before + 20 end)
    assert length(Room.peers(ctx.room)) == 2
  end

  test "a participant's room process crashing removes only that participant", ctx do
    alice = join!(ctx, "alice", video: true)
    bob = join!(ctx, "bob", video: true)
    carol = join!(ctx, "carol")
    _ = start_media(ctx, alice)
    _ = start_media(ctx, bob)
    %{video: bob_at_carol} = tracks_from(carol, "bob", 1)
    %{video: alice_at_carol} = tracks_from(carol, "alice", 1)

    %{pid: bob_peer} = Enum.find(Room.peers(ctx.room), &(&1.name == "bob"))
    Process.exit(bob_peer, :kill)

    assert_receive {:specter_room, _, {:peer_left, _, :killed}}, 5_000
    assert_receive {:specter_participant, ^carol, {:track_ended, ^bob_at_carol}}, 10_000
    # bob's connection closed with its owner: bob's side sees it go.
    assert_receive {:specter_participant, ^bob, {:left, _}}, 15_000

    assert Process.alive?(ctx.room)
    before = packets(ctx, alice_at_carol)
    assert eventually(fn -> packets(ctx, alice_at_carol) > before + 20 end)
    :ok = Participant.send_data(alice, {:text, "still here"})
    assert_receive {:specter_participant, ^carol, {:data, {:text, "still here"}}}, 5_000
  end

  @tag :capture_log
  test "a participant whose process dies is removed when its connection closes", ctx do
    alice = join!(ctx, "alice", video: true)
    carol = join!(ctx, "carol")
    _ = start_media(ctx, alice)
    %{video: _} = tracks_from(carol, "alice", 1)

    # No hangup, no sign-out: the process is killed, the NIF closes its connection.
    Process.unlink(carol)
    Process.exit(carol, :kill)
    assert_receive {:specter_room, _, {:peer_left, _, _}}, 15_000
    assert [%{name: "alice"}] = Room.peers(ctx.room)
  end

  # Send queues of 2 MiB (the NIF's and webrtc-rs's) instead of 16 MiB keep the test short.
  @tag specter_opts: [data_channel_send_buffer_limit: 2 * 1024 * 1024]
  test "a slow participant loses its own data-channel messages, nobody else's", ctx do
    alice = join!(ctx, "alice")
    bob = join!(ctx, "bob")
    # carol never reads: her receive buffer fills, SCTP's window closes, the room's queue
    # for her fills and the room drops what does not fit, for her alone.
    slow = join!(ctx, "slow", data_channel_active: false)

    # 16 MB at a pace a reading participant keeps up with: more than the slow one's path
    # holds (the room's 2 + 2 MiB send queues, SCTP's window, webrtc-rs's 256-message read
    # backlog and the NIF's 1 MiB receive buffer).
    chunk = :binary.copy(<<7>>, 8_000)
    n = 2_000

    for i <- 1..n do
      :ok = Participant.send_data(alice, {:binary, <<i::32, chunk::binary>>})
      if rem(i, 4) == 0, do: Process.sleep(1)
    end

    received =
      Enum.map(1..n, fn _ ->
        assert_receive {:specter_participant, ^bob, {:data, {:binary, <<i::32, _::binary>>}}},
                       10_000

        i
      end)

    assert received == Enum.to_list(1..n)
    refute_received {:specter_participant, ^slow, {:data, _}}
    assert Process.alive?(slow)

    %{pid: slow_peer} = Enum.find(Room.peers(ctx.room), &(&1.name == "slow"))
    %{pid: bob_peer} = Enum.find(Room.peers(ctx.room), &(&1.name == "bob"))
    assert eventually(fn -> Room.Peer.info(slow_peer).data_dropped > 0 end)
    assert %{data_dropped: 0, data_out: ^n} = Room.Peer.info(bob_peer)
  end
end
