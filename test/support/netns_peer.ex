defmodule Specter.Test.NetnsPeer do
  @moduledoc false
  # A second BEAM, running Specter, inside a network namespace of its own joined to the
  # test VM's namespace by a veth pair: the far end of the network-fault tests.
  #
  #     test VM's netns (scripts/test: `unshare --net`)      netns "specter_nf_<os pid>"
  #       lo 127.0.0.1   <- the local peer (loopback_only)
  #       nf0 10.77.0.1  ------------- veth -------------    nf1 10.77.0.2 <- the far peer
  #
  # The far VM is started with OTP's `:peer` through `ip netns exec`, controlled over its
  # standard input/output (no distribution, so no epmd and no TCP between the VMs), and gets
  # the test VM's code path. In it, `Agent` (a registered GenServer) owns a Specter instance
  # bound to 10.77.0.2 and everything created on it, keeps every message it receives in a
  # queue, and answers the test's calls: `run/4` (a Specter function with the instance
  # prepended, called in the agent so that replies and events come to it), `await/3` and
  # `take/2` (queued messages matching an `:ets` match-spec head such as `{:offer, pc, :_}`),
  # and `start_job/3` (a sender loop running in the far VM: a data channel sequence or an RTP
  # stream that answers PLIs with keyframes).
  #
  # Requirements, checked by `check/0`: Linux, root, `ip`, and a network namespace that holds
  # nothing but loopback (so the veth pair and its addresses never touch the machine's real
  # interfaces). The far namespace has no route but its /24, so the far peer cannot reach
  # anything but the relay either.

  @local_ip "10.77.0.1"
  @remote_ip "10.77.0.2"
  @local_if "nf0"
  @remote_if "nf1"

  def local_ip, do: {10, 77, 0, 1}
  def remote_ip, do: {10, 77, 0, 2}

  @doc "`:ok` when namespaces can be made here, else `{:error, why}`."
  def check do
    with :ok <- check(match?({:unix, :linux}, :os.type()), "not Linux"),
         {:ok, ip} <- ip_cmd(),
         :ok <- check(euid() == 0, "not root (creating network namespaces needs CAP_SYS_ADMIN)"),
         :ok <- isolated(),
         :ok <- probe(ip) do
      :ok
    end
  end

  defp check(true, _why), do: :ok
  defp check(false, why), do: {:error, why}

  defp ip_cmd do
    case System.find_executable("ip") || Enum.find(["/usr/sbin/ip", "/sbin/ip"], &File.exists?/1) do
      nil -> {:error, "no `ip` command (iproute2)"}
      ip -> {:ok, ip}
    end
  end

  defp euid do
    case System.cmd("id", ["-u"], stderr_to_stdout: true) do
      {out, 0} -> out |> String.trim() |> String.to_integer()
      _ -> -1
    end
  rescue
    _ -> -1
  end

  # Only loopback here: we are in a namespace of our own (scripts/test's `unshare --net`),
  # so the veth pair we add cannot touch or shadow a real interface.
  defp isolated do
    {:ok, ifs} = :inet.getifaddrs()

    case for({name, _} <- ifs, name != ~c"lo", do: List.to_string(name)) do
      [] ->
        :ok

      others ->
        {:error,
         "this VM's network namespace has interfaces besides lo (#{Enum.join(others, ", ")}); " <>
           "run the suite through scripts/test, which gives it a namespace of its own"}
    end
  end

  defp probe(ip) do
    name = "specter_probe_#{System.pid()}"

    case System.cmd(ip, ["netns", "add", name], stderr_to_stdout: true) do
      {_, 0} ->
        System.cmd(ip, ["netns", "del", name], stderr_to_stdout: true)
        :ok

      {out, _} ->
        {:error, "`ip netns add` is not permitted here: #{String.trim(out)}"}
    end
  end

  @doc """
  Creates the namespace and the veth pair and starts the far VM with a Specter instance
  (`specter_opts`, plus `bind_addresses: ["10.77.0.2"]`). Returns a context map.
  """
  def start(specter_opts) do
    {:ok, ip} = ip_cmd()
    ns = "specter_nf_#{System.pid()}"
    ctx = %{ip: ip, ns: ns, peer: nil}

    try do
      # A namespace left by a crashed run of the same OS pid.
      System.cmd(ip, ["netns", "del", ns], stderr_to_stdout: true)
      System.cmd(ip, ["link", "del", @local_if], stderr_to_stdout: true)

      ip!(ip, ["netns", "add", ns])
      ip!(ip, ["link", "add", @local_if, "type", "veth", "peer", "name", @remote_if])
      ip!(ip, ["link", "set", @remote_if, "netns", ns])
      ip!(ip, ["addr", "add", @local_ip <> "/24", "dev", @local_if])
      ip!(ip, ["link", "set", @local_if, "up"])
      ip!(ip, ["-n", ns, "addr", "add", @remote_ip <> "/24", "dev", @remote_if])
      ip!(ip, ["-n", ns, "link", "set", @remote_if, "up"])
      ip!(ip, ["-n", ns, "link", "set", "lo", "up"])

      erl = :os.find_executable(~c"erl")

      {:ok, peer, _node} =
        :peer.start_link(%{
          exec: {String.to_charlist(ip), [~c"netns", ~c"exec", String.to_charlist(ns), erl]},
          connection: :standard_io,
          wait_boot: 15_000
        })

      ctx = %{ctx | peer: peer}
      :ok = :peer.call(peer, :code, :add_paths, [:code.get_path()])
      {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:specter])
      opts = Keyword.put(specter_opts, :bind_addresses, [@remote_ip])
      :ok = :peer.call(peer, __MODULE__.Agent, :start, [opts])
      {:ok, ctx}
    rescue
      e ->
        stop(ctx)
        reraise e, __STACKTRACE__
    end
  end

  @doc "Stops the far VM and removes the namespace and the veth pair."
  def stop(%{ip: ip, ns: ns, peer: peer}) do
    if peer do
      try do
        :peer.stop(peer)
      catch
        _, _ -> :ok
      end
    end

    System.cmd(ip, ["netns", "del", ns], stderr_to_stdout: true)
    System.cmd(ip, ["link", "del", @local_if], stderr_to_stdout: true)
    :ok
  end

  defp ip!(ip, args) do
    case System.cmd(ip, args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, status} -> raise "ip #{Enum.join(args, " ")} exited #{status}: #{out}"
    end
  end

  ## Calls into the far VM (the first argument is the context or the `:peer` pid)

  defp peer(%{peer: peer}), do: peer
  defp peer(peer) when is_pid(peer), do: peer

  @doc "`apply(module, fun, [specter | args])` in the far agent."
  def run(ctx, module, fun, args),
    do: :peer.call(peer(ctx), __MODULE__.Agent, :run, [module, fun, args], 15_000)

  @doc "The first queued message matching `head` (removed), waiting up to `timeout` ms."
  def await(ctx, head, timeout \\ 5_000) do
    :peer.call(peer(ctx), __MODULE__.Agent, :await, [head, timeout], timeout + 5_000)
  end

  @doc "Every queued message matching one of `heads` (removed); waits up to `timeout` for one."
  def take(ctx, heads, timeout \\ 0) do
    :peer.call(peer(ctx), __MODULE__.Agent, :take, [List.wrap(heads), timeout], timeout + 5_000)
  end

  @doc "Closes every connection created in the far VM so far and empties its queue."
  def close_all(ctx), do: :peer.call(peer(ctx), __MODULE__.Agent, :close_all, [])

  @doc "Starts a job in the far VM; its result arrives as `{:job_done, id, result}`."
  def start_job(ctx, id, job), do: :peer.call(peer(ctx), __MODULE__.Agent, :start_job, [id, job])

  @doc "Asks a job to finish early (it then reports as usual)."
  def stop_job(ctx, id), do: :peer.call(peer(ctx), __MODULE__.Agent, :stop_job, [id])

  ## A pair of connections across the link: `a` in this VM, `b` in the far one
  #
  # `ctx` holds `specter` (this VM's instance), `far` (the context of `start/1`) and `link`
  # (a `Specter.Test.ImpairedLink` with side `:a` on 127.0.0.1 and `:b` on 10.77.0.1).

  import ExUnit.Assertions

  alias Specter.PeerConnection
  alias Specter.Test.ImpairedLink

  defp far_run(ctx, fun, args), do: run(ctx.far, PeerConnection, fun, args)

  @doc "A connection here and one in the far VM, both ready."
  def new_pair(ctx) do
    {:ok, a} = PeerConnection.new(ctx.specter, PeerConnection.default_api!(ctx.specter))
    assert_receive {:peer_connection_ready, ^a}, 5_000
    api = far_run(ctx, :default_api!, [])
    {:ok, b} = far_run(ctx, :new, [api])
    {:ok, _} = await(ctx.far, {:peer_connection_ready, b}, 5_000)
    {a, b}
  end

  @doc """
  Offer from `a`, answer from `b` (their candidates rewritten to name the link's proxies),
  then trickle ICE, rewritten too, until both are connected. Returns the time it took, ms.
  `:before_answer` (a function) runs once `b` has the offer, before it answers (e.g. to add
  a track to the transceiver the offer created). `:on_state` is called with `{side, :ice | :connection, state}` for each change seen.
  """
  def connect!(ctx, a, b, offer_opts \\ [], opts \\ []) do
    t0 = System.monotonic_time(:millisecond)
    s = ctx.specter
    :ok = PeerConnection.create_offer(s, a, offer_opts)
    assert_receive {:offer, ^a, offer}, 5_000
    :ok = PeerConnection.set_local_description(s, a, offer)
    assert_receive {:ok, ^a, :set_local_description}, 5_000

    :ok =
      far_run(ctx, :set_remote_description, [b, ImpairedLink.rewrite_sdp(ctx.link, :a, offer)])

    {:ok, _} = await(ctx.far, {:ok, b, :set_remote_description}, 5_000)
    Keyword.get(opts, :before_answer, fn -> :ok end).()
    :ok = far_run(ctx, :create_answer, [b])
    {:ok, {:answer, ^b, answer}} = await(ctx.far, {:answer, b, :_}, 5_000)
    :ok = far_run(ctx, :set_local_description, [b, answer])
    {:ok, _} = await(ctx.far, {:ok, b, :set_local_description}, 5_000)
    answer = ImpairedLink.rewrite_sdp(ctx.link, :b, answer)
    :ok = PeerConnection.set_remote_description(s, a, answer)
    assert_receive {:ok, ^a, :set_remote_description}, 5_000
    on_state = Keyword.get(opts, :on_state, fn _ -> :ok end)
    deadline = t0 + Keyword.get(opts, :timeout, 15_000)
    trickle_until_connected(ctx, a, b, %{a: nil, b: nil}, on_state, deadline)
    System.monotonic_time(:millisecond) - t0
  end

  defp trickle_until_connected(_ctx, _a, _b, %{a: :connected, b: :connected}, _on, _deadline),
    do: :ok

  defp trickle_until_connected(ctx, a, b, states, on_state, deadline) do
    if System.monotonic_time(:millisecond) > deadline,
      do: flunk("not connected through the link: #{inspect(states)}")

    states =
      receive do
        {:ice_candidate, ^a, candidate} when candidate != nil ->
          with {:ok, c} <- ImpairedLink.rewrite_candidate(ctx.link, :a, candidate) do
            :ok = far_run(ctx, :add_ice_candidate, [b, c])
          end

          states

        {:connection_state_change, ^a, state} ->
          on_state.({:a, :connection, state})
          %{states | a: state}

        {:ice_connection_state_change, ^a, state} ->
          on_state.({:a, :ice, state})
          states
      after
        0 -> states
      end

    heads = [
      {:ice_candidate, b, :_},
      {:connection_state_change, b, :_},
      {:ice_connection_state_change, b, :_}
    ]

    states =
      ctx.far
      |> take(heads, 10)
      |> Enum.reduce(states, fn
        {:ice_candidate, _, nil}, states ->
          states

        {:ice_candidate, _, candidate}, states ->
          with {:ok, c} <- ImpairedLink.rewrite_candidate(ctx.link, :b, candidate) do
            :ok = PeerConnection.add_ice_candidate(ctx.specter, a, c)
          end

          states

        {:connection_state_change, _, state}, states ->
          on_state.({:b, :connection, state})
          %{states | b: state}

        {:ice_connection_state_change, _, state}, states ->
          on_state.({:b, :ice, state})
          states
      end)

    trickle_until_connected(ctx, a, b, states, on_state, deadline)
  end

  defmodule Agent do
    @moduledoc false
    # Runs in the far VM. See Specter.Test.NetnsPeer.
    use GenServer

    @name :specter_netns_agent

    def start(specter_opts) do
      {:ok, _} = GenServer.start(__MODULE__, specter_opts, name: @name)
      :ok
    end

    def run(m, f, args), do: GenServer.call(@name, {:run, m, f, args}, 14_000)

    def await(head, timeout) do
      case take([head], timeout) do
        [] -> {:error, :timeout}
        [first | _] -> {:ok, first}
      end
    end

    def take(heads, timeout), do: GenServer.call(@name, {:take, heads, timeout}, timeout + 4_000)

    def start_job(id, job), do: GenServer.call(@name, {:start_job, id, job})

    def stop_job(id), do: GenServer.call(@name, {:stop_job, id})

    def close_all, do: GenServer.call(@name, :close_all)

    @impl true
    def init(opts) do
      {:ok, specter} = Specter.init(opts)
      {:ok, %{specter: specter, queue: [], waiter: nil, jobs: %{}, pcs: []}}
    end

    @impl true
    def handle_call({:run, m, f, args}, _from, st) do
      case apply(m, f, [st.specter | args]) do
        {:ok, pc} = result when m == Specter.PeerConnection and f == :new ->
          {:reply, result, %{st | pcs: [pc | st.pcs]}}

        result ->
          {:reply, result, st}
      end
    end

    def handle_call(:close_all, _from, st) do
      for pc <- st.pcs, do: Specter.PeerConnection.close(st.specter, pc)
      for {_id, pid} <- st.jobs, do: Process.exit(pid, :kill)
      {:reply, :ok, %{st | pcs: [], jobs: %{}, queue: []}}
    end

    def handle_call({:take, heads, timeout}, from, st) do
      ms = :ets.match_spec_compile(for head <- heads, do: {head, [], [:"$_"]})

      case split(st.queue, ms) do
        {[], _} when timeout > 0 ->
          timer = Process.send_after(self(), :waiter_timeout, timeout)
          {:noreply, %{st | waiter: {from, ms, timer}}}

        {taken, rest} ->
          {:reply, taken, %{st | queue: rest}}
      end
    end

    def handle_call({:start_job, id, job}, _from, st) do
      agent = self()
      specter = st.specter

      pid =
        spawn(fn ->
          send(agent, {:job_done, id, Specter.Test.NetnsPeer.Jobs.run(specter, job)})
        end)

      {:reply, :ok, %{st | jobs: Map.put(st.jobs, id, pid)}}
    end

    def handle_call({:stop_job, id}, _from, st) do
      if pid = st.jobs[id], do: send(pid, :stop)
      {:reply, :ok, st}
    end

    @impl true
    def handle_info(:waiter_timeout, %{waiter: {from, _, _}} = st) do
      GenServer.reply(from, [])
      {:noreply, %{st | waiter: nil}}
    end

    def handle_info(:waiter_timeout, st), do: {:noreply, st}

    def handle_info(msg, st) do
      # Jobs watch their sender's RTCP (PLIs): give them a copy.
      with {:sender_rtcp, _sender, _} <- msg do
        for {_id, pid} <- st.jobs, do: send(pid, msg)
      end

      st = %{st | queue: st.queue ++ [msg]}

      case st.waiter do
        {from, ms, timer} ->
          case split(st.queue, ms) do
            {[], _} ->
              {:noreply, st}

            {taken, rest} ->
              Process.cancel_timer(timer)
              GenServer.reply(from, taken)
              {:noreply, %{st | queue: rest, waiter: nil}}
          end

        nil ->
          {:noreply, st}
      end
    end

    defp split(queue, ms) do
      Enum.split_with(queue, &(:ets.match_spec_run([&1], ms) != []))
    end
  end

  defmodule Jobs do
    @moduledoc false
    # Sender loops that run in the far VM (started by Agent.start_job/2).

    alias Specter.{DataChannel, TrackLocalStaticRTP}

    @doc "Message `seq` of a sequence: 4-byte sequence number, then bytes derived from it."
    def message(seq, size) do
      body = :binary.copy(<<seq::32>>, div(size - 4, 4) + 1)
      <<seq::32, binary_part(body, 0, size - 4)::binary>>
    end

    def run(specter, {:send_sequence, dc, count, size, interval_ms}) do
      t0 = System.monotonic_time(:millisecond)

      sent =
        Enum.reduce_while(0..(count - 1), 0, fn seq, sent ->
          if stop?() do
            {:halt, sent}
          else
            :ok = send_retrying(specter, dc, message(seq, size))
            if interval_ms > 0, do: Process.sleep(interval_ms)
            {:cont, sent + 1}
          end
        end)

      %{sent: sent, send_ms: System.monotonic_time(:millisecond) - t0}
    end

    # An RTP stream of one packet per frame (VP8 payload descriptor + frame tag), the first
    # frame and the first frame after each PLI a keyframe.
    def run(specter, {:rtp_stream, track, count, interval_ms}) do
      loop(specter, track, 0, count, interval_ms, %{keyframes: [0], plis: 0, pli_pending: false})
    end

    defp loop(_specter, _track, seq, count, _interval, acc) when seq >= count,
      do: %{sent: seq, keyframes: Enum.reverse(acc.keyframes), plis: acc.plis}

    defp loop(specter, track, seq, count, interval, acc) do
      acc = drain_rtcp(acc)

      if stop?() do
        loop(specter, track, count, count, interval, %{acc | keyframes: acc.keyframes})
      else
        key? = seq == 0 or acc.pli_pending
        :ok = TrackLocalStaticRTP.write_rtp(specter, track, rtp(seq, key?))
        acc = if key? and seq > 0, do: %{acc | keyframes: [seq | acc.keyframes]}, else: acc
        Process.sleep(interval)
        loop(specter, track, seq + 1, count, interval, %{acc | pli_pending: false})
      end
    end

    defp drain_rtcp(acc) do
      receive do
        {:sender_rtcp, _sender, packets} ->
          n = Enum.count(packets, &(&1.type in [:pli, :fir]))
          drain_rtcp(%{acc | plis: acc.plis + n, pli_pending: acc.pli_pending or n > 0})
      after
        0 -> acc
      end
    end

    @doc "A VP8-looking RTP packet: keyframes carry the start code and a 320x240 size."
    def rtp(seq, key?) do
      frame =
        if key?,
          do: <<0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 320::little-16, 240::little-16>>,
          else: <<0x11, 0x02, 0x00>>

      payload = <<0x10, frame::binary, :binary.copy(<<seq::16>>, 300)::binary>>

      %Specter.RTP{
        payload_type: 96,
        sequence_number: seq,
        timestamp: seq * 3000,
        ssrc: 0x5EC7E4,
        marker: true,
        payload: payload
      }
      |> Specter.RTP.encode()
    end

    defp send_retrying(specter, dc, data) do
      case DataChannel.send(specter, dc, data) do
        {:error, :buffer_full} ->
          Process.sleep(10)
          send_retrying(specter, dc, data)

        other ->
          other
      end
    end

    defp stop? do
      receive do
        :stop -> true
      after
        0 -> false
      end
    end
  end
end
