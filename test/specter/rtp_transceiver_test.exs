defmodule Specter.RtpTransceiverTest do
  use ExUnit.Case, async: true
  doctest Specter.RtpTransceiver

  import Specter.TestSupport

  alias Specter.{PeerConnection, RTP, RtpTransceiver, TrackLocalStaticSample, TrackRemote}

  @opus %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  # Writes <<0xFC, tag, n::32>> Opus samples to each track every 20 ms until stopped.
  defp start_writer(specter, tracks) do
    spawn_link(fn -> writer_loop(specter, tracks, 0) end)
  end

  defp writer_loop(specter, tracks, n) do
    receive do
      {:stop, from} -> send(from, :writer_stopped)
    after
      20 ->
        for {tag, track} <- tracks do
          TrackLocalStaticSample.write_sample(specter, track, <<0xFC, tag, n::32>>, 20_000)
        end

        writer_loop(specter, tracks, n + 1)
    end
  end

  defp stop_writer(writer) do
    send(writer, {:stop, self()})
    assert_receive :writer_stopped, 5_000
  end

  defp tags(remote, n, acc \\ []) do
    if length(acc) == n do
      Enum.reverse(acc)
    else
      assert_receive {:rtp, ^remote, bin}, 5_000
      {:ok, %RTP{payload: <<0xFC, tag, _::32>>}} = RTP.decode(bin)
      tags(remote, n, [tag | acc])
    end
  end

  # Stops delivery, drops what was delivered, and resumes with `active`.
  defp reset_rtp(specter, remote, active) do
    :ok = TrackRemote.set_active(specter, remote, false)
    drain(remote)
    :ok = TrackRemote.set_active(specter, remote, active)
  end

  defp drain(remote) do
    receive do
      {:rtp, ^remote, _} -> drain(remote)
    after
      100 -> :ok
    end
  end

  # Skips packets until one carries `tag`; then returns the next `n` tags.
  defp tags_after(remote, tag, n, skipped \\ 0) do
    assert skipped < 100, "no packet tagged #{tag}"
    assert_receive {:rtp, ^remote, bin}, 5_000

    case RTP.decode(bin) do
      {:ok, %RTP{payload: <<0xFC, ^tag, _::32>>}} -> tags(remote, n)
      _ -> tags_after(remote, tag, n, skipped + 1)
    end
  end

  # The media section of a kind in a description's SDP.
  defp section(json, kind) do
    {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(json)

    sdp
    |> String.split(~r/(?=^m=)/m)
    |> Enum.find(&String.starts_with?(&1, "m=#{kind}"))
  end

  defp transceivers!(specter, pc) do
    :ok = PeerConnection.get_transceivers(specter, pc)
    assert_receive {:transceivers, ^pc, list}, 5_000
    list
  end

  test "after negotiation transceivers have mids and negotiated directions", %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, mic} = TrackLocalStaticSample.new(specter, @opus, "mic", "s")
    sender = add_track!(specter, a, mic)
    :ok = PeerConnection.add_transceiver_from_kind(specter, a, :video, direction: :recvonly)
    assert_receive {:transceiver, ^a, video}, 5_000
    connect_media!(specter, a, b)

    assert [
             %{kind: :audio, mid: "0", sender: ^sender, current_direction: :sendonly},
             %{
               id: ^video,
               kind: :video,
               mid: "1",
               direction: :recvonly,
               current_direction: :recvonly
             }
           ] = transceivers!(specter, a)

    # b has nothing to send on the video section a wants to receive: inactive.
    assert [
             %{kind: :audio, mid: "0", current_direction: :recvonly},
             %{kind: :video, mid: "1", current_direction: :inactive}
           ] = transceivers!(specter, b)

    writer = start_writer(specter, [{1, mic}])
    assert_receive {:track, ^b, remote, %{kind: :audio}}, 5_000
    assert [%{receiver: audio_receiver}, _] = transceivers!(specter, b)
    assert is_binary(audio_receiver)
    :ok = PeerConnection.get_receivers(specter, b)
    assert_receive {:receivers, ^b, receivers}, 5_000
    assert %{id: audio_receiver, track: remote} in receivers
    stop_writer(writer)
  end

  test "a recvonly offer is answered with a track added after the offer arrived",
       %{specter: specter} do
    viewer = new_pc!(specter)
    server = new_pc!(specter)
    :ok = PeerConnection.add_transceiver_from_kind(specter, viewer, :audio, direction: :recvonly)
    assert_receive {:transceiver, ^viewer, _}, 5_000
    :ok = PeerConnection.create_offer(specter, viewer)
    assert_receive {:offer, ^viewer, offer}, 5_000
    :ok = PeerConnection.set_local_description(specter, viewer, offer)
    assert_receive {:ok, ^viewer, :set_local_description}, 5_000
    :ok = PeerConnection.set_remote_description(specter, server, offer)
    assert_receive {:ok, ^server, :set_remote_description}, 5_000

    {:ok, mic} = TrackLocalStaticSample.new(specter, @opus, "mic", "s")
    add_track!(specter, server, mic)
    :ok = PeerConnection.create_answer(specter, server)
    assert_receive {:answer, ^server, answer}, 5_000
    :ok = PeerConnection.set_local_description(specter, server, answer)
    assert_receive {:ok, ^server, :set_local_description}, 5_000
    :ok = PeerConnection.set_remote_description(specter, viewer, answer)
    assert_receive {:ok, ^viewer, :set_remote_description}, 5_000
    assert :ok = PeerConnection.await_connected(specter, [viewer, server], 5_000)

    assert [%{current_direction: :sendonly}] = transceivers!(specter, server)
    writer = start_writer(specter, [{1, mic}])
    assert_receive {:track, ^viewer, remote, %{kind: :audio}}, 5_000
    :ok = TrackRemote.set_active(specter, remote, 3)
    assert [1, 1, 1] = tags(remote, 3)
    stop_writer(writer)
  end

  test "adding a track to a connected pair asks for negotiation; the new track arrives",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, first} = TrackLocalStaticSample.new(specter, @opus, "first", "s")
    add_track!(specter, a, first)
    connect_media!(specter, a, b)
    flush()

    {:ok, second} = TrackLocalStaticSample.new(specter, @opus, "second", "s")
    add_track!(specter, a, second)
    assert_receive {:negotiation_needed, ^a}, 5_000
    negotiate!(specter, a, b)

    writer = start_writer(specter, [{1, first}, {2, second}])
    assert_receive {:track, ^b, r1, %{track_id: id1}}, 5_000
    assert_receive {:track, ^b, r2, %{track_id: id2}}, 5_000
    assert Enum.sort([id1, id2]) == ["first", "second"]
    for r <- [r1, r2], do: :ok = TrackRemote.set_active(specter, r, 5)
    expected = if id1 == "first", do: {1, 2}, else: {2, 1}
    assert Enum.uniq(tags(r1, 5)) == [elem(expected, 0)]
    assert Enum.uniq(tags(r2, 5)) == [elem(expected, 1)]
    stop_writer(writer)
  end

  test "replace_track switches what a sender sends, without renegotiation; nil sends nothing",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, one} = TrackLocalStaticSample.new(specter, @opus, "one", "s")
    {:ok, two} = TrackLocalStaticSample.new(specter, @opus, "two", "s")
    sender = add_track!(specter, a, one)
    connect_media!(specter, a, b)
    flush()
    writer = start_writer(specter, [{1, one}, {2, two}])
    assert_receive {:track, ^b, remote, _}, 5_000
    :ok = TrackRemote.set_active(specter, remote, true)
    assert [1, 1, 1] = tags(remote, 3)

    :ok = PeerConnection.replace_track(specter, a, sender, two)
    assert_receive {:ok, ^a, :replace_track}, 5_000
    assert [2, 2, 2] = tags_after(remote, 2, 3)
    refute_received {:negotiation_needed, ^a}

    :ok = PeerConnection.replace_track(specter, a, sender, nil)
    assert_receive {:ok, ^a, :replace_track}, 5_000
    reset_rtp(specter, remote, true)
    refute_receive {:rtp, ^remote, _}, 300

    {:ok, video} = TrackLocalStaticSample.new(specter, @vp8, "v", "s")
    :ok = PeerConnection.replace_track(specter, a, sender, video)
    assert_receive {:replace_track_error, ^a, {:invalid_codec, _}}, 5_000
    :ok = PeerConnection.replace_track(specter, a, "0b6f3a4e-0000-4000-8000-000000000000", one)
    assert_receive {:replace_track_error, ^a, :not_found}, 5_000
    stop_writer(writer)
  end

  test "a sending transceiver made from a kind sends once given a track", %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    :ok = PeerConnection.add_transceiver_from_kind(specter, a, :audio, direction: :sendonly)
    assert_receive {:transceiver, ^a, _}, 5_000
    connect_media!(specter, a, b)
    assert [%{sender: sender, current_direction: :sendonly}] = transceivers!(specter, a)
    :ok = PeerConnection.get_senders(specter, a)
    assert_receive {:senders, ^a, [%{id: ^sender, track: nil}]}, 5_000

    {:ok, mic} = TrackLocalStaticSample.new(specter, @opus, "mic", "s")
    :ok = PeerConnection.replace_track(specter, a, sender, mic)
    assert_receive {:ok, ^a, :replace_track}, 5_000
    writer = start_writer(specter, [{7, mic}])
    assert_receive {:track, ^b, remote, %{kind: :audio}}, 5_000
    :ok = TrackRemote.set_active(specter, remote, 2)
    assert [7, 7] = tags(remote, 2)
    stop_writer(writer)
  end

  test "set_direction and stop renegotiate; remove_track stops the remote track",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, mic} = TrackLocalStaticSample.new(specter, @opus, "mic", "s")
    {:ok, cam} = TrackLocalStaticSample.new(specter, @vp8, "cam", "s")
    mic_sender = add_track!(specter, a, mic)
    add_track!(specter, a, cam)
    connect_media!(specter, a, b)
    [audio, video] = transceivers!(specter, a)
    flush()

    :ok = RtpTransceiver.set_direction(specter, a, audio.id, :inactive)
    assert_receive {:ok, ^a, :set_direction}, 5_000
    assert_receive {:negotiation_needed, ^a}, 5_000
    negotiate!(specter, a, b)

    assert [%{current_direction: :inactive}, %{current_direction: :sendonly}] =
             transceivers!(specter, a)

    :ok = RtpTransceiver.set_direction(specter, a, audio.id, :sendonly)
    assert_receive {:ok, ^a, :set_direction}, 5_000
    assert_receive {:negotiation_needed, ^a}, 5_000
    negotiate!(specter, a, b)
    assert [%{current_direction: :sendonly} | _] = transceivers!(specter, a)

    writer = start_writer(specter, [{1, mic}])
    assert_receive {:track, ^b, remote, %{kind: :audio}}, 5_000

    :ok = PeerConnection.remove_track(specter, a, mic_sender)
    assert_receive {:ok, ^a, :remove_track}, 5_000
    assert_receive {:negotiation_needed, ^a}, 5_000
    {offer, _answer} = negotiate!(specter, a, b)
    # a offers the section inactive and sends nothing more. (webrtc-rs 0.21.1 answers an
    # inactive offer with recvonly, so a's current_direction is not updated to inactive.)
    assert [%{direction: :inactive, sender: nil} | _] = transceivers!(specter, a)
    assert section(offer, "audio") =~ "a=inactive\r\n"
    :ok = TrackRemote.set_active(specter, remote, false)
    drain(remote)
    :ok = TrackRemote.set_active(specter, remote, true)
    refute_receive {:rtp, ^remote, _}, 300

    :ok = RtpTransceiver.stop(specter, a, video.id)
    assert_receive {:ok, ^a, :stop_transceiver}, 5_000
    assert_receive {:negotiation_needed, ^a}, 5_000
    {offer, _answer} = negotiate!(specter, a, b)
    # webrtc-rs 0.21.1 offers a stopped transceiver's section inactive (not rejected).
    assert section(offer, "video") =~ "a=inactive\r\n"
    assert [_, %{id: stopped, current_direction: :inactive}] = transceivers!(specter, a)
    assert stopped == video.id
    stop_writer(writer)
  end
end
