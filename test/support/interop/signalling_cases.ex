defmodule Specter.Interop.SignallingCases do
  @moduledoc false
  # The signalling demo end to end, the same test for each browser (`use
  # Specter.Interop.SignallingCases, browser: :chromium | :firefox` in
  # test/interop/<browser>_signalling_test.exs): the server's own page (priv/static/demo)
  # signs in over libwebrtc's peerconnection protocol, sees the peer list change, calls a
  # Specter.EchoPeer, gets its fake camera back (decoded frames) and chats with it over a
  # data channel. A screenshot of the call goes to _build/test/screenshots/.

  import ExUnit.Assertions
  import Specter.Interop, only: [eventually: 2]

  alias Specter.{Browser, EchoPeer, Interop, Session}
  alias Specter.Signalling.Client

  @wait 15_000

  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :browser)

    quote location: :keep do
      use Specter.Interop, browser: unquote(kind)

      alias Specter.Interop.SignallingCases, as: Cases

      setup_all do
        %{kind: unquote(kind), browser: Interop.start_browser!(unquote(kind))}
      end

      setup do
        {:ok, specter} = Specter.init()
        server = start_supervised!({Specter.Signalling.Server, port: 0})
        port = Specter.Signalling.Server.port(server)

        {:ok, echo} =
          Specter.EchoPeer.start_link(specter: specter, port: port, subscriber: self())

        %{specter: specter, port: port, echo: echo}
      end

      test "the browser page calls an echo peer: its camera comes back, chat is echoed", ctx do
        Cases.demo_call(ctx)
      end
    end
  end

  def demo_call(%{browser: browser, port: port, echo: echo, kind: kind}) do
    url = "http://127.0.0.1:#{port}/"
    assert {:ok, %{"url" => ^url}} = Browser.open_url(browser, url)

    Browser.eval!(browser, ~s|await demo.signIn("browser"); return true;|)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo"] end, @wait)

    # The peer list follows the server: a member joins, then leaves.
    {:ok, other} = Client.start_link(peer_name: "visitor", port: port)
    assert {:ok, _} = Client.await_signed_in(other)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo", "visitor"] end, @wait)
    :ok = Client.sign_out(other)
    assert eventually(fn -> page(browser, "demo.peers()") == ["echo"] end, @wait)

    # Call the echo peer: the session answers and forwards both tracks back.
    Browser.eval!(browser, ~s|await demo.call("echo"); return true;|)
    session = EchoPeer.session(echo)
    assert_receive {:specter_session, ^session, {:incoming_call, _browser_id}}, @wait
    assert_receive {:specter_session, ^session, {:state, :active}}, @wait
    assert eventually(fn -> page(browser, "demo.connectionState()") == "connected" end, @wait)

    for kind <- [:audio, :video] do
      assert_receive {:specter_session, ^session, {:track, _, %{kind: ^kind}}}, @wait
    end

    # The browser decodes its own camera, coming back through Specter, and keeps decoding.
    assert eventually(fn -> (inbound_video(browser)["framesDecoded"] || 0) > 30 end, @wait)
    first = inbound_video(browser)
    Process.sleep(1_000)
    second = inbound_video(browser)
    assert second["framesDecoded"] - first["framesDecoded"] >= 15, inspect({first, second})
    assert second["frameWidth"] > 0 and second["freezeCount"] <= 1

    # Chat over the data channel the page opened.
    assert eventually(
             fn -> page(browser, ~s|document.getElementById("send").disabled|) == false end,
             @wait
           )

    Browser.eval!(browser, ~s|demo.sendChat("hello echo"); return true;|)

    assert eventually(
             fn ->
               %{"from" => "echo", "text" => "echo: hello echo"} in page(browser, "demo.chat()")
             end,
             @wait
           )

    assert %{calls: 1, messages: 1, tracks: 2} = EchoPeer.stats(echo)

    dir = Path.join(Mix.Project.build_path(), "screenshots")
    File.mkdir_p!(dir)
    shot = Path.join(dir, "signalling_demo_#{kind}.png")
    assert {:ok, ^shot} = Browser.screenshot(browser, shot)
    assert <<0x89, "PNG", _::binary>> = File.read!(shot)

    # The page hangs up (BYE): the echo peer's call ends and it is ready for the next one.
    Browser.eval!(browser, "await demo.hangup(); return true;")

    assert_receive {:specter_session, ^session, {:call_ended, _, {:remote_hangup, _}}}, @wait
    assert_receive {:specter_session, ^session, {:state, :idle}}, @wait
    assert Session.state(session) == :idle
    assert page(browser, "demo.errors()") == []
    Interop.page_healthy!(browser)
  end

  defp page(browser, expression), do: Browser.eval!(browser, "return #{expression};")

  defp inbound_video(browser),
    do: Browser.eval!(browser, "return (await demo.inboundVideo()) || {};")
end
