defmodule Specter.Interop.RoomCases do
  @moduledoc false
  # A Specter.Room with two browser participants (the server's /room page, fake camera and
  # microphone) and one Elixir participant, the same test for each browser (`use
  # Specter.Interop.RoomCases, browser: :chromium | :firefox` in
  # test/interop/<browser>_room_test.exs; two instances of the browser): each browser
  # decodes the other's camera forwarded by the room, chat goes everywhere, and a browser
  # that leaves disappears from the other's page. A screenshot goes to
  # _build/test/screenshots/.

  import ExUnit.Assertions
  import Specter.Interop, only: [eventually: 2]

  alias Specter.{Browser, Interop, Room}
  alias Specter.Room.Participant

  @wait 20_000

  # `known_defect: [atom]` tags the test with the Specter defects (test/interop/README.md,
  # "Known defects") that make it fail now and then with this browser: it still runs
  # (`mix test --exclude known_defect` leaves it out).
  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :browser)
    defects = Keyword.get(opts, :known_defect, [])

    quote location: :keep do
      use Specter.Interop, browser: unquote(kind), timeout: 180_000

      alias Specter.Interop.RoomCases, as: Cases

      setup_all do
        %{
          kind: unquote(kind),
          ann: Interop.start_browser!(unquote(kind), :ann),
          ben: Interop.start_browser!(unquote(kind), :ben)
        }
      end

      setup do
        {:ok, specter} = Specter.init()
        server = start_supervised!({Specter.Signalling.Server, port: 0})
        port = Specter.Signalling.Server.port(server)

        {:ok, room} =
          Specter.Room.start_link(specter: specter, name: "it", port: port, subscriber: self())

        %{specter: specter, port: port, room: room}
      end

      if unquote(defects) != [], do: @tag(known_defect: unquote(defects))

      test "two browsers and an Elixir participant in one room", ctx do
        Cases.two_browsers_and_elixir(ctx)
      end
    end
  end

  def two_browsers_and_elixir(%{ann: ann, ben: ben, port: port} = ctx) do
    url = "http://127.0.0.1:#{port}/room"

    for {browser, name} <- [{ann, "ann"}, {ben, "ben"}] do
      assert {:ok, %{"url" => ^url}} = Browser.open_url(browser, url)
      Browser.eval!(browser, ~s|await room.join("#{name}", "room:it"); return true;|, 20_000)
    end

    {:ok, eve} =
      Participant.start_link(
        specter: ctx.specter,
        name: "eve",
        room: "room:it",
        port: port,
        subscriber: self()
      )

    assert_receive {:specter_participant, ^eve, :connected}, @wait

    for browser <- [ann, ben] do
      assert eventually(fn -> page(browser, "room.connectionState()") == "connected" end, @wait),
             diagnose(browser, ctx)
    end

    # Each browser decodes the other's camera, forwarded by the room, and keeps decoding.
    assert eventually(fn -> page(ann, "room.publishers()") == ["ben"] end, @wait)
    assert eventually(fn -> page(ben, "room.publishers()") == ["ann"] end, @wait)

    for browser <- [ann, ben] do
      assert eventually(fn -> frames(browser) > 30 end, @wait), diagnose(browser, ctx)

      first = frames(browser)
      Process.sleep(1_000)
      assert frames(browser) - first >= 15
    end

    # eve receives both browsers' audio and video.
    for _ <- 1..4, do: assert_receive({:specter_participant, ^eve, {:track, _, _}}, @wait)

    # Chat: a browser to everyone, and the Elixir participant to both browsers.
    assert eventually(
             fn -> page(ann, ~s|document.getElementById("send").disabled|) == false end,
             @wait
           )

    Browser.eval!(ann, ~s|return room.sendChat("hi from ann");|)
    assert_receive {:specter_participant, ^eve, {:data, {:text, "hi from ann"}}}, @wait

    assert eventually(
             fn -> %{"from" => "room", "text" => "hi from ann"} in page(ben, "room.chat()") end,
             @wait
           )

    :ok = Participant.send_data(eve, {:text, "hi from eve"})

    for browser <- [ann, ben] do
      assert eventually(
               fn ->
                 %{"from" => "room", "text" => "hi from eve"} in page(browser, "room.chat()")
               end,
               @wait
             )
    end

    dir = Path.join(Mix.Project.build_path(), "screenshots")
    File.mkdir_p!(dir)
    shot = Path.join(dir, "room_demo_#{ctx.kind}.png")
    assert {:ok, ^shot} = Browser.screenshot(ann, shot)

    # ben leaves: his video goes from ann's page; ann and eve stay.
    Browser.eval!(ben, "await room.leave(); return true;")
    assert_receive {:specter_room, _, {:peer_left, _, _}}, @wait
    assert eventually(fn -> page(ann, "room.publishers()") == [] end, @wait)
    assert page(ann, "room.connectionState()") == "connected"
    assert length(Room.peers(ctx.room)) == 2

    for browser <- [ann, ben] do
      assert page(browser, "room.errors()") == []
      Interop.page_healthy!(browser)
    end
  end

  # What the page and the room's side know, for a failure message: the page's status, errors,
  # connection state and inbound video; for each participant's connection on the room's
  # side, its DTLS and ICE states, the selected pair's remote address and the packets sent
  # per kind; for each publication, the packets received and forwarded.
  defp diagnose(browser, ctx) do
    {:messages, messages} = Process.info(self(), :messages)

    pubs =
      for {:specter_room, _, {:published, %{id: id, publisher: who, kind: kind}}} <- messages do
        {:ok, info} = Specter.TrackRemote.info(ctx.specter, id)
        {who, kind, Map.take(info, [:packet_count, :forwarded])}
      end

    inspect(
      %{
        page: %{
          status: page(browser, "room.status()"),
          errors: page(browser, "room.errors()"),
          connection_state: page(browser, "room.connectionState()"),
          inbound_video: Browser.eval!(browser, "return await room.inboundVideo();"),
          diagnostics: Browser.diagnostics(browser)
        },
        room_side:
          for(%{name: name, pid: pid} <- Room.peers(ctx.room), do: {name, side(ctx, pid)}),
        publications: pubs
      },
      limit: :infinity,
      printable_limit: :infinity
    )
  end

  defp side(ctx, peer) do
    %{peer_connection: pc, connected: connected} = Specter.Room.Peer.info(peer)
    :ok = Specter.PeerConnection.get_stats(ctx.specter, pc, format: :map)

    stats =
      receive do
        {:stats, ^pc, stats} -> Map.values(stats)
      after
        5_000 -> []
      end

    transport = Enum.find(stats, %{}, &(&1["type"] == "transport"))
    pair = Enum.find(stats, %{}, &(&1["id"] == transport["selectedCandidatePairId"]))
    remote = Enum.find(stats, %{}, &(&1["id"] == pair["remoteCandidateId"]))

    %{
      connected: connected,
      dtls: transport["dtlsState"],
      ice: transport["iceState"],
      selected_remote: {remote["address"], remote["port"], pair["remoteCandidateId"]},
      sent: for(%{"type" => "outbound-rtp"} = o <- stats, do: {o["kind"], o["packetsSent"]})
    }
  end

  defp page(browser, expression), do: Browser.eval!(browser, "return #{expression};")

  defp frames(browser) do
    browser
    |> Browser.eval!("return await room.inboundVideo();")
    |> Enum.map(& &1["framesDecoded"])
    |> Enum.max(fn -> 0 end)
  end
end
