defmodule Specter.TrackLocalStaticRTPTest do
  use ExUnit.Case, async: true
  doctest Specter.TrackLocalStaticRTP

  import Specter.TestSupport

  alias Specter.{RTP, TrackLocalStaticRTP, TrackRemote}

  @vp8 %Specter.RtpCodecCapability{mime_type: "video/VP8"}

  setup do
    {:ok, specter} = Specter.init()
    %{specter: specter}
  end

  defp packet(n) do
    %RTP{
      marker: rem(n, 3) == 2,
      payload_type: 120,
      sequence_number: 1000 + n,
      timestamp: 90_000 + div(n, 3) * 3000,
      ssrc: 0xDEADBEEF,
      extension_profile: 0xBEDE,
      extensions: [{5, "zz"}],
      payload: <<0x10, n::32, "vp8?">>
    }
  end

  test "packets keep sequence number, timestamp, marker and payload; SSRC, payload type and extensions are the connection's",
       %{specter: specter} do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, track} = TrackLocalStaticRTP.new(specter, @vp8, "cam", "call")
    add_track!(specter, a, track)
    connect_media!(specter, a, b)

    # Until the remote announces the track, keep writing (packets before that may be lost).
    first = write_until_announced(specter, track, b, 0)
    {remote, info} = first
    :ok = TrackRemote.set_active(specter, remote, true)

    sent = for n <- 1_000..1_059, do: packet(n)
    for p <- sent, do: :ok = TrackLocalStaticRTP.write_rtp(specter, track, RTP.encode(p))

    received = receive_until(remote, 1_059)
    assert length(received) == 60

    for {s, r} <- Enum.zip(sent, received) do
      assert r.sequence_number == s.sequence_number
      assert r.timestamp == s.timestamp
      assert r.marker == s.marker
      assert r.payload == s.payload
      assert r.ssrc == info.ssrc
      assert r.ssrc != s.ssrc
      assert r.payload_type == 96
      refute {5, "zz"} in r.extensions
    end
  end

  defp write_until_announced(specter, track, b, n) do
    :ok = TrackLocalStaticRTP.write_rtp(specter, track, RTP.encode(packet(n)))

    receive do
      {:track, ^b, remote, info} -> {remote, info}
    after
      20 ->
        if n > 250, do: flunk("no track announced after #{n} packets")
        write_until_announced(specter, track, b, n + 1)
    end
  end

  # Packets up to the one with payload counter `last`, dropping the announcement-phase ones.
  defp receive_until(remote, last, acc \\ []) do
    assert_receive {:rtp, ^remote, bin}, 5_000
    {:ok, %RTP{payload: <<0x10, n::32, _::binary>>} = p} = RTP.decode(bin)

    cond do
      n < 1_000 -> receive_until(remote, last, acc)
      n == last -> Enum.reverse([p | acc])
      true -> receive_until(remote, last, [p | acc])
    end
  end

  test "bad packets and unknown tracks are refused", %{specter: specter} do
    {:ok, track} = TrackLocalStaticRTP.new(specter, @vp8, "cam", "call")

    assert {:error, {:invalid_argument, :packet}} =
             TrackLocalStaticRTP.write_rtp(specter, track, <<0x80, 96, 0>>)

    assert {:error, {:invalid_argument, :packet}} =
             TrackLocalStaticRTP.write_rtp(specter, track, :packet)

    assert {:error, :invalid_track} =
             TrackLocalStaticRTP.write_rtp(specter, "nope", RTP.encode(packet(1)))

    assert {:error, {:invalid_argument, :codec}} =
             TrackLocalStaticRTP.new(specter, %{mime_type: "video/VP8"}, "v", "s")
  end
end
