defmodule Specter.Test.Cluster do
  @moduledoc """
  Extra BEAM nodes on loopback for distributed tests and benchmarks (OTP's `:peer`): the
  calling node is made alive (epmd started when missing), each peer gets this node's code
  paths and `:specter` configuration, and an agent process that holds what the test starts
  there (a `Specter.init/1` instance, rooms, participants), since functions defined in
  test files cannot run on another node.
  """

  @doc "Makes this node alive as `name@127.0.0.1` (longnames, loopback only)."
  @spec ensure_alive!(atom()) :: node()
  def ensure_alive!(name \\ :specter_test) do
    unless Node.alive?() do
      case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
        {_, 0} -> :ok
        _ -> {_, 0} = System.cmd("epmd", ["-daemon", "-address", "127.0.0.1"])
      end

      wait_epmd(50)
      {:ok, _} = Node.start(:"#{name}@127.0.0.1", :longnames)
    end

    node()
  end

  defp wait_epmd(0), do: :ok

  defp wait_epmd(n) do
    case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> Process.sleep(100) && wait_epmd(n - 1)
    end
  end

  @doc """
  Starts a peer node `name@127.0.0.1` linked to the caller, with this node's code and
  configuration and an agent (`agent/1`). Returns `{peer, node}`.
  """
  @spec start_peer!(atom()) :: {pid(), node()}
  def start_peer!(name) do
    ensure_alive!()
    cookie = Atom.to_charlist(Node.get_cookie())

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        args: [~c"-setcookie", cookie, ~c"-kernel", ~c"inet_dist_use_interface", ~c"{127,0,0,1}"]
      })

    :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])

    :ok =
      :erpc.call(node, Application, :put_all_env, [[specter: Application.get_all_env(:specter)]])

    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:logger])
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:specter])
    {:ok, _agent} = :erpc.call(node, __MODULE__.Agent, :start, [])
    {peer, node}
  end

  @doc "The OS pid of a node's VM."
  @spec os_pid(node()) :: String.t()
  def os_pid(node), do: :erpc.call(node, :os, :getpid, []) |> List.to_string()

  @doc "Kills a node's VM with SIGKILL: no goodbye on any socket or link."
  @spec kill!(node()) :: :ok
  def kill!(node) do
    pid = os_pid(node)
    {_, 0} = System.cmd("kill", ["-9", pid])
    :ok
  end

  defmodule Agent do
    @moduledoc false
    # Holds a Specter instance on its node and starts rooms and participants for callers on
    # other nodes (they stay linked to the agent, not to a short-lived :erpc process).
    use GenServer

    def start, do: GenServer.start(__MODULE__, [], name: __MODULE__)

    @doc "Runs `module.start_link([specter: specter] ++ opts)` on `node`, linked to its agent."
    def start_child(node, module, opts),
      do: GenServer.call({__MODULE__, node}, {:start, module, opts}, 15_000)

    @doc "Runs `module.function(specter, args...)` on `node` with the agent's instance."
    def apply(node, module, function, args),
      do: GenServer.call({__MODULE__, node}, {:apply, module, function, args}, 15_000)

    @impl true
    def init(_) do
      Process.flag(:trap_exit, true)
      {:ok, specter} = Specter.init()
      {:ok, %{specter: specter}}
    end

    @impl true
    def handle_info(_message, s), do: {:noreply, s}

    @impl true
    def handle_call({:start, module, opts}, _from, s) do
      {:reply, module.start_link([specter: s.specter] ++ opts), s}
    end

    def handle_call({:apply, m, f, args}, _from, s),
      do: {:reply, Kernel.apply(m, f, [s.specter | args]), s}
  end
end
