defmodule Specter.Interop.ChromiumRoomTest do
  # A Specter.Room with two headless Chromium participants (the server's /room page, fake
  # camera and microphone) and one Elixir participant: each browser decodes the other's
  # camera forwarded by the room, chat goes everywhere, and a browser that leaves
  # disappears from the other's page. A screenshot goes to _build/test/screenshots/.
  use ExUnit.Case, async: false

  @moduletag :browser
  @moduletag timeout: 180_000

  alias Specter.{Browser, Room}
  alias Specter.Room.Participant
  alias Specter.Signalling.Server

  @wait 20_000

  setup_all do
    case Browser.check_setup() do
      :ok -> :ok
      {:error, why} -> raise "browser interop tests cannot run: #{why} (scripts/test installs it)"
    end

    %{
      ann: start_supervised!(Supervisor.child_spec(Browser, id: :ann)),
      ben: start_supervised!(Supervisor.child_spec(Browser, id: :ben))
    }
  end

  setup do
    {:ok, specter} = Specter.init()
    server = start_supervised!({Server, port: 0})
    port = Server.port(server)
    {:ok, room} = Room.start_link(specter: specter, name: "it", port: port, subscriber: self())
    %{specter: specter, port: port, room: room}
  end

  test "two browsers and an Elixir participant in one room", ctx do
    %{ann: ann, ben: ben, port: port} = ctx
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
      assert eventually(fn -> page(browser, "room.connectionState()") == "connected" end)
    end

    # Each browser decodes the other's camera, forwarded by the room, and keeps decoding.
    assert eventually(fn -> page(ann, "room.publishers()") == ["ben"] end)
    assert eventually(fn -> page(ben, "room.publishers()") == ["ann"] end)

    for browser <- [ann, ben] do
      assert eventually(fn -> frames(browser) > 30 end), inspect(page(browser, "room.errors()"))
      first = frames(browser)
      Process.sleep(1_000)
      assert frames(browser) - first >= 15
    end

    # eve receives both browsers' audio and video.
    for _ <- 1..4, do: assert_receive({:specter_participant, ^eve, {:track, _, _}}, @wait)

    # Chat: a browser to everyone, and the Elixir participant to both browsers.
    assert eventually(fn -> page(ann, ~s|document.getElementById("send").disabled|) == false end)
    Browser.eval!(ann, ~s|return room.sendChat("hi from ann");|)
    assert_receive {:specter_participant, ^eve, {:data, {:text, "hi from ann"}}}, @wait

    assert eventually(fn ->
             %{"from" => "room", "text" => "hi from ann"} in page(ben, "room.chat()")
           end)

    :ok = Participant.send_data(eve, {:text, "hi from eve"})

    for browser <- [ann, ben] do
      assert eventually(fn ->
               %{"from" => "room", "text" => "hi from eve"} in page(browser, "room.chat()")
             end)
    end

    dir = Path.join(Mix.Project.build_path(), "screenshots")
    File.mkdir_p!(dir)
    shot = Path.join(dir, "room_demo.png")
    assert {:ok, ^shot} = Browser.screenshot(ann, shot)

    # ben leaves: his video goes from ann's page; ann and eve stay.
    Browser.eval!(ben, "await room.leave(); return true;")
    assert_receive {:specter_room, _, {:peer_left, _, _}}, @wait
    assert eventually(fn -> page(ann, "room.publishers()") == [] end)
    assert page(ann, "room.connectionState()") == "connected"
    assert length(Room.peers(ctx.room)) == 2

    for browser <- [ann, ben] do
      assert page(browser, "room.errors()") == []

      for %{"type" => type} = event <- Browser.diagnostics(browser),
          do: assert(type not in ["page_error", "page_crash", "fatal"], inspect(event))
    end
  end

  defp page(browser, expression), do: Browser.eval!(browser, "return #{expression};")

  defp frames(browser) do
    browser
    |> Browser.eval!("return await room.inboundVideo();")
    |> Enum.map(& &1["framesDecoded"])
    |> Enum.max(fn -> 0 end)
  end

  defp eventually(fun, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + @wait

    cond do
      fun.() ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(100)
        eventually(fun, deadline)
    end
  end
end
