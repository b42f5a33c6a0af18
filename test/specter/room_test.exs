defmodule Specter.RoomTest do
  use ExUnit.Case, async: false
  doctest Specter.Room
  doctest Specter.Room.Peer
  doctest Specter.Room.Relay
  doctest Specter.Room.Participant

  alias Specter.{Room, RTP, TrackLocalStaticRTP, TrackRemote}
  alias Specter.Room.Participant
  alias Specter.Signalling.Server

  @moduletag timeout: 60_000

  setup do
    {:ok, server} = Server.start_link(port: 0)
    {:ok, specter} = Specter.init()
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

  # Writes VP8-shaped RTP packets (a keyframe every 30) and Opus-shaped ones to the
  # participant's tracks every 10 ms until stopped.
  defp start_media(ctx, participant) do
    %{audio: audio, video: video} = Participant.tracks(participant)

    # Stops when the tracks go (the participant left).
    spawn_link(fn ->
      Stream.iterate(1, &(&1 + 1))
      |> Enum.reduce_while(:ok, fn n, :ok ->
        results = [
          video && TrackLocalStaticRTP.write_rtp(ctx.specter, video, vp8(n)),
          audio && TrackLocalStaticRTP.write_rtp(ctx.specter, audio, opus(n))
        ]

        Process.sleep(10)
        if Enum.all?(results, &(&1 in [:ok, nil])), do: {:cont, :ok}, else: {:halt, :done}
      end)
    end)
  end

  defp vp8(n) do
    keyframe = if rem(n, 30) == 1, do: 0, else: 1

    RTP.encode(%RTP{
      marker: true,
      payload_type: 96,
      sequence_number: rem(n, 65_536),
      timestamp: n * 3000,
      ssrc: 1,
      payload: <<0x10, keyframe, 0x9D, 0x01, 0x2A, n::32>>
    })
  end

  defp opus(n) do
    RTP.encode(%RTP{
      payload_type: 111,
      sequence_number: rem(n, 65_536),
      timestamp: n * 480,
      ssrc: 2,
      payload: <<0xFC, n::32>>
    })
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

  defp eventually(fun, timeout \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn -> fun.() end)
    |> Enum.find(fn ok ->
      ok or (System.monotonic_time(:millisecond) > deadline or (Process.sleep(20) && false))
    end)
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
end
