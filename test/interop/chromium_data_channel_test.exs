defmodule Specter.Interop.ChromiumDataChannelTest do
  # Data channels between Specter and a real browser: Debian's headless Chromium, driven by
  # Playwright (test/interop/js/driver.js) through `Specter.Browser`. Offer in each
  # direction; channels opened by each side and a negotiated one; text and binary messages
  # both ways; close from each side.
  #
  # Network rule: everything stays on 127.0.0.1. Specter is confined to loopback in the test
  # env (config/test.exs), the page's RTCPeerConnection has no ICE servers, and of
  # Chromium's candidates only those on 127.0.0.1 are given to Specter (it also gathers
  # on the machine's other addresses and on ::1).
  use ExUnit.Case, async: false

  @moduletag :browser
  @moduletag timeout: 120_000

  alias Specter.{Browser, DataChannel, PeerConnection}

  @wait 10_000

  setup_all do
    case Browser.check_setup() do
      :ok -> :ok
      {:error, why} -> raise "browser interop tests cannot run: #{why} (scripts/test installs it)"
    end

    %{browser: start_supervised!(Browser)}
  end

  setup %{browser: browser} do
    assert {:ok, page} = Browser.open_page(browser)
    # getUserMedia with fake devices: the permission makes Chromium gather on 127.0.0.1.
    assert %{"mediaKinds" => ["audio", "video"], "url" => "http://127.0.0.1:" <> _} = page

    on_exit(fn ->
      try do
        Browser.close_page(browser)
      catch
        :exit, _ -> :ok
      end
    end)

    {:ok, specter} = Specter.init()
    %{specter: specter, refused_resolutions: refused_resolutions()}
  end

  test "Specter offers, Chromium answers", %{specter: specter, browser: browser} = ctx do
    pc = new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    # In the offer: a channel Specter opens (announced to Chromium) and a negotiated one,
    # created by both sides with the same id and never announced.
    specter_dc = create!(specter, pc, "from-specter", protocol: "specter-proto")
    negotiated = create!(specter, pc, "negotiated", negotiated: true, id: 5)
    browser_negotiated!(browser, "negotiated", 5)

    specter_offers!(specter, pc, browser)

    assert_announced_to_browser!(specter, specter_dc, "from-specter", "specter-proto")
    assert_negotiated_open!(specter, negotiated, "negotiated", 5)

    # Chromium opens a channel on the established association.
    browser_dc_created!(browser, "from-chromium", "chromium-proto")

    browser_dc =
      assert_announced_to_specter!(specter, pc, browser, "from-chromium", "chromium-proto")

    exchange!(specter, browser, specter_dc, "from-specter")
    exchange!(specter, browser, browser_dc, "from-chromium")
    exchange!(specter, browser, negotiated, "negotiated")

    specter_closes!(specter, browser, specter_dc, "from-specter")
    browser_closes!(specter, browser, browser_dc, "from-chromium")
    # The channel left still carries messages; then Specter closes it too.
    exchange!(specter, browser, negotiated, "negotiated")
    specter_closes!(specter, browser, negotiated, "negotiated")

    still_connected!(specter, pc, browser)
    # Only Chromium's non-negotiated channel was announced to Specter.
    refute_received {:data_channel, ^pc, _}
    refute_received {:browser, %{"type" => "datachannel", "label" => "negotiated"}}
    stayed_on_loopback!(specter, pc, ctx)
  end

  test "Chromium offers, Specter answers", %{specter: specter, browser: browser} = ctx do
    pc = new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])

    # In the offer: a channel Chromium opens (announced to Specter) and a negotiated one.
    browser_dc_created!(browser, "from-chromium", "chromium-proto")
    browser_negotiated!(browser, "negotiated", 5)
    negotiated = create!(specter, pc, "negotiated", negotiated: true, id: 5)

    chromium_offers!(specter, pc, browser)

    browser_dc =
      assert_announced_to_specter!(specter, pc, browser, "from-chromium", "chromium-proto")

    assert_negotiated_open!(specter, negotiated, "negotiated", 5)

    # Specter opens a channel on the established association.
    specter_dc = create!(specter, pc, "from-specter", protocol: "specter-proto")
    assert_announced_to_browser!(specter, specter_dc, "from-specter", "specter-proto")

    exchange!(specter, browser, browser_dc, "from-chromium")
    exchange!(specter, browser, specter_dc, "from-specter")
    exchange!(specter, browser, negotiated, "negotiated")

    browser_closes!(specter, browser, browser_dc, "from-chromium")
    specter_closes!(specter, browser, specter_dc, "from-specter")
    # The channel left still carries messages; then Chromium closes it too.
    exchange!(specter, browser, negotiated, "negotiated")
    browser_closes!(specter, browser, negotiated, "negotiated")

    still_connected!(specter, pc, browser)
    refute_received {:data_channel, ^pc, _}
    refute_received {:browser, %{"type" => "datachannel", "label" => "negotiated"}}
    stayed_on_loopback!(specter, pc, ctx)
  end

  # When the remote peer closes a channel, W3C has it announce `closing` before `close`.
  # webrtc-rs 0.21.1 (rtc crate) never emits `RTCDataChannelEvent::OnClosing`; Specter's
  # reader announces `closing` itself when the channel closes under it.
  test "a channel Chromium closes is announced to Specter as closing, then close",
       %{specter: specter, browser: browser} do
    pc = new_pc!(specter)
    assert Browser.call!(browser, "newPeerConnection", ["pc"])
    browser_dc_created!(browser, "from-chromium", "chromium-proto")
    chromium_offers!(specter, pc, browser)
    dc = assert_announced_to_specter!(specter, pc, browser, "from-chromium", "chromium-proto")

    assert Browser.call!(browser, "closeChannel", ["from-chromium"]) in ["closing", "closed"]
    assert_receive {:browser, %{"type" => "close", "label" => "from-chromium"}}, @wait

    assert first_close_event!(dc) == :closing,
           "Specter sent {:data_channel_close, dc} without {:data_channel_closing, dc} first"

    assert_receive {:data_channel_close, ^dc}, @wait
  end

  ## Signalling

  defp new_pc!(specter) do
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    assert_receive {:peer_connection_ready, ^pc}, @wait
    pc
  end

  # Specter's offer, Chromium's answer, then trickle ICE until both are connected.
  defp specter_offers!(specter, pc, browser) do
    :ok = PeerConnection.create_offer(specter, pc)
    assert_receive {:offer, ^pc, offer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, offer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait

    answer = Browser.call!(browser, "answer", ["pc", decode!(offer)])
    assert %{"type" => "answer", "sdp" => "v=0\r\n" <> _} = answer
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(answer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait

    relay_ice_until_connected!(specter, pc, browser)
  end

  # Chromium's offer, Specter's answer, then trickle ICE until both are connected.
  defp chromium_offers!(specter, pc, browser) do
    offer = Browser.call!(browser, "createOffer", ["pc"])
    assert %{"type" => "offer", "sdp" => "v=0\r\n" <> _} = offer
    :ok = PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(offer))
    assert_receive {:ok, ^pc, :set_remote_description}, @wait
    :ok = PeerConnection.create_answer(specter, pc)
    assert_receive {:answer, ^pc, answer}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, answer)
    assert_receive {:ok, ^pc, :set_local_description}, @wait
    assert Browser.call!(browser, "setRemoteDescription", ["pc", decode!(answer)])

    relay_ice_until_connected!(specter, pc, browser)
  end

  defp decode!(json) do
    assert {:ok, map} = Specter.JSON.decode(json)
    map
  end

  defp relay_ice_until_connected!(specter, pc, browser),
    do: Browser.relay_ice_until_connected!(specter, pc, browser, @wait)

  # Nothing but 127.0.0.1 was signalled to Specter, and it carried the traffic.
  #
  # Specter's stats: every remote candidate it was given (host, srflx, relay) is on
  # 127.0.0.1, as are its own; peer-reflexive ones are tolerated, because Chromium also runs
  # connectivity checks from its socket on the machine's other address to Specter's
  # 127.0.0.1 candidate (destination loopback). Specter's loopback confinement refuses to
  # answer those (runtime_info's refused_sends grows), so they cannot carry anything: the
  # selected pair is 127.0.0.1 on both ends. No host name was resolved either (sync test
  # modules run alone, so the runtime-wide counter is this test's).
  defp refused_resolutions do
    {:ok, %{refused_resolutions: n}} = Specter.runtime_info()
    n
  end

  defp stayed_on_loopback!(specter, pc, %{refused_resolutions: before}) do
    assert refused_resolutions() == before

    :ok = PeerConnection.get_stats(specter, pc, format: :map)
    assert_receive {:stats, ^pc, stats}, @wait
    stats = Map.values(stats)

    candidates =
      for %{"type" => t} = c <- stats, t in ["local-candidate", "remote-candidate"], do: c

    assert Enum.any?(candidates, &(&1["type"] == "remote-candidate"))

    for %{"candidateType" => type} = c <- candidates, type != "prflx" do
      assert c["address"] == "127.0.0.1", "not on loopback: #{inspect(c)}"
    end

    assert %{"selectedCandidatePairId" => pair_id} =
             Enum.find(stats, &(&1["type"] == "transport"))

    assert %{"state" => "succeeded", "nominated" => true} =
             pair = Enum.find(stats, &(&1["id"] == pair_id))

    # webrtc-rs 0.21.1 names candidate stats "RTCLocalIceCandidate_<id>" /
    # "RTCRemoteIceCandidate_<id>" but refers to them from pairs as "<id>"; Specter repairs
    # the references (PeerConnection.get_stats). It lists no stats for a peer-reflexive
    # remote candidate, though, so a pair whose remote end was learned from a check (as
    # happens when Chromium's only interface is loopback) references nothing: then the
    # loopback check above over every listed candidate is what holds.
    local = Enum.find(candidates, &(&1["id"] == pair["localCandidateId"]))
    assert %{"address" => "127.0.0.1"} = local

    case Enum.find(candidates, &(&1["id"] == pair["remoteCandidateId"])) do
      nil -> assert String.starts_with?(pair["remoteCandidateId"], "candidate:")
      remote -> assert remote["address"] == "127.0.0.1"
    end
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

  # A channel Specter created reaches Chromium through `ondatachannel` and opens on both
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

  # A channel Chromium created reaches Specter as `{:data_channel, pc, dc}` and opens on
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
      {:text, "#{label}: héllo from Chromium ☃ 🎉"},
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

  # Specter closes: its owner gets `{:data_channel_close, dc}`, Chromium's channel closes.
  defp specter_closes!(specter, browser, dc, label) do
    assert :ok = DataChannel.close(specter, dc)
    assert_receive {:data_channel_close, ^dc}, @wait
    assert_receive {:browser, %{"type" => "close", "label" => ^label}}, @wait
    assert_received {:browser, %{"type" => "closing", "label" => ^label}}
    assert %{"readyState" => "closed"} = Browser.call!(browser, "channel", [label])
    assert {:error, :closed} = DataChannel.send_text(specter, dc, "too late")
  end

  # Chromium closes: Chromium's channel closes and Specter's owner gets
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
