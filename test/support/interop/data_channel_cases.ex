defmodule Specter.Interop.DataChannelCases do
  @moduledoc false
  # Data channels between Specter and a real browser, the same tests for each browser:
  # `use Specter.Interop.DataChannelCases, browser: :chromium | :firefox` in
  # test/interop/<browser>_data_channel_test.exs. Offer in each direction, with ICE trickled
  # and not; channels opened by each side and a negotiated one; text and binary messages
  # both ways; close from each side.
  #
  # Network rule: everything stays on 127.0.0.1. Specter is confined to loopback in the test
  # env (config/test.exs), the page's RTCPeerConnection has no ICE servers, and of the
  # browser's candidates only those on 127.0.0.1 are given to Specter (it also gathers
  # on the machine's other addresses and on ::1).

  import ExUnit.Assertions

  alias Specter.{Browser, DataChannel, Interop, PeerConnection}

  @wait 10_000

  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :browser)

    quote location: :keep do
      use Specter.Interop, browser: unquote(kind)

      alias Specter.Interop.DataChannelCases, as: Cases

      setup_all do
        %{kind: unquote(kind), browser: Interop.start_browser!(unquote(kind))}
      end

      setup %{browser: browser} do
        Interop.open_page!(browser)
        {:ok, specter} = Specter.init()
        %{specter: specter, refused_resolutions: Interop.refused_resolutions()}
      end

      for ice <- [:trickle, :non_trickle] do
        @tag ice: ice
        test "Specter offers, #{@name} answers#{Interop.ice_suffix(ice)}", ctx do
          Cases.specter_offers(ctx)
        end

        @tag ice: ice
        test "#{@name} offers, Specter answers#{Interop.ice_suffix(ice)}", ctx do
          Cases.browser_offers(ctx)
        end
      end

      # When the remote peer closes a channel, W3C has it announce `closing` before `close`.
      # webrtc-rs 0.21.1 (rtc crate) never emits `RTCDataChannelEvent::OnClosing`; Specter's
      # reader announces `closing` itself when the channel closes under it.
      @tag ice: :trickle
      test "a channel #{@name} closes is announced to Specter as closing, then close", ctx do
        Cases.browser_closes_first(ctx)
      end
    end
  end

  ## The tests

  # The label and protocol of the channel the browser opens.
  defp own(%{kind: kind}), do: {"from-#{kind}", "#{kind}-proto"}

  def specter_offers(%{specter: specter, browser: browser} = ctx) do
    {own, own_proto} = own(ctx)
    pc = Interop.new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    # In the offer: a channel Specter opens (announced to the browser) and a negotiated one,
    # created by both sides with the same id and never announced.
    specter_dc = create!(specter, pc, "from-specter", protocol: "specter-proto")
    negotiated = create!(specter, pc, "negotiated", negotiated: true, id: 5)
    browser_negotiated!(browser, "negotiated", 5)

    Interop.specter_offers!(specter, pc, browser, ctx.ice)

    assert_announced_to_browser!(specter, specter_dc, "from-specter", "specter-proto")
    assert_negotiated_open!(specter, negotiated, "negotiated", 5)

    # The browser opens a channel on the established association.
    browser_dc_created!(browser, own, own_proto)
    browser_dc = assert_announced_to_specter!(specter, pc, browser, own, own_proto)

    exchange!(specter, browser, specter_dc, "from-specter")
    exchange!(specter, browser, browser_dc, own)
    exchange!(specter, browser, negotiated, "negotiated")

    specter_closes!(specter, browser, specter_dc, "from-specter")
    browser_closes!(specter, browser, browser_dc, own)
    # The channel left still carries messages; then Specter closes it too.
    exchange!(specter, browser, negotiated, "negotiated")
    specter_closes!(specter, browser, negotiated, "negotiated")

    still_connected!(specter, pc, browser)
    # Only the browser's non-negotiated channel was announced to Specter.
    refute_received {:data_channel, ^pc, _}
    refute_received {:browser, %{"type" => "datachannel", "label" => "negotiated"}}
    stayed_on_loopback!(specter, pc, ctx)
  end

  def browser_offers(%{specter: specter, browser: browser} = ctx) do
    {own, own_proto} = own(ctx)
    pc = Interop.new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    # In the offer: a channel the browser opens (announced to Specter) and a negotiated one.
    browser_dc_created!(browser, own, own_proto)
    browser_negotiated!(browser, "negotiated", 5)
    negotiated = create!(specter, pc, "negotiated", negotiated: true, id: 5)

    Interop.browser_offers!(specter, pc, browser, ctx.ice)

    browser_dc = assert_announced_to_specter!(specter, pc, browser, own, own_proto)
    assert_negotiated_open!(specter, negotiated, "negotiated", 5)

    # Specter opens a channel on the established association.
    specter_dc = create!(specter, pc, "from-specter", protocol: "specter-proto")
    assert_announced_to_browser!(specter, specter_dc, "from-specter", "specter-proto")

    exchange!(specter, browser, browser_dc, own)
    exchange!(specter, browser, specter_dc, "from-specter")
    exchange!(specter, browser, negotiated, "negotiated")

    browser_closes!(specter, browser, browser_dc, own)
    specter_closes!(specter, browser, specter_dc, "from-specter")
    # The channel left still carries messages; then the browser closes it too.
    exchange!(specter, browser, negotiated, "negotiated")
    browser_closes!(specter, browser, negotiated, "negotiated")

    still_connected!(specter, pc, browser)
    refute_received {:data_channel, ^pc, _}
    refute_received {:browser, %{"type" => "datachannel", "label" => "negotiated"}}
    stayed_on_loopback!(specter, pc, ctx)
  end

  def browser_closes_first(%{specter: specter, browser: browser} = ctx) do
    {own, own_proto} = own(ctx)
    pc = Interop.new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    browser_dc_created!(browser, own, own_proto)
    Interop.browser_offers!(specter, pc, browser, ctx.ice)
    dc = assert_announced_to_specter!(specter, pc, browser, own, own_proto)

    assert Browser.call!(browser, "closeChannel", [own]) in ["closing", "closed"]
    assert_receive {:browser, %{"type" => "close", "label" => ^own}}, @wait

    assert first_close_event!(dc) == :closing,
           "Specter sent {:data_channel_close, dc} without {:data_channel_closing, dc} first"

    assert_receive {:data_channel_close, ^dc}, @wait
  end

  ## Signalling

  # Nothing but 127.0.0.1 was signalled to Specter, and it carried the traffic
  # (`Interop.stayed_on_loopback!/3`); no host name was resolved either (sync test modules
  # run alone, so the runtime-wide counter is this test's).
  defp stayed_on_loopback!(specter, pc, %{refused_resolutions: before, ice: ice}) do
    assert Interop.refused_resolutions() == before
    Interop.stayed_on_loopback!(specter, pc, ice)
  end

  defp still_connected!(specter, pc, browser) do
    assert Browser.call!(browser, "connectionState", ["pc"]) == "connected"
    :ok = PeerConnection.connection_state(specter, pc)
    assert_receive {:connection_state, ^pc, :connected}, @wait
  end

  ## Channels

  defp create!(specter, pc, label, opts) do
    assert {:ok, dc} = DataChannel.create(specter, pc, label, opts)
    assert_receive {:data_channel_created, ^pc, ^dc}, @wait
    dc
  end

  defp browser_dc_created!(browser, label, protocol) do
    assert %{"label" => ^label, "negotiated" => false, "protocol" => ^protocol} =
             Browser.call!(browser, "createDataChannel", ["pc", label, %{protocol: protocol}])
  end

  defp browser_negotiated!(browser, label, id) do
    assert %{"label" => ^label, "negotiated" => true, "id" => ^id} =
             Browser.call!(browser, "createDataChannel", [
               "pc",
               label,
               %{negotiated: true, id: id}
             ])
  end

  # A channel Specter created reaches the browser through `ondatachannel` and opens on both
  # sides, with the same stream id, label and protocol.
  defp assert_announced_to_browser!(specter, dc, label, protocol) do
    assert_receive {:data_channel_open, ^dc}, @wait

    assert_receive {:browser, %{"type" => "datachannel", "label" => ^label} = announced},
                   @wait

    assert %{"negotiated" => false, "ordered" => true, "protocol" => ^protocol} = announced
    assert_receive {:browser, %{"type" => "open", "label" => ^label, "id" => id}}, @wait
    assert is_integer(id)

    assert {:ok, %{label: ^label, protocol: ^protocol, negotiated: false, id: ^id}} =
             DataChannel.info(specter, dc)
  end

  # A channel the browser created reaches Specter as `{:data_channel, pc, dc}` and opens on
  # both sides, with the same stream id, label and protocol.
  defp assert_announced_to_specter!(specter, pc, browser, label, protocol) do
    assert_receive {:data_channel, ^pc, dc}, @wait
    assert_receive {:data_channel_open, ^dc}, @wait
    assert_receive {:browser, %{"type" => "open", "label" => ^label, "id" => id}}, @wait
    assert is_integer(id)

    assert {:ok, %{label: ^label, protocol: ^protocol, negotiated: false, ordered: true, id: ^id}} =
             DataChannel.info(specter, dc)

    assert {:ok, :open} = DataChannel.ready_state(specter, dc)
    assert %{"readyState" => "open"} = Browser.call!(browser, "channel", [label])
    dc
  end

  defp assert_negotiated_open!(specter, dc, label, id) do
    assert_receive {:data_channel_open, ^dc}, @wait
    assert_receive {:browser, %{"type" => "open", "label" => ^label, "id" => ^id}}, @wait
    assert {:ok, %{label: ^label, negotiated: true, id: ^id}} = DataChannel.info(specter, dc)
  end

  ## Messages

  # Every byte value, so no text decoding can pass for binary.
  @all_bytes :binary.list_to_bin(Enum.to_list(0..255))
  # Valid UTF-8 sent as binary: the kind must come from the wire, not from the content.
  @utf8_bytes "plain ASCII, sent as binary"
  # Several SCTP chunks.
  @large :binary.copy(<<0xDE, 0xAD, 0x00, 0xBE, 0xEF>>, 10_000)

  # Text and binary messages both ways on one channel; each receiver tells them apart and
  # gets them in order.
  defp exchange!(specter, browser, dc, label) do
    to_browser = [
      {:text, "#{label}: héllo from Specter ☃ 🎉"},
      {:binary, @all_bytes},
      {:binary, @utf8_bytes},
      {:text, "{\"kind\": \"text that looks like data\", \"nul\": \"\\u0000\"}"},
      # Empty messages travel with their own PPIDs (RFC 8831 section 6.6).
      {:text, ""},
      {:binary, ""},
      {:binary, @large}
    ]

    for {kind, data} <- to_browser do
      case kind do
        :text -> assert :ok = DataChannel.send_text(specter, dc, data)
        :binary -> assert :ok = DataChannel.send(specter, dc, data)
      end
    end

    for {kind, data} <- to_browser do
      assert_receive {:browser, %{"type" => "message", "label" => ^label} = message}, @wait

      case kind do
        :text ->
          assert %{"kind" => "text", "jsType" => "string", "data" => ^data} = message

        :binary ->
          assert %{"kind" => "binary", "jsType" => "object", "constructorName" => "ArrayBuffer"} =
                   message

          assert message["byteLength"] == byte_size(data)
          assert Base.decode64!(message["data"]) == data
      end
    end

    to_specter = [
      {:text, "#{label}: héllo from the browser ☃ 🎉"},
      {:binary, @all_bytes},
      {:binary, @utf8_bytes},
      {:text, "\u0000 text with a NUL"},
      {:text, ""},
      {:binary, ""},
      {:binary, @large}
    ]

    for {kind, data} <- to_specter do
      payload = if kind == :binary, do: Base.encode64(data), else: data
      assert is_integer(Browser.call!(browser, "send", [label, Atom.to_string(kind), payload]))
    end

    for expected <- to_specter do
      assert_receive {:data_channel_message, ^dc, received}, @wait
      assert received == expected
    end
  end

  ## Closing

  # Specter closes: its owner gets `{:data_channel_close, dc}`, the browser's channel closes
  # (`closing`, then `close`).
  defp specter_closes!(specter, browser, dc, label) do
    assert :ok = DataChannel.close(specter, dc)
    assert_receive {:data_channel_close, ^dc}, @wait
    assert_receive {:browser, %{"type" => "close", "label" => ^label}}, @wait
    assert_received {:browser, %{"type" => "closing", "label" => ^label}}

    assert %{"readyState" => "closed"} = Browser.call!(browser, "channel", [label])
    assert {:error, :closed} = DataChannel.send_text(specter, dc, "too late")
  end

  # The browser closes: its channel closes and Specter's owner gets
  # `{:data_channel_closing, dc}`, then `{:data_channel_close, dc}`.
  defp browser_closes!(specter, browser, dc, label) do
    assert Browser.call!(browser, "closeChannel", [label]) in ["closing", "closed"]
    assert_receive {:browser, %{"type" => "close", "label" => ^label}}, @wait
    assert first_close_event!(dc) == :closing
    assert_receive {:data_channel_close, ^dc}, @wait

    assert {:error, :closed} = DataChannel.send_text(specter, dc, "too late")
    assert {:error, :closed} = DataChannel.ready_state(specter, dc)
  end

  # Which of `{:data_channel_closing, dc}` and `{:data_channel_close, dc}` comes first.
  defp first_close_event!(dc) do
    receive do
      {:data_channel_closing, ^dc} -> :closing
      {:data_channel_close, ^dc} -> :close
    after
      @wait -> flunk("Specter reported neither closing nor close for #{dc}")
    end
  end
end
