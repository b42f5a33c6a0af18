defmodule Specter.Interop do
  @moduledoc false
  # What the browser interop tests (test/interop, test/support/interop/*_cases.ex) share,
  # whichever the browser (`Specter.Browser`, Chromium or Firefox): launching it, a fresh
  # page per test, offer/answer in each direction with ICE either trickled (`:trickle`) or
  # carried whole in the descriptions (`:non_trickle`), and the check that Specter's
  # connection stayed on 127.0.0.1.
  #
  # Non-trickle, as a peer that cannot trickle does it: Specter waits for the end of its
  # gathering (`{:ice_candidate, pc, nil}`) and sends `local_description(include_candidates:
  # true)`; the browser waits for `iceGatheringState == "complete"` and sends its
  # `localDescription`, of whose candidates only those on 127.0.0.1 are kept. Neither side's
  # `add_ice_candidate` / `addIceCandidate` is called.

  import ExUnit.Assertions
  import ExUnit.Callbacks, only: [start_supervised!: 1, on_exit: 1]

  alias Specter.{Browser, PeerConnection}

  @wait 10_000

  @type ice :: :trickle | :non_trickle

  @doc """
  What every interop test module starts with (the `*_cases.ex` modules' `__using__`):
  `ExUnit.Case` (not async: the tests measure runtime-wide counters), the `:browser` tag and
  the browser's own (`:chromium`, `:firefox`), a timeout, `@name` (the browser's display
  name, for test names) and the `Interop` alias.
  """
  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :browser)
    timeout = Keyword.get(opts, :timeout, 120_000)

    quote do
      use ExUnit.Case, async: false

      alias Specter.Interop

      @moduletag :browser
      @moduletag unquote(kind)
      @moduletag timeout: unquote(timeout)

      @name Specter.Browser.name(unquote(kind))
    end
  end

  ## The browser and its page

  @doc """
  Starts a browser of `kind` under the test supervisor (in `setup_all`): the test module
  fails, never skips, when it cannot be launched.
  """
  def start_browser!(kind, id \\ Browser) do
    case Browser.check_setup(kind) do
      :ok -> :ok
      {:error, why} -> raise "browser interop tests cannot run: #{why} (scripts/test installs it)"
    end

    start_supervised!(Supervisor.child_spec({Browser, browser: kind}, id: id))
  end

  @doc """
  A fresh page served by the driver (closed when the test ends), holding camera and
  microphone permission: that is what makes the browser gather on 127.0.0.1.
  """
  def open_page!(browser) do
    assert {:ok, page} = Browser.open_page(browser)
    assert %{"mediaKinds" => ["audio", "video"], "url" => "http://127.0.0.1:" <> _} = page

    on_exit(fn ->
      try do
        Browser.close_page(browser)
      catch
        :exit, _ -> :ok
      end
    end)

    page
  end

  @doc "` (non-trickle)` for test names."
  def ice_suffix(:trickle), do: ""
  def ice_suffix(:non_trickle), do: " (non-trickle)"

  ## Signalling

  def new_pc!(specter) do
    {:ok, pc} = PeerConnection.new(specter, PeerConnection.default_api!(specter))
    assert_receive {:peer_connection_ready, ^pc}, @wait
    pc
  end

  def decode!(json) do
    assert {:ok, map} = Specter.JSON.decode(json)
    map
  end

  @doc "Specter's offer, the browser's answer, then ICE until both are connected."
  def specter_offers!(specter, pc, browser, ice) do
    offer = specter_local!(specter, pc, :offer, ice)
    answer = Browser.call!(browser, "answer", ["pc", offer])
    assert %{"type" => "answer", "sdp" => "v=0\r\n" <> _} = answer
    specter_remote!(specter, pc, browser_description!(browser, answer, ice))
    connect!(specter, pc, browser, ice)
  end

  @doc "The browser's offer, Specter's answer, then ICE until both are connected."
  def browser_offers!(specter, pc, browser, ice) do
    offer = Browser.call!(browser, "createOffer", ["pc"])
    assert %{"type" => "offer", "sdp" => "v=0\r\n" <> _} = offer
    specter_remote!(specter, pc, browser_description!(browser, offer, ice))
    answer = specter_local!(specter, pc, :answer, ice)
    assert Browser.call!(browser, "setRemoteDescription", ["pc", answer])
    connect!(specter, pc, browser, ice)
  end

  @doc """
  Creates Specter's offer or answer and sets it as the local description; returns what
  goes to the browser (decoded): the description itself when trickling, or, non-trickle,
  the description with every candidate once Specter's gathering has ended.
  """
  def specter_local!(specter, pc, type, ice) when type in [:offer, :answer] do
    :ok =
      if type == :offer,
        do: PeerConnection.create_offer(specter, pc),
        else: PeerConnection.create_answer(specter, pc)

    assert_receive {^type, ^pc, json}, @wait
    :ok = PeerConnection.set_local_description(specter, pc, json)
    assert_receive {:ok, ^pc, :set_local_description}, @wait

    case ice do
      :trickle -> decode!(json)
      :non_trickle -> specter_gathered_description!(specter, pc)
    end
  end

  # Waits for the end of Specter's gathering, then takes its local description with every
  # candidate in it: all on 127.0.0.1, and at least one.
  defp specter_gathered_description!(specter, pc) do
    assert_receive {:ice_candidate, ^pc, nil}, @wait
    :ok = PeerConnection.local_description(specter, pc, include_candidates: true)
    assert_receive {:local_description, ^pc, json}, @wait
    %{"sdp" => sdp} = description = decode!(json)
    candidates = for "a=candidate:" <> c <- String.split(sdp, "\r\n"), do: "candidate:" <> c
    assert candidates != [], "no candidate in Specter's description: #{sdp}"

    for c <- candidates,
        do: assert(Browser.loopback_candidate?(c), "Specter left loopback: #{c}")

    description
  end

  @doc """
  What the browser sends of the description it just set locally: that description when
  trickling, its complete local description (127.0.0.1 candidates only) otherwise.
  """
  def browser_description!(_browser, description, :trickle), do: description

  def browser_description!(browser, _description, :non_trickle),
    do: Browser.gathered_description!(browser, @wait)

  @doc "Sets a description from the browser on Specter, without its non-loopback candidates."
  def specter_remote!(specter, pc, description) do
    :ok =
      PeerConnection.set_remote_description(specter, pc, Browser.loopback_only_sdp(description))

    assert_receive {:ok, ^pc, :set_remote_description}, @wait
  end

  @doc "Trickles ICE until connected, or (non-trickle) only waits for it."
  def connect!(specter, pc, browser, :trickle),
    do: Browser.relay_ice_until_connected!(specter, pc, browser, @wait)

  def connect!(_specter, pc, browser, :non_trickle),
    do: Browser.await_connected!(pc, browser, @wait)

  ## Loopback

  @doc """
  Nothing but 127.0.0.1 was signalled to Specter, and it carried the traffic.

  Specter's stats: every candidate it lists (host, srflx, relay) is on 127.0.0.1;
  peer-reflexive ones are tolerated, because browsers also run connectivity checks from
  their sockets on other addresses to Specter's 127.0.0.1 candidate (destination loopback).
  Specter's loopback confinement refuses to answer those (runtime_info's refused_sends
  grows), so they cannot carry anything: the selected pair's local end is 127.0.0.1, and
  its remote end too when Specter lists it.

  webrtc-rs 0.21.1 registers stats only for trickled remote candidates (none for those in
  a description or peer-reflexive ones), so only a trickled connection must list one.
  """
  def stayed_on_loopback!(specter, pc, ice) do
    :ok = PeerConnection.get_stats(specter, pc, format: :map)
    assert_receive {:stats, ^pc, stats}, @wait
    stats = Map.values(stats)

    candidates =
      for %{"type" => t} = c <- stats, t in ["local-candidate", "remote-candidate"], do: c

    if ice == :trickle, do: assert(Enum.any?(candidates, &(&1["type"] == "remote-candidate")))

    for %{"candidateType" => type} = c <- candidates, type != "prflx" do
      assert c["address"] == "127.0.0.1", "not on loopback: #{inspect(c)}"
    end

    assert %{"selectedCandidatePairId" => pair_id} =
             Enum.find(stats, &(&1["type"] == "transport"))

    assert %{"state" => "succeeded", "nominated" => true} =
             pair = Enum.find(stats, &(&1["id"] == pair_id))

    # webrtc-rs 0.21.1 names candidate stats "RTCLocalIceCandidate_<id>" /
    # "RTCRemoteIceCandidate_<id>" but refers to them from pairs as "<id>"; Specter repairs
    # the references (PeerConnection.get_stats). A pair whose remote end is not listed
    # (learned from a check, or from a description) references a bare candidate id.
    local = Enum.find(candidates, &(&1["id"] == pair["localCandidateId"]))
    assert %{"address" => "127.0.0.1"} = local

    case Enum.find(candidates, &(&1["id"] == pair["remoteCandidateId"])) do
      nil -> assert String.starts_with?(pair["remoteCandidateId"], "candidate:")
      remote -> assert remote["address"] == "127.0.0.1"
    end
  end

  @doc "Host names Specter refused to resolve so far (runtime-wide)."
  def refused_resolutions do
    {:ok, %{refused_resolutions: n}} = Specter.runtime_info()
    n
  end

  @doc "The page neither threw nor crashed, and the driver did not fail."
  def page_healthy!(browser) do
    for %{"type" => type} = event <- Browser.diagnostics(browser) do
      assert type not in ["page_error", "page_crash", "fatal"], inspect(event)
    end
  end

  @doc "`TestSupport.eventually/3` polling every 100 ms (each poll may query the page)."
  def eventually(fun, wait \\ @wait), do: Specter.TestSupport.eventually(fun, wait, 100)
end
