defmodule Specter.Interop.ChromiumSignallingTest do
  # The signalling demo end to end: the server's own page (priv/static/demo) in headless
  # Chromium signs in over libwebrtc's peerconnection protocol, sees the peer list change,
  # calls a Specter.EchoPeer, gets its fake camera back (decoded frames) and chats with it
  # over a data channel. A screenshot of the call goes to _build/test/screenshots/.
  use ExUnit.Case, async: false

  @moduletag :browser
  @moduletag timeout: 120_000

  alias Specter.{Browser, EchoPeer, Session}
  alias Specter.Signalling.{Client, Server}

  @wait 15_000

  setup_all do
    case Browser.check_setup() do
      :ok -> :ok
      {:error, why} -> raise "browser interop tests cannot run: #{why} (scripts/test installs it)"
    end

    %{browser: start_supervised!(Browser)}
  end

  setup do
    {:ok, specter} = Specter.init()
    server = start_supervised!({Server, port: 0})
    port = Server.port(server)
    {:ok, echo} = EchoPeer.start_link(specter: specter, port: port, subscriber: self())
    %{specter: specter, port: port, echo: echo}
  end

  test "the browser page calls an echo peer: its camera comes back, chat is echoed", ctx do
    %{browser: browser, port: port, echo: echo} = ctx
    url = "http://127.0.0.1:#{port}/"
    assert {:ok, %{"url" => ^url}} = Browser.open_url(browser, url)

    Browser.eval!(browser, ~s|await demo.signIn("browser"); return true;|)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo"] end)

    # The peer list follows the server: a member joins, then leaves.
    {:ok, other} = Client.start_link(peer_name: "visitor", port: port)
    assert {:ok, _} = Client.await_signed_in(other)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo", "visitor"] end)
    :ok = Client.sign_out(other)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo"] end)

    # Call the echo peer: the session answers and forwards both tracks back.
    Browser.eval!(browser, ~s|await demo.call("echo"); return true;|)
    session = EchoPeer.session(echo)
    assert_receive {:specter_session, ^session, {:incoming_call, _browser_id}}, @wait
    assert_receive {:specter_session, ^session, {:state, :active}}, @wait
    assert eventually(fn -> page(browser, "demo.connectionState()") == "connected" end)

    for kind <- [:audio, :video] do
      assert_receive {:specter_session, ^session, {:track, _, %{kind: ^kind}}}, @wait
    end

    # Chromium decodes its own camera, coming back through Specter, and keeps decoding.
    assert eventually(fn -> (inbound_video(browser)["framesDecoded"] || 0) > 30 end)
    first = inbound_video(browser)
    Process.sleep(1_000)
    second = inbound_video(browser)
    assert second["framesDecoded"] - first["framesDecoded"] >= 15, inspect({first, second})
    assert second["frameWidth"] > 0 and second["freezeCount"] <= 1

    # Chat over the data channel the page opened.
    assert eventually(fn ->
             page(browser, ~s|document.getElementById("send").disabled|) == false
           end)

    Browser.eval!(browser, ~s|demo.sendChat("hello echo"); return true;|)

    assert eventually(fn ->
             %{"from" => "echo", "text" => "echo: hello echo"} in page(browser, "demo.chat()")
           end)

    assert %{calls: 1, messages: 1, tracks: 2} = EchoPeer.stats(echo)

    dir = Path.join(Mix.Project.build_path(), "screenshots")
    File.mkdir_p!(dir)
    shot = Path.join(dir, "signalling_demo.png")
    assert {:ok, ^shot} = Browser.screenshot(browser, shot)
    assert <<0x89, "PNG", _::binary>> = File.read!(shot)

    # The page hangs up (BYE): the echo peer's call ends and it is ready for the next one.
    Browser.eval!(browser, "await demo.hangup(); return true;")

    assert_receive {:specter_session, ^session, {:call_ended, _, {:remote_hangup, _}}}, @wait
    assert_receive {:specter_session, ^session, {:state, :idle}}, @wait
    assert Session.state(session) == :idle
    assert page(browser, "demo.errors()") == []

    for %{"type" => type} = event <- Browser.diagnostics(browser) do
      assert type not in ["page_error", "page_crash", "fatal"], inspect(event)
    end
  end

  defp page(browser, expression), do: Browser.eval!(browser, "return #{expression};")

  defp inbound_video(browser),
    do: Browser.eval!(browser, "return (await demo.inboundVideo()) || {};")

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
