defmodule Specter.DataChannelFlowTest do
  @moduledoc false
  # Specter.DataChannel end to end: two real peer connections in one instance, over loopback,
  # no mocks. Covers every RTCDataChannelInit option, the channel lifecycle, text vs binary,
  # :gen_tcp-style receive flow control (active true/false/:once/n, recv/3, back-pressure
  # from a passive receiver), the send side (buffered amount, low-threshold event, maximum
  # message size, a large ordered transfer) and ownership.
  #
  # Some tests move megabytes and measure back-pressure: the module is not async so a
  # concurrent suite cannot starve the runtime's two workers and skew them.
  use ExUnit.Case, async: false

  import Specter.TestSupport
  alias Specter.DataChannel
  alias Specter.PeerConnection

  # A small send buffer (the default is 16 MiB) so :buffer_full shows within a few hundred
  # KiB.
  @limit 262_144

  setup do
    {:ok, specter} = Specter.init(data_channel_send_buffer_limit: @limit)
    %{specter: specter}
  end

  # -- helpers ---------------------------------------------------------------------------

  # Two connected peers and one channel, created by `a` with `opts`, open on both sides:
  # `dc` is a's handle, `remote` the handle b was given in {:data_channel, b, remote}.
  defp open_pair!(specter, label \\ "flow", opts \\ []) do
    a = new_pc!(specter)
    b = new_pc!(specter)
    {:ok, dc} = DataChannel.create(specter, a, label, opts)
    assert_receive {:data_channel_created, ^a, ^dc}, 5_000
    connect_media!(specter, a, b)
    assert_receive {:data_channel_open, ^dc}, 5_000
    assert_receive {:data_channel, ^b, remote}, 5_000
    assert_receive {:data_channel_open, ^remote}, 5_000
    %{a: a, b: b, dc: dc, remote: remote}
  end

  defp info!(specter, dc) do
    assert {:ok, info} = DataChannel.info(specter, dc)
    info
  end

  # The next `n` messages of channel `ch`, each within `timeout` ms.
  defp receive_messages(ch, n, timeout \\ 5_000) do
    for _ <- 1..n//1 do
      assert_receive {:data_channel_message, ^ch, message}, timeout
      message
    end
  end

  # Makes a receiving channel passive the reliable way: grant one message (:once), have it
  # delivered, and the channel is passive again, its reader waiting for credit.
  #
  # The pauses matter: the reader sends a message to the owner before it spends the credit
  # for it, so a set_active/3 right after a message can be undone (see the known bug
  # "recv/3 back to back"). 50-100 ms is ample for the reader to catch up.
  defp make_passive!(specter, sender, receiver) do
    refute_receive {:data_channel_message, ^receiver, _}, 50
    :ok = DataChannel.set_active(specter, receiver, :once)
    :ok = DataChannel.send(specter, sender, "make passive")
    assert_receive {:data_channel_message, ^receiver, {:binary, "make passive"}}, 5_000
    refute_receive {:data_channel_message, ^receiver, _}, 100
  end

  # The next `n` messages, closing and close events of channel `ch`, in arrival order, as
  # `{kind, data}`, `:closing` and `:close`.
  defp next_events(ch, n) do
    for _ <- 1..n//1 do
      receive do
        {:data_channel_message, ^ch, message} -> message
        {:data_channel_closing, ^ch} -> :closing
        {:data_channel_close, ^ch} -> :close
      after
        5_000 -> flunk("no event of #{ch} within 5 s")
      end
    end
  end

  # A message of `size` bytes that starts with its sequence number.
  defp seq_payload(i, size), do: <<i::32, :binary.copy(<<rem(i, 251)>>, size - 4)::binary>>

  # A closed channel answers ready_state/2 with :closed, or with the :closed error every
  # function gives a closed object (Specter's error table).
  defp closed?(specter, dc),
    do: DataChannel.ready_state(specter, dc) in [{:ok, :closed}, {:error, :closed}]

  # -- RTCDataChannelInit ----------------------------------------------------------------

  describe "RTCDataChannelInit" do
    test "defaults: ordered, reliable, no protocol; the remote side reports the same", %{
      specter: specter
    } do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, dc} = DataChannel.create(specter, a, "defaults")
      assert_receive {:data_channel_created, ^a, ^dc}, 5_000

      # No DTLS role yet, so no stream id; the maximum message size is the default.
      assert %{id: nil, negotiated: false, label: "defaults", max_message_size: 65_536} =
               info!(specter, dc)

      connect_media!(specter, a, b)
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000

      local = info!(specter, dc)
      far = info!(specter, remote)

      for info <- [local, far] do
        assert %{
                 label: "defaults",
                 protocol: "",
                 ordered: true,
                 negotiated: false,
                 max_retransmits: nil,
                 max_packet_life_time: nil,
                 buffered_amount_low_threshold: 0,
                 # Both ends are webrtc-rs with default settings: RFC 8841's default.
                 max_message_size: 65_536
               } = info

        # The SCTP stream id is known once open.
        assert is_integer(info.id) and info.id in 0..65_534
      end

      # One SCTP stream, seen from both ends.
      assert local.id == far.id
      assert local.peer_connection == a
      assert far.peer_connection == b
    end

    test "ordered: true delivers bursts in order, both ways", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter, "ordered", ordered: true)
      assert %{ordered: true} = info!(specter, remote)

      for i <- 1..300, do: :ok = DataChannel.send(specter, dc, <<i::32>>)
      for i <- 1..300, do: :ok = DataChannel.send_text(specter, remote, "m#{i}")

      assert receive_messages(remote, 300) == for(i <- 1..300, do: {:binary, <<i::32>>})
      assert receive_messages(dc, 300) == for(i <- 1..300, do: {:text, "m#{i}"})
    end

    test "ordered: false, max_retransmits: 0 is kept and delivers on loopback", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} =
        open_pair!(specter, "telemetry", ordered: false, max_retransmits: 0)

      assert %{
               label: "telemetry",
               ordered: false,
               max_retransmits: 0,
               max_packet_life_time: nil,
               negotiated: false
             } = info!(specter, dc)

      assert %{label: "telemetry", ordered: false, negotiated: false} = info!(specter, remote)

      # Loopback loses nothing: every message arrives, in some order.
      for i <- 1..50, do: :ok = DataChannel.send(specter, dc, <<i::32>>)
      assert Enum.sort(receive_messages(remote, 50)) == for(i <- 1..50, do: {:binary, <<i::32>>})
    end

    test "max_retransmits: 3 is kept and delivers", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter, "rtx", max_retransmits: 3)

      assert %{ordered: true, max_retransmits: 3, max_packet_life_time: nil} = info!(specter, dc)

      assert %{label: "rtx", ordered: true} = info!(specter, remote)

      for i <- 1..20, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert receive_messages(remote, 20) == for(i <- 1..20, do: {:binary, <<i>>})
    end

    test "max_packet_life_time is kept and delivers", %{specter: specter} do
      %{dc: dc, remote: remote} =
        open_pair!(specter, "lifetime", ordered: false, max_packet_life_time: 500)

      assert %{ordered: false, max_packet_life_time: 500, max_retransmits: nil} =
               info!(specter, dc)

      assert %{label: "lifetime", ordered: false} = info!(specter, remote)

      for i <- 1..20, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert Enum.sort(receive_messages(remote, 20)) == for(i <- 1..20, do: {:binary, <<i>>})
    end

    # webrtc-rs 0.21.1 drops the reliability parameters of a DCEP OPEN (rtc-0.21.1
    # src/data_channel/internal.rs builds an announced channel with both None), so the side
    # that did not create a partially reliable channel cannot report them; info/2 documents
    # `nil` there. Partial reliability is the sender's business, so the channel still
    # behaves as its creator configured it.
    test "the remote side reports ordered, and nil reliability parameters", %{
      specter: specter
    } do
      %{dc: dc, remote: rtx} = open_pair!(specter, "rtx", ordered: false, max_retransmits: 2)
      %{remote: life} = open_pair!(specter, "life", max_packet_life_time: 250)

      assert %{max_retransmits: 2, ordered: false} = info!(specter, dc)

      assert %{label: "rtx", ordered: false, max_retransmits: nil, max_packet_life_time: nil} =
               info!(specter, rtx)

      assert %{label: "life", ordered: true, max_retransmits: nil, max_packet_life_time: nil} =
               info!(specter, life)
    end

    test "protocol is carried to the remote side", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter, "rpc", protocol: "json-rpc.v2")
      assert %{label: "rpc", protocol: "json-rpc.v2"} = info!(specter, dc)
      assert %{label: "rpc", protocol: "json-rpc.v2"} = info!(specter, remote)
    end

    test "a multi-byte UTF-8 label and protocol survive the round trip", %{specter: specter} do
      %{remote: remote} = open_pair!(specter, "канал ✓", protocol: "протокол 🚀")
      assert %{label: "канал ✓", protocol: "протокол 🚀"} = info!(specter, remote)
    end

    test "negotiated: both sides create the channel with the same id; no announcement", %{
      specter: specter
    } do
      a = new_pc!(specter)
      b = new_pc!(specter)

      {:ok, dc_a} =
        DataChannel.create(specter, a, "control", negotiated: true, id: 42, protocol: "p")

      {:ok, dc_b} =
        DataChannel.create(specter, b, "control", negotiated: true, id: 42, protocol: "p")

      assert_receive {:data_channel_created, ^a, ^dc_a}, 5_000
      assert_receive {:data_channel_created, ^b, ^dc_b}, 5_000
      assert dc_a != dc_b

      # The id of a negotiated channel is known at once.
      for dc <- [dc_a, dc_b] do
        assert %{id: 42, negotiated: true, label: "control", protocol: "p"} = info!(specter, dc)
        assert {:ok, :connecting} = DataChannel.ready_state(specter, dc)
      end

      connect_media!(specter, a, b)
      assert_receive {:data_channel_open, ^dc_a}, 5_000
      assert_receive {:data_channel_open, ^dc_b}, 5_000

      for i <- 1..10, do: :ok = DataChannel.send_text(specter, dc_a, "a->b #{i}")
      for i <- 1..10, do: :ok = DataChannel.send(specter, dc_b, "b->a #{i}")
      assert receive_messages(dc_b, 10) == for(i <- 1..10, do: {:text, "a->b #{i}"})
      assert receive_messages(dc_a, 10) == for(i <- 1..10, do: {:binary, "b->a #{i}"})

      assert %{id: 42, negotiated: true} = info!(specter, dc_a)
      assert %{id: 42, negotiated: true} = info!(specter, dc_b)
      # Each side uses its own handle: neither was announced.
      refute_receive {:data_channel, _, _}, 200
    end

    test "negotiated needs an id in 0..65534", %{specter: specter} do
      pc = new_pc!(specter)

      assert {:error, {:invalid_option, :id}} =
               DataChannel.create(specter, pc, "x", negotiated: true)

      assert {:error, {:invalid_option, :id}} =
               DataChannel.create(specter, pc, "x", negotiated: true, id: 65_535)

      assert {:error, {:invalid_option, :id}} =
               DataChannel.create(specter, pc, "x", negotiated: true, id: 65_536)

      assert {:error, {:invalid_option, :max_retransmits}} =
               DataChannel.create(specter, pc, "x", max_retransmits: 1, max_packet_life_time: 1)
    end
  end

  # -- lifecycle -------------------------------------------------------------------------

  describe "lifecycle" do
    test "connecting -> open; sends before open are refused", %{specter: specter} do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, dc} = DataChannel.create(specter, a, "life")
      assert {:ok, :connecting} = DataChannel.ready_state(specter, dc)
      assert {:error, {:invalid_state, "connecting"}} = DataChannel.send(specter, dc, "early")
      assert {:error, {:invalid_state, "connecting"}} = DataChannel.send_text(specter, dc, "x")
      assert_receive {:data_channel_created, ^a, ^dc}, 5_000
      assert {:ok, :connecting} = DataChannel.ready_state(specter, dc)
      assert {:error, {:invalid_state, "connecting"}} = DataChannel.send(specter, dc, "early")

      connect_media!(specter, a, b)
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert {:ok, :open} = DataChannel.ready_state(specter, dc)
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000
      assert {:ok, :open} = DataChannel.ready_state(specter, remote)

      # Nothing refused before open leaked through; the first message sent is the first seen.
      :ok = DataChannel.send(specter, dc, "first")
      assert_receive {:data_channel_message, ^remote, {:binary, "first"}}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 100
    end

    test "a local close closes both sides; later calls answer :closed", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)

      assert :ok = DataChannel.close(specter, dc)
      # Closing at once; it may already be closed (and gone: a closed object answers :closed).
      assert DataChannel.ready_state(specter, dc) in [
               {:ok, :closing},
               {:ok, :closed},
               {:error, :closed}
             ]

      assert_receive {:data_channel_close, ^dc}, 5_000
      assert_receive {:data_channel_close, ^remote}, 5_000
      assert closed?(specter, dc)
      assert closed?(specter, remote)

      for ch <- [dc, remote] do
        assert {:error, :closed} = DataChannel.send(specter, ch, "late")
        assert {:error, :closed} = DataChannel.send_text(specter, ch, "late")
        assert {:error, :closed} = DataChannel.close(specter, ch)
      end

      # Each side's close is reported once; the closer gets no closing event (as W3C).
      refute_receive {:data_channel_close, _}, 200
      refute_received {:data_channel_closing, ^dc}
    end

    test "a close from the remote side closes both sides", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)

      :ok = DataChannel.close(specter, remote)
      assert_receive {:data_channel_close, ^remote}, 5_000
      assert_receive {:data_channel_close, ^dc}, 5_000
      assert closed?(specter, dc)
      assert closed?(specter, remote)
      assert {:error, :closed} = DataChannel.send(specter, dc, "late")
      assert {:error, :closed} = DataChannel.send_text(specter, dc, "late")
      refute_receive {:data_channel_close, _}, 200
    end

    test "closing one channel leaves the others open", %{specter: specter} do
      %{a: a, dc: dc, remote: remote} = open_pair!(specter)
      {:ok, other} = DataChannel.create(specter, a, "other")
      assert_receive {:data_channel_open, ^other}, 5_000
      assert_receive {:data_channel, _b, other_remote}, 5_000

      :ok = DataChannel.close(specter, dc)
      assert_receive {:data_channel_close, ^remote}, 5_000

      :ok = DataChannel.send_text(specter, other, "still here")
      assert_receive {:data_channel_message, ^other_remote, {:text, "still here"}}, 5_000
      assert {:ok, :open} = DataChannel.ready_state(specter, other)
    end

    test "closing the peer connection closes its channels on both sides", %{specter: specter} do
      %{a: a, dc: dc, remote: remote} = open_pair!(specter)
      :ok = PeerConnection.close(specter, a)
      assert_receive {:peer_connection_closed, ^a}, 5_000
      assert_receive {:data_channel_close, ^dc}, 5_000
      assert_receive {:data_channel_close, ^remote}, 5_000
      assert {:error, :closed} = DataChannel.send(specter, remote, "late")
      assert {:error, :closed} = DataChannel.send(specter, dc, "late")
      # A channel whose own connection closes only gets the close.
      refute_received {:data_channel_closing, ^dc}
    end

    test "the side whose peer closes gets :data_channel_closing, then :data_channel_close", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      :ok = DataChannel.close(specter, dc)
      assert next_events(remote, 2) == [:closing, :close]
      assert_receive {:data_channel_close, ^dc}, 5_000
      # The side that called close/2 gets no closing event (as W3C).
      refute_receive {:data_channel_closing, ^dc}, 200
    end

    test "a peer's close comes after the messages it sent before, even held ones", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      for i <- 1..5, do: :ok = DataChannel.send(specter, dc, <<i>>)
      # All acknowledged (held by the passive receiver) before the close.
      assert eventually(fn -> DataChannel.buffered_amount(specter, dc) == {:ok, 0} end)
      :ok = DataChannel.close(specter, dc)
      assert_receive {:data_channel_close, ^dc}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 200

      :ok = DataChannel.set_active(specter, remote, true)

      assert next_events(remote, 7) ==
               for(i <- 1..5, do: {:binary, <<i>>}) ++ [:closing, :close]

      assert closed?(specter, remote)
    end

    # (Up to e5cdb7a the peer got none of them: webrtc-rs resets the stream at once and
    # drops what SCTP had not transmitted; fixed in dd8894d.)
    test "close sends the messages already queued first", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      for i <- 1..100, do: :ok = DataChannel.send(specter, dc, seq_payload(i, 1_024))
      :ok = DataChannel.close(specter, dc)

      assert receive_messages(remote, 100) ==
               for(i <- 1..100, do: {:binary, seq_payload(i, 1_024)})

      assert_receive {:data_channel_close, ^remote}, 5_000
    end
  end

  # -- text and binary -------------------------------------------------------------------

  describe "text and binary" do
    test "the receiver tells text from binary, including empty and multi-byte", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      utf8 = "héllo wörld — 日本語 🌍🚀"

      sent = [
        {:text, "plain"},
        {:binary, "plain"},
        {:binary, <<>>},
        {:text, utf8},
        {:binary, utf8},
        {:binary, <<0, 255, 0, 128>>},
        {:text, ""},
        {:text, String.duplicate("ß", 5_000)},
        {:binary, <<0>>}
      ]

      for {kind, data} <- sent do
        :ok =
          case kind do
            :text -> DataChannel.send_text(specter, dc, data)
            :binary -> DataChannel.send(specter, dc, data)
          end
      end

      assert receive_messages(remote, length(sent)) == sent

      # And the other way.
      for {kind, data} <- sent do
        :ok =
          case kind do
            :text -> DataChannel.send_text(specter, remote, data)
            :binary -> DataChannel.send(specter, remote, data)
          end
      end

      assert receive_messages(dc, length(sent)) == sent
    end

    test "send_text refuses invalid UTF-8 and sends nothing", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      assert {:error, {:invalid_argument, :data}} = DataChannel.send_text(specter, dc, <<255>>)

      assert {:error, {:invalid_argument, :data}} =
               DataChannel.send_text(specter, dc, <<"ok", 0xC3>>)

      assert {:error, {:invalid_argument, :data}} =
               DataChannel.send_text(specter, dc, <<0xED, 0xA0, 0x80>>)

      assert {:error, {:invalid_argument, :data}} = DataChannel.send_text(specter, dc, :atom)
      assert {:error, {:invalid_argument, :data}} = DataChannel.send(specter, dc, 'chars')
      assert {:ok, 0} = DataChannel.buffered_amount(specter, dc)

      # The same bytes as binary are fine; only the valid message arrives.
      :ok = DataChannel.send(specter, dc, <<255>>)
      assert_receive {:data_channel_message, ^remote, {:binary, <<255>>}}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 100
    end
  end

  # -- receive flow control --------------------------------------------------------------

  describe "receive flow control" do
    test "a passive channel delivers nothing; active: true then delivers the backlog in order",
         %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      for i <- 1..50, do: :ok = DataChannel.send(specter, dc, <<i::32>>)
      refute_receive {:data_channel_message, ^remote, _}, 300

      :ok = DataChannel.set_active(specter, remote, true)
      assert receive_messages(remote, 50) == for(i <- 1..50, do: {:binary, <<i::32>>})
      refute_receive {:data_channel_message, ^remote, _}, 100
      refute_received {:data_channel_passive, ^remote}

      # And it stays active.
      :ok = DataChannel.send(specter, dc, "later")
      assert_receive {:data_channel_message, ^remote, {:binary, "later"}}, 5_000
    end

    # The reader of an active channel is already waiting for the next message when the mode
    # changes: that message must be held too. (At 91b74f6 it was delivered.)
    test "set_active(false) stops delivery at once", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)

      for round <- 1..3 do
        :ok = DataChannel.set_active(specter, remote, false)
        for i <- 1..20, do: :ok = DataChannel.send(specter, dc, <<round, i>>)
        refute_receive {:data_channel_message, ^remote, _}, 300

        :ok = DataChannel.set_active(specter, remote, true)
        assert receive_messages(remote, 20) == for(i <- 1..20, do: {:binary, <<round, i>>})
      end
    end

    # Receive credit governs messages only: open and close still reach a passive channel.
    # (At 91b74f6 such a channel never opened: its reader waited for credit before polling.)
    test "a channel created with active: false still opens, and receives on request", %{
      specter: specter
    } do
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, dc} = DataChannel.create(specter, a, "passive", active: false)
      assert_receive {:data_channel_created, ^a, ^dc}, 5_000
      connect_media!(specter, a, b)
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert {:ok, :open} = DataChannel.ready_state(specter, dc)

      for i <- 1..5, do: :ok = DataChannel.send(specter, remote, <<i>>)
      refute_receive {:data_channel_message, ^dc, _}, 300
      assert {:ok, {:binary, <<1>>}} = DataChannel.recv(specter, dc, 5_000)
      :ok = DataChannel.set_active(specter, dc, true)
      assert receive_messages(dc, 4) == for(i <- 2..5, do: {:binary, <<i>>})

      # The same for a channel the peer opens, under an instance whose default is passive.
      {:ok, passive} = Specter.init(data_channel_active: false)
      a = new_pc!(passive)
      b = new_pc!(passive)
      {:ok, dc} = DataChannel.create(passive, a, "announced", active: true)
      assert_receive {:data_channel_created, ^a, ^dc}, 5_000
      connect_media!(passive, a, b)
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000
      :ok = DataChannel.send(passive, dc, "hi")
      refute_receive {:data_channel_message, ^remote, _}, 300
      assert {:ok, {:binary, "hi"}} = DataChannel.recv(passive, remote, 5_000)
    end

    test "active: n at create, and the instance's data_channel_active, apply to new channels",
         %{specter: specter} do
      # Locally created, with a count.
      a = new_pc!(specter)
      b = new_pc!(specter)
      {:ok, dc} = DataChannel.create(specter, a, "counted", active: 2)
      assert_receive {:data_channel_created, ^a, ^dc}, 5_000
      connect_media!(specter, a, b)
      assert_receive {:data_channel_open, ^dc}, 5_000
      assert_receive {:data_channel, ^b, remote}, 5_000
      assert_receive {:data_channel_open, ^remote}, 5_000

      for i <- 1..4, do: :ok = DataChannel.send(specter, remote, <<i>>)
      assert receive_messages(dc, 2) == [binary: <<1>>, binary: <<2>>]
      assert_receive {:data_channel_passive, ^dc}, 5_000
      refute_receive {:data_channel_message, ^dc, _}, 300

      # Announced by the peer, under an instance whose default is a count of 3.
      {:ok, counted} = Specter.init(data_channel_active: 3)
      %{dc: dc, remote: remote} = open_pair!(counted)
      for i <- 1..5, do: :ok = DataChannel.send(counted, dc, <<i>>)
      assert receive_messages(remote, 3) == for(i <- 1..3, do: {:binary, <<i>>})
      assert_receive {:data_channel_passive, ^remote}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300
      assert {:ok, {:binary, <<4>>}} = DataChannel.recv(counted, remote, 5_000)
    end

    test ":once delivers exactly one message, then nothing", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      :ok = DataChannel.set_active(specter, remote, :once)
      for i <- 1..10, do: :ok = DataChannel.send(specter, dc, <<i>>)

      assert_receive {:data_channel_message, ^remote, {:binary, <<1>>}}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300
      # :once turns passive quietly, as with :gen_tcp.
      refute_received {:data_channel_passive, ^remote}

      :ok = DataChannel.set_active(specter, remote, :once)
      assert_receive {:data_channel_message, ^remote, {:binary, <<2>>}}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300

      :ok = DataChannel.set_active(specter, remote, true)
      assert receive_messages(remote, 8) == for(i <- 3..10, do: {:binary, <<i>>})
    end

    test "a count delivers exactly n, then :data_channel_passive; counts add up", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)
      for i <- 1..13, do: :ok = DataChannel.send(specter, dc, <<i>>)

      :ok = DataChannel.set_active(specter, remote, 3)
      assert receive_messages(remote, 3) == for(i <- 1..3, do: {:binary, <<i>>})
      assert_receive {:data_channel_passive, ^remote}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300

      :ok = DataChannel.set_active(specter, remote, 10)
      assert receive_messages(remote, 10) == for(i <- 4..13, do: {:binary, <<i>>})
      assert_receive {:data_channel_passive, ^remote}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 100

      # 2 + 5 = 7, then one passive event. The counts are given while nothing is pending,
      # so the first cannot run out before the second adds to it.
      :ok = DataChannel.set_active(specter, remote, 2)
      :ok = DataChannel.set_active(specter, remote, 5)
      for i <- 14..23, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert receive_messages(remote, 7) == for(i <- 14..20, do: {:binary, <<i>>})
      assert_receive {:data_channel_passive, ^remote}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300
      refute_received {:data_channel_passive, ^remote}

      # The rest is still there.
      :ok = DataChannel.set_active(specter, remote, true)
      assert receive_messages(remote, 3) == for(i <- 21..23, do: {:binary, <<i>>})
    end

    test "a count added while counting extends the run", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      :ok = DataChannel.set_active(specter, remote, 4)
      for i <- 1..2, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert receive_messages(remote, 2) == [binary: <<1>>, binary: <<2>>]
      refute_received {:data_channel_passive, ^remote}

      # 2 left + 3 = 5.
      :ok = DataChannel.set_active(specter, remote, 3)
      for i <- 3..10, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert receive_messages(remote, 5) == for(i <- 3..7, do: {:binary, <<i>>})
      assert_receive {:data_channel_passive, ^remote}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300
    end

    test "active: true or :once replaces a count", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      # :once replaces a count of 100: one message, then passive.
      :ok = DataChannel.set_active(specter, remote, 100)
      :ok = DataChannel.set_active(specter, remote, :once)
      for i <- 1..3, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert_receive {:data_channel_message, ^remote, {:binary, <<1>>}}, 5_000
      refute_receive {:data_channel_message, ^remote, _}, 300
      :ok = DataChannel.set_active(specter, remote, true)
      assert receive_messages(remote, 2) == [binary: <<2>>, binary: <<3>>]

      # true replaces a count of 2: everything, and no passive event. (Nothing is pending
      # while the mode changes, so the count cannot run out in between.)
      make_passive!(specter, dc, remote)
      :ok = DataChannel.set_active(specter, remote, 2)
      :ok = DataChannel.set_active(specter, remote, true)
      for i <- 1..5, do: :ok = DataChannel.send(specter, dc, <<i>>)
      assert receive_messages(remote, 5) == for(i <- 1..5, do: {:binary, <<i>>})
      refute_receive {:data_channel_passive, ^remote}, 200
    end

    test "recv/3 reads a passive channel one message at a time", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      :ok = DataChannel.send_text(specter, dc, "one")
      :ok = DataChannel.send(specter, dc, "two")
      :ok = DataChannel.send_text(specter, dc, "three")
      refute_receive {:data_channel_message, ^remote, _}, 200

      assert {:ok, {:text, "one"}} = DataChannel.recv(specter, remote, 5_000)
      refute_receive {:data_channel_message, ^remote, _}, 100
      assert {:ok, {:binary, "two"}} = DataChannel.recv(specter, remote, 5_000)
      refute_receive {:data_channel_message, ^remote, _}, 100
      assert {:ok, {:text, "three"}} = DataChannel.recv(specter, remote, 5_000)
      refute_receive {:data_channel_message, ^remote, _}, 100

      # Nothing left: recv times out.
      assert {:error, :timeout} = DataChannel.recv(specter, remote, 100)

      # After the peer closes, recv answers :closed.
      :ok = DataChannel.close(specter, dc)
      assert {:error, :closed} = DataChannel.recv(specter, remote, 5_000)
    end

    # Regression: the reader used to send a message before spending its credit, so an
    # owner quick enough to call recv/3 (:once) again in between had the new credit spent
    # on the old message. Credit is now taken before the message is sent. The window is a
    # few instructions wide, so the test runs several owners at once to create contention.
    test "recv/3 back to back, one message at a time, never stalls", %{specter: specter} do
      stalls =
        1..8
        |> Enum.map(fn _ ->
          Task.async(fn ->
            %{dc: dc, remote: remote} = open_pair!(specter)
            :ok = DataChannel.set_active(specter, remote, :once)
            :ok = DataChannel.send(specter, dc, "go")
            assert_receive {:data_channel_message, ^remote, {:binary, "go"}}, 5_000

            Enum.find_value(1..6_000, fn i ->
              :ok = DataChannel.send(specter, dc, <<i::16>>)

              case DataChannel.recv(specter, remote, 1_000) do
                {:ok, {:binary, <<^i::16>>}} -> nil
                other -> {:message, i, other}
              end
            end)
          end)
        end)
        |> Task.await_many(30_000)

      assert Enum.reject(stalls, &is_nil/1) == []
    end

    # "On timeout the channel is passive again": a message sent after the timeout stays
    # with the channel. (At 91b74f6 it landed in the mailbox.)
    test "after a recv/3 timeout the channel is passive", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)

      for round <- 1..3 do
        assert {:error, :timeout} = DataChannel.recv(specter, remote, 100)
        :ok = DataChannel.send(specter, dc, <<round>>)
        refute_receive {:data_channel_message, ^remote, _}, 300
        assert {:ok, {:binary, <<^round>>}} = DataChannel.recv(specter, remote, 5_000)
      end
    end

    # A passive channel with nothing held learns that it closed, whichever side closes.
    # (At 91b74f6 it never did: no close event, ready_state stuck at :closing / :open.)
    test "close reaches a passive channel", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)
      :ok = DataChannel.close(specter, remote)
      assert_receive {:data_channel_close, ^dc}, 5_000
      assert_receive {:data_channel_close, ^remote}, 5_000
      assert closed?(specter, remote)

      %{dc: dc, remote: remote} = open_pair!(specter)
      make_passive!(specter, dc, remote)
      :ok = DataChannel.close(specter, dc)
      assert_receive {:data_channel_close, ^dc}, 5_000
      assert_receive {:data_channel_close, ^remote}, 5_000
      assert closed?(specter, remote)
      assert {:error, :closed} = DataChannel.send(specter, remote, "late")
    end

    # (From d19750a to dd5aa05 the last ~512 KiB of the backlog never arrived and a core
    # spun at 100 %: the writer's try_send/writable() loop, fixed in e5cdb7a.)
    test "a passive receiver pushes back on the sender; the backlog then drains in order", %{
      specter: specter
    } do
      %{dc: dc, remote: remote, accepted: accepted, size: size} = stall!(specter)

      # Stalled for good, not just a burst outrunning the writer: still full later, with
      # bytes waiting, nothing delivered, and the amount does not fall. (Low events from
      # before the stall, when the writer briefly caught up, are legitimate: drop them.)
      drop_low_events(dc)
      refute_receive {:data_channel_buffered_amount_low, ^dc}, 300
      assert {:error, :buffer_full} = DataChannel.send(specter, dc, seq_payload(accepted, size))
      assert {:ok, waiting} = DataChannel.buffered_amount(specter, dc)
      assert waiting >= @limit
      refute_received {:data_channel_message, ^remote, _}

      # The receiver reads again: everything, in order, exactly once.
      :ok = DataChannel.set_active(specter, remote, true)

      for i <- 0..(accepted - 1) do
        assert_receive {:data_channel_message, ^remote, {:binary, msg}}, 5_000
        assert <<^i::32, _::binary>> = msg
        assert msg == seq_payload(i, size)
      end

      refute_receive {:data_channel_message, ^remote, _}, 200
      # The sender learns that its buffer drained.
      assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000
      assert eventually(fn -> DataChannel.buffered_amount(specter, dc) == {:ok, 0} end)
      :ok = DataChannel.send(specter, dc, "flowing again")
      assert_receive {:data_channel_message, ^remote, {:binary, "flowing again"}}, 5_000
    end
  end

  # A pair whose receiver is passive and whose sender has sent numbered 16 KiB messages
  # until send/3 answered :buffer_full for good.
  defp stall!(specter), do: stall!(specter, open_pair!(specter))

  defp stall!(specter, %{dc: dc, remote: remote} = pair) do
    make_passive!(specter, dc, remote)
    size = 16_384

    # What may sit between the two: Specter's send queue (@limit), webrtc-rs's send buffer
    # (@limit), the receiver's held messages (data_channel_receive_buffer, 1 MiB), its event
    # queue (256 messages) and SCTP window (1 MiB), and what is in flight. Well under
    # 16 MiB; a pipeline that absorbs without limit never answers :buffer_full.
    max_bytes = 16 * 1024 * 1024
    {result, accepted} = send_until_stalled(specter, dc, size, max_bytes)
    assert result == :stalled, "#{accepted * size} bytes accepted without :buffer_full"
    assert accepted * size > @limit
    Map.merge(pair, %{accepted: accepted, size: size})
  end

  defp drop_low_events(dc) do
    receive do
      {:data_channel_buffered_amount_low, ^dc} -> drop_low_events(dc)
    after
      0 -> :ok
    end
  end

  # Sends numbered messages until send/3 answers :buffer_full and keeps answering it for
  # 1.6 s (so the refusal is the receiver's doing, not a burst outrunning the writer, nor a
  # pause of the sender until webrtc-rs's 1 s retransmission timeout), or until `max_bytes`
  # were accepted. Returns {:stalled | :never_full, accepted}.
  defp send_until_stalled(specter, dc, size, max_bytes, i \\ 0) do
    cond do
      i * size >= max_bytes ->
        {:never_full, i}

      DataChannel.send(specter, dc, seq_payload(i, size)) == :ok ->
        send_until_stalled(specter, dc, size, max_bytes, i + 1)

      still_full?(specter, dc, seq_payload(i, size), [100, 1_500]) ->
        {:stalled, i}

      true ->
        send_until_stalled(specter, dc, size, max_bytes, i + 1)
    end
  end

  # Sends `msg` after each pause; true if every attempt answered :buffer_full.
  defp still_full?(_specter, _dc, _msg, []), do: true

  defp still_full?(specter, dc, msg, [pause | pauses]) do
    Process.sleep(pause)

    case DataChannel.send(specter, dc, msg) do
      :ok -> false
      {:error, :buffer_full} -> still_full?(specter, dc, msg, pauses)
    end
  end

  # -- send side -------------------------------------------------------------------------

  describe "send side" do
    # (That the amount counts a burst at once is asserted by the known bug below.)
    test "buffered_amount returns to 0 once a burst is acknowledged, with the low event", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      assert {:ok, 0} = DataChannel.buffered_amount(specter, dc)

      for i <- 1..10, do: :ok = DataChannel.send(specter, dc, seq_payload(i, 16_384))
      assert {:ok, n} = DataChannel.buffered_amount(specter, dc)
      assert n <= 10 * 16_384

      assert length(receive_messages(remote, 10)) == 10
      # Threshold 0: the low event fires when everything is acknowledged.
      assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000
      assert {:ok, 0} = DataChannel.buffered_amount(specter, dc)
      refute_receive {:data_channel_buffered_amount_low, ^dc}, 200
    end

    test "the low event fires each time the amount falls to the threshold", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      :ok = DataChannel.set_buffered_amount_low_threshold(specter, dc, 16_384)
      assert %{buffered_amount_low_threshold: 16_384} = info!(specter, dc)

      # One 64 KiB message per round: the amount jumps above the threshold and only falls
      # from there (a burst of several could legitimately fall, rise and fall again).
      for round <- 1..3 do
        msg = seq_payload(round, 65_536)
        :ok = DataChannel.send(specter, dc, msg)
        assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000
        assert {:ok, low} = DataChannel.buffered_amount(specter, dc)
        assert low <= 16_384, "round #{round}: #{low}"
        assert_receive {:data_channel_message, ^remote, {:binary, ^msg}}, 5_000
        # One event per fall.
        refute_receive {:data_channel_buffered_amount_low, ^dc}, 200
      end

      # Never above the threshold: no event.
      :ok = DataChannel.send(specter, dc, :binary.copy(<<1>>, 1_024))
      assert_receive {:data_channel_message, ^remote, _}, 5_000
      refute_receive {:data_channel_buffered_amount_low, ^dc}, 300
    end

    # Regression: a message must count in buffered_amount/2 from send/3 until SCTP reports
    # it acknowledged, including the moment the writer hands it to webrtc-rs.
    test "buffered_amount counts what was just sent, at once", %{specter: specter} do
      %{dc: dc, remote: remote} = open_pair!(specter)

      for i <- 1..10, do: :ok = DataChannel.send(specter, dc, seq_payload(i, 16_384))
      assert {:ok, n} = DataChannel.buffered_amount(specter, dc)
      assert n > 0 and n <= 10 * 16_384
      assert length(receive_messages(remote, 10)) == 10
      assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000

      :ok = DataChannel.set_buffered_amount_low_threshold(specter, dc, 16_384)

      for round <- 1..40 do
        msg = seq_payload(round, 65_536)
        :ok = DataChannel.send(specter, dc, msg)
        assert {:ok, n} = DataChannel.buffered_amount(specter, dc)
        assert n > 16_384, "round #{round}: #{n}"
        assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000
        assert_receive {:data_channel_message, ^remote, {:binary, ^msg}}, 5_000
      end
    end

    # Regression: with a non-zero low threshold the amount must still fall to 0 once the
    # peer has acknowledged everything (the writer keeps reading SCTP's buffer until it is
    # empty, not only until the low event).
    test "buffered_amount returns to 0 after acknowledgement with a threshold set", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      :ok = DataChannel.set_buffered_amount_low_threshold(specter, dc, 200_000)

      for i <- 1..15, do: :ok = DataChannel.send(specter, dc, seq_payload(i, 16_384))
      assert_receive {:data_channel_buffered_amount_low, ^dc}, 2_000
      assert length(receive_messages(remote, 15)) == 15
      # The reply travels behind the acknowledgement of the messages.
      :ok = DataChannel.send(specter, remote, "ack")
      assert_receive {:data_channel_message, ^dc, {:binary, "ack"}}, 5_000

      # Everything was acknowledged before the "ack" came back; allow 2 s more anyway.
      assert eventually(fn -> DataChannel.buffered_amount(specter, dc) == {:ok, 0} end, 2_000),
             "buffered_amount stays at #{inspect(DataChannel.buffered_amount(specter, dc))}"
    end

    # Regression: bytes handed to webrtc-rs count until the peer acknowledges them, even
    # below the low threshold.
    test "buffered_amount counts what the peer has not acknowledged", %{specter: specter} do
      %{a: a} = pair = open_pair!(specter)
      {:ok, other} = DataChannel.create(specter, a, "other")
      assert_receive {:data_channel_open, ^other}, 5_000
      assert_receive {:data_channel, _b, other_remote}, 5_000
      :ok = DataChannel.set_buffered_amount_low_threshold(specter, other, 1_048_576)

      # The first channel's passive receiver closes the association's receive window.
      stall!(specter, pair)

      :ok = DataChannel.send(specter, other, :binary.copy(<<1>>, 1_024))
      Process.sleep(200)
      # It cannot have been acknowledged: it was not even delivered.
      refute_received {:data_channel_message, ^other_remote, _}
      assert {:ok, 1_024} = DataChannel.buffered_amount(specter, other)
    end

    test "set_buffered_amount_low_threshold refuses bad values", %{specter: specter} do
      %{dc: dc} = open_pair!(specter)

      assert {:error, {:invalid_argument, :threshold}} =
               DataChannel.set_buffered_amount_low_threshold(specter, dc, -1)

      assert {:error, {:invalid_argument, :threshold}} =
               DataChannel.set_buffered_amount_low_threshold(specter, dc, 1.5)

      assert %{buffered_amount_low_threshold: 0} = info!(specter, dc)
    end

    test "a message over the maximum message size is refused; one at the maximum arrives", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      assert %{max_message_size: max} = info!(specter, dc)
      assert max == 65_536

      assert {:error, :too_large} = DataChannel.send(specter, dc, :binary.copy(<<7>>, max + 1))

      assert {:error, :too_large} =
               DataChannel.send_text(specter, dc, String.duplicate("a", max + 1))

      # Bytes count, not characters: 32_769 two-byte characters.
      assert {:error, :too_large} =
               DataChannel.send_text(specter, dc, String.duplicate("é", div(max, 2) + 1))

      assert {:ok, 0} = DataChannel.buffered_amount(specter, dc)

      big = for i <- 0..(max - 1), into: <<>>, do: <<rem(i * 7, 256)>>
      :ok = DataChannel.send(specter, dc, big)
      :ok = DataChannel.send_text(specter, remote, String.duplicate("z", max))
      assert_receive {:data_channel_message, ^remote, {:binary, ^big}}, 5_000
      assert_receive {:data_channel_message, ^dc, {:text, text}}, 5_000
      assert text == String.duplicate("z", max)
      # Nothing else arrived: the refused ones were not sent.
      refute_receive {:data_channel_message, ^remote, _}, 100
    end

    # (From d19750a to dd5aa05 this stalled part-way in most runs; fixed in e5cdb7a.)
    test "8 MiB ordered and reliable, in 16 KiB messages, arrives complete and in order", %{
      specter: specter
    } do
      %{dc: dc, remote: remote} = open_pair!(specter)
      size = 16_384
      count = div(8 * 1024 * 1024, size)
      :ok = DataChannel.set_buffered_amount_low_threshold(specter, dc, div(@limit, 2))

      {sent_hash, full} = send_all(specter, dc, count, size)
      # The send buffer (256 KiB) is far smaller than 8 MiB: send/3 must have refused.
      assert full > 0

      received_hash =
        Enum.reduce(0..(count - 1), :crypto.hash_init(:sha256), fn i, acc ->
          assert_receive {:data_channel_message, ^remote, {:binary, msg}}, 5_000
          assert <<^i::32, _::binary>> = msg
          assert byte_size(msg) == size
          :crypto.hash_update(acc, msg)
        end)
        |> :crypto.hash_final()

      assert received_hash == sent_hash
      refute_receive {:data_channel_message, ^remote, _}, 100
      # (Not necessarily 0: with a threshold set it sticks, see the known bug above.)
      assert {:ok, left} = DataChannel.buffered_amount(specter, dc)
      assert left <= div(@limit, 2)
    end
  end

  # Sends `count` numbered pseudo-random messages, waiting for the low event whenever send/3
  # answers :buffer_full. Returns the SHA-256 of what was sent and how often it was full.
  defp send_all(specter, dc, count, size) do
    Enum.reduce(0..(count - 1), {:crypto.hash_init(:sha256), 0}, fn i, {hash, full} ->
      msg = <<i::32, :crypto.strong_rand_bytes(size - 4)::binary>>
      full = send_retrying(specter, dc, msg, full)
      {:crypto.hash_update(hash, msg), full}
    end)
    |> then(fn {hash, full} -> {:crypto.hash_final(hash), full} end)
  end

  defp send_retrying(specter, dc, msg, full) do
    case DataChannel.send(specter, dc, msg) do
      :ok ->
        full

      {:error, :buffer_full} ->
        assert_receive {:data_channel_buffered_amount_low, ^dc}, 5_000
        send_retrying(specter, dc, msg, full + 1)
    end
  end

  # -- ownership -------------------------------------------------------------------------

  describe "ownership" do
    test "channel events follow controlling_process/3", %{specter: specter} do
      %{a: a, b: b, dc: dc, remote: remote} = open_pair!(specter)
      test = self()
      owner = spawn_relay!()

      :ok = PeerConnection.controlling_process(specter, b, owner)

      # b's channel now reports to the new owner; a's channel still to the test.
      :ok = DataChannel.send_text(specter, dc, "to the new owner")

      assert_receive {:relayed, {:data_channel_message, ^remote, {:text, "to the new owner"}}},
                     5_000

      :ok = DataChannel.send_text(specter, remote, "to the test")
      assert_receive {:data_channel_message, ^dc, {:text, "to the test"}}, 5_000

      # The new owner reads a passive channel with recv/3.
      :ok = DataChannel.set_active(specter, remote, :once)
      :ok = DataChannel.send(specter, dc, "make passive")

      assert_receive {:relayed, {:data_channel_message, ^remote, {:binary, "make passive"}}},
                     5_000

      :ok = DataChannel.send(specter, dc, "to recv")
      refute_receive {:relayed, {:data_channel_message, ^remote, _}}, 200

      assert {:ok, {:binary, "to recv"}} =
               run(owner, fn -> DataChannel.recv(specter, remote, 5_000) end)

      # Channels b is given later are announced to the new owner, with their events.
      {:ok, late} = DataChannel.create(specter, a, "late")
      assert_receive {:data_channel_created, ^a, ^late}, 5_000
      assert_receive {:data_channel_open, ^late}, 5_000
      assert_receive {:relayed, {:data_channel, ^b, late_remote}}, 5_000
      assert_receive {:relayed, {:data_channel_open, ^late_remote}}, 5_000
      :ok = DataChannel.send(specter, late, "late")
      assert_receive {:relayed, {:data_channel_message, ^late_remote, {:binary, "late"}}}, 5_000

      # Close events too.
      :ok = DataChannel.close(specter, late)
      assert_receive {:data_channel_close, ^late}, 5_000
      assert_receive {:relayed, {:data_channel_close, ^late_remote}}, 5_000

      # Nothing of b's reached the test directly.
      refute_received {:data_channel_message, ^remote, _}
      refute_received {:data_channel, ^b, _}
      refute_received {:data_channel_open, ^late_remote}
      refute_received {:data_channel_close, ^late_remote}

      # And back: the owner hands b to the test process.
      assert :ok = run(owner, fn -> PeerConnection.controlling_process(specter, b, test) end)
      :ok = DataChannel.set_active(specter, remote, true)
      :ok = DataChannel.send_text(specter, dc, "home again")
      assert_receive {:data_channel_message, ^remote, {:text, "home again"}}, 5_000
      refute_receive {:relayed, {:data_channel_message, ^remote, _}}, 100
    end

    test "only the owner can hand a connection over", %{specter: specter} do
      %{b: b} = open_pair!(specter)
      owner = spawn_relay!()
      other = spawn_relay!()
      :ok = PeerConnection.controlling_process(specter, b, owner)

      assert {:error, :not_owner} = PeerConnection.controlling_process(specter, b, other)
    end
  end

  # A process that forwards every message to the test as {:relayed, msg}, and runs
  # functions it is given ({:run, from, fun}) in itself, answering {:ran, result}. Killed
  # when the test ends, which closes the connections it owns.
  defp spawn_relay! do
    test = self()
    pid = spawn(fn -> relay(test) end)
    on_exit(fn -> Process.exit(pid, :kill) end)
    pid
  end

  defp relay(test) do
    receive do
      {:run, from, fun} -> send(from, {:ran, fun.()})
      msg -> send(test, {:relayed, msg})
    end

    relay(test)
  end

  defp run(pid, fun) do
    send(pid, {:run, self(), fun})
    assert_receive {:ran, result}, 10_000
    result
  end
end
