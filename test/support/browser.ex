defmodule Specter.Browser do
  @moduledoc false
  # A headless browser for interop tests: Debian's Chromium (`chromium`, driven by
  # Playwright) or Debian's Firefox ESR (`firefox-esr`, driven by Puppeteer over WebDriver
  # BiDi), chosen by `start_link(browser: :chromium | :firefox)` (default Chromium).
  #
  # A GenServer owns a Port to `node test/interop/js/driver.js` and speaks newline-delimited
  # JSON with it: `call/4` runs `window.specterTest.<fun>(...args)` in the page
  # (test/interop/js/page.js) and returns its result; events from the page (ICE candidates,
  # connection states, data channel open/message/closing/close) are sent to the listener
  # given to `open_page/2` as `{:browser, event}`, `event` being the decoded JSON map
  # (string keys), e.g. `%{"type" => "message", "label" => "chat", "kind" => "text", ...}`.
  #
  # The driver closes the browser when its stdin closes, so the browser goes away with this
  # process (or with the VM). Setup: `scripts/setup chromium firefox-esr` and `npm ci
  # --prefix test/interop/js` (`scripts/test` does both). `SPECTER_CHROMIUM` and
  # `SPECTER_FIREFOX` name other binaries; see test/interop/README.md for debugging switches.

  use GenServer

  import ExUnit.Assertions

  @js_dir Path.expand("../interop/js", __DIR__)
  @driver Path.join(@js_dir, "driver.js")
  @browsers %{
    chromium: %{
      name: "Chromium",
      env: "SPECTER_CHROMIUM",
      executable: "/usr/lib/chromium/chromium",
      package: "chromium",
      module: "playwright-core"
    },
    firefox: %{
      name: "Firefox",
      env: "SPECTER_FIREFOX",
      executable: "/usr/lib/firefox-esr/firefox-esr",
      package: "firefox-esr",
      module: "puppeteer-core"
    }
  }
  @launch_timeout 60_000
  @ready_timeout 45_000
  @quit_timeout 15_000

  ## API

  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, shutdown: @quit_timeout + 5_000}
  end

  @doc """
  Starts node, the driver and the browser; returns once the browser is up. Options:
  `browser: :chromium | :firefox` (default `:chromium`). Fails (the caller's test with it)
  when the browser cannot be launched.
  """
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, timeout: @launch_timeout)

  @doc "The browsers this module can drive."
  def browsers, do: Map.keys(@browsers)

  @doc "A browser's display name: `\"Chromium\"`, `\"Firefox\"`."
  def name(kind), do: Map.fetch!(@browsers, kind).name

  @doc "What is missing to run browser tests with `kind`, or `:ok`."
  def check_setup(kind \\ :chromium) do
    %{package: package, module: module} = Map.fetch!(@browsers, kind)

    cond do
      System.find_executable("node") == nil ->
        {:error, "node is not installed"}

      not File.exists?(executable(kind)) ->
        {:error, "#{executable(kind)} is missing (scripts/setup #{package})"}

      not File.dir?(Path.join(@js_dir, "node_modules/#{module}")) ->
        {:error, "#{module} is not installed in #{@js_dir} (npm ci --prefix test/interop/js)"}

      true ->
        :ok
    end
  end

  @doc """
  The browser's kind (`"chromium"`, `"firefox"`), version and the page's URL, as the driver
  reported them at start.
  """
  def info(browser), do: GenServer.call(browser, :info)

  @doc """
  Opens a fresh page (closing the previous one) served from 127.0.0.1 that holds camera and
  microphone permission (fake devices), and sends its events to `listener`.
  """
  def open_page(browser, listener \\ self()) do
    :ok = GenServer.call(browser, {:listen, listener})
    command(browser, %{cmd: "open_page"}, 20_000)
  end

  @doc """
  Opens a fresh page at `url` (only `http://127.0.0.1:<port>/...`) with camera and
  microphone permission for its origin, and sends its events to `listener`.
  """
  def open_url(browser, url, listener \\ self()) do
    :ok = GenServer.call(browser, {:listen, listener})
    command(browser, %{cmd: "open_url", url: url}, 20_000)
  end

  @doc "Runs an async JavaScript function body in the page: `{:ok, result} | {:error, message}`."
  def eval(browser, body, timeout \\ 10_000),
    do: command(browser, %{cmd: "eval", body: body}, timeout)

  @doc "As `eval/3`, raising on an error."
  def eval!(browser, body, timeout \\ 10_000) do
    case eval(browser, body, timeout) do
      {:ok, result} -> result
      {:error, message} -> raise "page: #{message}"
    end
  end

  @doc "Saves a screenshot of the whole page to `path` (a PNG)."
  def screenshot(browser, path), do: command(browser, %{cmd: "screenshot", path: path}, 20_000)

  @doc "Closes the page and every peer connection in it."
  def close_page(browser), do: command(browser, %{cmd: "close_page"}, 10_000)

  @doc "Calls `window.specterTest.<fun>(...args)` in the page: `{:ok, result} | {:error, message}`."
  def call(browser, fun, args \\ [], timeout \\ 10_000) do
    command(browser, %{cmd: "call", fn: fun, args: args}, timeout)
  end

  @doc "As `call/4`, raising on an error."
  def call!(browser, fun, args \\ [], timeout \\ 10_000) do
    case call(browser, fun, args, timeout) do
      {:ok, result} -> result
      {:error, message} -> raise "browser call #{fun}(#{inspect(args)}) failed: #{message}"
    end
  end

  @doc "The page's console errors and warnings, page errors and crashes seen so far."
  def diagnostics(browser), do: GenServer.call(browser, :diagnostics)

  @doc """
  True for an ICE candidate (`RTCIceCandidateInit` map or its `candidate` string) whose
  connection address is 127.0.0.1. Chromium and Firefox also gather candidates on the
  machine's other addresses and on ::1; only these may be given to Specter.
  """
  def loopback_candidate?(%{"candidate" => candidate}), do: loopback_candidate?(candidate)

  def loopback_candidate?("candidate:" <> _ = candidate) do
    case String.split(candidate, " ", trim: true) do
      [_foundation, _component, _protocol, _priority, "127.0.0.1", _port, "typ" | _] -> true
      _ -> false
    end
  end

  def loopback_candidate?(_), do: false

  @doc "A session description with every `a=candidate` line not on 127.0.0.1 removed."
  def loopback_only_sdp(%{"sdp" => sdp} = description) do
    lines =
      sdp
      |> String.split("\r\n")
      |> Enum.reject(fn
        "a=candidate:" <> _ = line -> not loopback_candidate?(String.trim_leading(line, "a="))
        _ -> false
      end)

    %{description | "sdp" => Enum.join(lines, "\r\n")}
  end

  defp command(browser, message, timeout) do
    GenServer.call(browser, {:command, message, timeout}, timeout + 1_000)
  end

  defp executable(kind) do
    %{env: env, executable: default} = Map.fetch!(@browsers, kind)
    System.get_env(env) || default
  end

  ## ICE between Specter and the page

  @doc """
  Trickles ICE both ways until both sides report `connected`. Specter's candidates (all on
  127.0.0.1) go to the browser, with its end-of-candidates; of the browser's, only those on
  127.0.0.1 go to Specter, and every one of them must be accepted (ExUnit assertions).
  """
  def relay_ice_until_connected!(specter, pc, browser, wait \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + wait
    acc = %{specter: false, browser: false, forwarded: 0, accepted: 0, dropped: []}
    acc = relay(specter, pc, browser, deadline, acc)

    # Every candidate given to Specter was accepted.
    acc = await_accepted(pc, deadline, acc)
    assert acc.forwarded >= 1, "the browser offered no 127.0.0.1 candidate"
    assert acc.accepted == acc.forwarded
    acc
  end

  defp relay(_specter, _pc, _browser, _deadline, %{specter: true, browser: true} = acc), do: acc

  defp relay(specter, pc, browser, deadline, acc) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:ice_candidate, ^pc, nil} ->
        assert call!(browser, "addIceCandidate", ["pc", nil])
        relay(specter, pc, browser, deadline, acc)

      {:ice_candidate, ^pc, json} ->
        candidate = decode_json!(json)
        assert loopback_candidate?(candidate), "Specter left loopback: #{json}"
        assert call!(browser, "addIceCandidate", ["pc", candidate])
        relay(specter, pc, browser, deadline, acc)

      {:browser, %{"type" => "ice_candidate", "pc" => "pc", "candidate" => candidate}} ->
        if loopback_candidate?(candidate) do
          :ok = Specter.PeerConnection.add_ice_candidate(specter, pc, candidate)
          relay(specter, pc, browser, deadline, %{acc | forwarded: acc.forwarded + 1})
        else
          # The browser's other addresses and its end-of-candidates (null, and Firefox's
          # "" per m-line) are not forwarded.
          relay(specter, pc, browser, deadline, %{acc | dropped: [candidate | acc.dropped]})
        end

      {:ok, ^pc, :add_ice_candidate} ->
        relay(specter, pc, browser, deadline, %{acc | accepted: acc.accepted + 1})

      {:add_ice_candidate_error, ^pc, reason} ->
        flunk("Specter refused a 127.0.0.1 candidate from the browser: #{inspect(reason)}")

      {:connection_state_change, ^pc, :connected} ->
        relay(specter, pc, browser, deadline, %{acc | specter: true})

      {:connection_state_change, ^pc, state} when state in [:failed, :closed] ->
        flunk("Specter's connection became #{state}")

      {:browser, %{"type" => "connection_state", "pc" => "pc", "state" => "connected"}} ->
        relay(specter, pc, browser, deadline, %{acc | browser: true})

      {:browser, %{"type" => "connection_state", "pc" => "pc", "state" => state}}
      when state in ["failed", "closed"] ->
        flunk("the browser's connection became #{state}")
    after
      remaining ->
        flunk("""
        not connected in time: #{inspect(Map.delete(acc, :dropped))}
        browser: #{inspect(diagnostics(browser))}
        """)
    end
  end

  defp await_accepted(_pc, _deadline, %{accepted: n, forwarded: n} = acc), do: acc

  defp await_accepted(pc, deadline, acc) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:ok, ^pc, :add_ice_candidate} ->
        await_accepted(pc, deadline, %{acc | accepted: acc.accepted + 1})

      {:add_ice_candidate_error, ^pc, reason} ->
        flunk("Specter refused a 127.0.0.1 candidate from the browser: #{inspect(reason)}")
    after
      remaining -> flunk("Specter did not answer add_ice_candidate: #{inspect(acc)}")
    end
  end

  @doc """
  Waits until both sides report `connected` when ICE travelled in the descriptions
  (non-trickle): nothing is relayed, and candidates either side still announces are ignored.
  """
  def await_connected!(pc, browser, wait \\ 10_000) do
    await_connected(pc, browser, System.monotonic_time(:millisecond) + wait, %{
      specter: false,
      browser: false
    })
  end

  defp await_connected(_pc, _browser, _deadline, %{specter: true, browser: true} = acc), do: acc

  defp await_connected(pc, browser, deadline, acc) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:connection_state_change, ^pc, :connected} ->
        await_connected(pc, browser, deadline, %{acc | specter: true})

      {:connection_state_change, ^pc, state} when state in [:failed, :closed] ->
        flunk("Specter's connection became #{state}")

      {:browser, %{"type" => "connection_state", "pc" => "pc", "state" => "connected"}} ->
        await_connected(pc, browser, deadline, %{acc | browser: true})

      {:browser, %{"type" => "connection_state", "pc" => "pc", "state" => state}}
      when state in ["failed", "closed"] ->
        flunk("the browser's connection became #{state}")
    after
      remaining ->
        flunk("""
        not connected in time (non-trickle): #{inspect(acc)}
        browser: #{inspect(diagnostics(browser))}
        """)
    end
  end

  @doc """
  The browser's local description once its ICE gathering is complete, with only its
  127.0.0.1 candidates (there must be one): what it sends when it does not trickle.
  """
  def gathered_description!(browser, wait \\ 10_000) do
    description =
      browser
      |> call!("gatheredDescription", ["pc", wait], wait + 1_000)
      |> loopback_only_sdp()

    assert description["sdp"] =~ ~r/^a=candidate:\S+ 1 UDP \d+ 127\.0\.0\.1 /mi,
           "no 127.0.0.1 candidate in the browser's description: #{description["sdp"]}"

    description
  end

  defp decode_json!(json) do
    {:ok, map} = Specter.JSON.decode(json)
    map
  end

  ## Server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    kind = Keyword.get(opts, :browser, :chromium)

    with :ok <- check_setup(kind),
         port = open_port(kind),
         {:ok, ready, buffer} <- await_ready(port, "") do
      {:ok,
       %{
         port: port,
         buffer: buffer,
         info: ready,
         next_id: 1,
         pending: %{},
         listener: nil,
         diagnostics: []
       }}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp open_port(kind) do
    env =
      for {k, %{env: var}} <- @browsers,
          do: {String.to_charlist(var), String.to_charlist(executable(k))}

    Port.open({:spawn_executable, System.find_executable("node")}, [
      :binary,
      :exit_status,
      :use_stdio,
      :hide,
      {:line, 65_536},
      {:args, [@driver]},
      {:cd, @js_dir},
      {:env, [{~c"SPECTER_BROWSER", Atom.to_charlist(kind)} | env]}
    ])
  end

  defp await_ready(port, buffer) do
    receive do
      {^port, {:data, {:noeol, chunk}}} ->
        await_ready(port, buffer <> chunk)

      {^port, {:data, {:eol, chunk}}} ->
        case Specter.JSON.decode(buffer <> chunk) do
          {:ok, %{"ready" => ready}} -> {:ok, ready, ""}
          {:ok, %{"fatal" => message}} -> {:error, {:driver_failed, message}}
          _ -> {:error, {:unexpected_driver_output, buffer <> chunk}}
        end

      {^port, {:exit_status, status}} ->
        {:error, {:driver_exited, status}}
    after
      @ready_timeout ->
        kill(port)
        {:error, :launch_timeout}
    end
  end

  @impl true
  def handle_call(:info, _from, state), do: {:reply, state.info, state}

  def handle_call(:diagnostics, _from, state),
    do: {:reply, Enum.reverse(state.diagnostics), state}

  def handle_call({:listen, pid}, _from, state), do: {:reply, :ok, %{state | listener: pid}}

  def handle_call({:command, message, timeout}, from, state) do
    id = state.next_id
    {:ok, line} = Specter.JSON.encode(Map.put(message, :id, id))
    true = Port.command(state.port, [line, ?\n])
    timer = Process.send_after(self(), {:command_timeout, id}, timeout)
    pending = Map.put(state.pending, id, {from, timer})
    {:noreply, %{state | next_id: id + 1, pending: pending}}
  end

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state),
    do: {:noreply, %{state | buffer: state.buffer <> chunk}}

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = state.buffer <> chunk
    state = %{state | buffer: ""}

    case Specter.JSON.decode(line) do
      {:ok, %{"id" => id} = reply} when is_integer(id) ->
        {:noreply, reply(state, id, reply)}

      {:ok, %{"event" => event}} ->
        {:noreply, event(state, event)}

      {:ok, %{"fatal" => message}} ->
        {:noreply, event(state, %{"type" => "fatal", "message" => message})}

      _ ->
        {:noreply, event(state, %{"type" => "driver_output", "line" => line})}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    for {_id, {from, timer}} <- state.pending do
      Process.cancel_timer(timer)
      GenServer.reply(from, {:error, {:driver_exited, status}})
    end

    if state.listener, do: send(state.listener, {:browser_down, status})
    {:stop, {:shutdown, {:driver_exited, status}}, %{state | port: nil, pending: %{}}}
  end

  def handle_info({:command_timeout, id}, state) do
    case Map.pop(state.pending, id) do
      {{from, _timer}, pending} ->
        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{state | pending: pending}}

      {nil, _} ->
        {:noreply, state}
    end
  end

  def handle_info({:EXIT, port, _reason}, %{port: port} = state), do: {:noreply, state}
  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}
  def handle_info(_other, state), do: {:noreply, state}

  defp reply(state, id, reply) do
    case Map.pop(state.pending, id) do
      {{from, timer}, pending} ->
        Process.cancel_timer(timer)

        result =
          case reply do
            %{"error" => message} -> {:error, message}
            %{"ok" => result} -> {:ok, result}
          end

        GenServer.reply(from, result)
        %{state | pending: pending}

      {nil, _} ->
        # Answered after its caller gave up.
        state
    end
  end

  defp event(state, %{"type" => type} = event)
       when type in ["console", "page_error", "page_crash", "fatal", "driver_output"] do
    forward(state, event)
    %{state | diagnostics: [event | state.diagnostics]}
  end

  defp event(state, event) do
    forward(state, event)
    state
  end

  defp forward(%{listener: nil}, _event), do: :ok
  defp forward(%{listener: pid}, event), do: send(pid, {:browser, event})

  @impl true
  def terminate(_reason, %{port: nil}), do: :ok

  def terminate(_reason, %{port: port}) do
    # On `quit` (or when its stdin closes) the driver closes Chromium, removes the profile
    # directory and exits; it is killed if it has not within @quit_timeout.
    {:ok, line} = Specter.JSON.encode(%{id: 0, cmd: "quit"})
    Port.command(port, [line, ?\n])
    await_exit(port, System.monotonic_time(:millisecond) + @quit_timeout)
  end

  defp await_exit(port, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:exit_status, _}} -> :ok
      {^port, {:data, _}} -> await_exit(port, deadline)
    after
      remaining -> kill(port)
    end
  end

  defp kill(port) do
    case Port.info(port, :os_pid) do
      {:os_pid, pid} -> System.cmd("kill", ["-KILL", Integer.to_string(pid)])
      _ -> :ok
    end

    catch_port_close(port)
  end

  defp catch_port_close(port) do
    Port.close(port)
  catch
    _, _ -> :ok
  end
end
