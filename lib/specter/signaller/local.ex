defmodule Specter.Signaller.Local do
  @moduledoc """
  A `Specter.Signaller` inside one VM: a `Registry` of peer ids, and plain Erlang messages
  between the sessions registered in it. For tests, demos and rooms that live in one node.

      iex> {:ok, _} = Specter.Signaller.Local.start_link(name: :doc_signaller)
      iex> {:ok, _registry} = Specter.Signaller.Local.register(:doc_signaller, "alice", self())
      iex> Specter.Signaller.Local.register(:doc_signaller, "alice", self())
      {:error, :already_registered}
      iex> Specter.Signaller.Local.peers(:doc_signaller)
      ["alice"]
      iex> Specter.Signaller.Local.send_signal(:doc_signaller, "bob", "alice", {:control, :init, nil})
      :ok
      iex> assert_received {:specter_signal, "bob", {:control, :init, nil}}
      iex> Specter.Signaller.Local.send_signal(:doc_signaller, "alice", "carol", {:control, :init, nil})
      {:error, :unknown_peer}

  As a child: `{Specter.Signaller.Local, name: MyApp.Signaller}`; sessions then use
  `signaller: {Specter.Signaller.Local, MyApp.Signaller}`.
  """

  @behaviour Specter.Signaller

  @doc "A child spec for the registry (`name:` required)."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc """
  Starts the signaller's registry under `name:` (an atom, required; errors follow
  `Specter.Options`).

      iex> {:ok, pid} = Specter.Signaller.Local.start_link(name: :doc_signaller_start)
      iex> Process.whereis(:doc_signaller_start) == pid
      true
      iex> Specter.Signaller.Local.start_link([])
      {:error, {:missing_option, :name}}
  """
  @spec start_link(keyword()) :: {:ok, pid()} | {:error, term()}
  def start_link(opts) do
    with {:ok, opts} <- Specter.Options.validate(opts, name: [type: :atom, required: true]),
         do: Registry.start_link(keys: :unique, name: opts[:name])
  end

  @doc """
  Registers the calling process (`pid` must be `self()`) under `peer_id`; returns the
  registry's pid, for the caller to monitor.

      iex> Specter.Signaller.Local.register(:no_such_signaller, "alice", self())
      {:error, :signaller_down}
  """
  @impl true
  @spec register(atom(), Specter.Signaller.peer_id(), pid()) :: {:ok, pid()} | {:error, term()}
  def register(name, peer_id, pid) when is_binary(peer_id) and pid == self() do
    case Process.whereis(name) do
      nil ->
        {:error, :signaller_down}

      registry ->
        case Registry.register(name, peer_id, nil) do
          {:ok, _} -> {:ok, registry}
          {:error, {:already_registered, _}} -> {:error, :already_registered}
        end
    end
  catch
    :error, _ -> {:error, :signaller_down}
  end

  def register(_name, peer_id, _pid) when not is_binary(peer_id),
    do: {:error, {:invalid_argument, :peer_id}}

  def register(_name, _peer_id, _pid), do: {:error, {:invalid_argument, :pid}}

  @doc """
  Delivers `message` to the process registered as `to`, as
  `{:specter_signal, from, message}`.

      iex> Specter.Signaller.Local.send_signal(:no_such_signaller, "a", "b", {:control, :init, nil})
      {:error, :signaller_down}
  """
  @impl true
  @spec send_signal(atom(), Specter.Signaller.peer_id(), Specter.Signaller.peer_id(), term()) ::
          :ok | {:error, term()}
  def send_signal(name, from, to, message) do
    case Registry.lookup(name, to) do
      [{pid, _}] ->
        send(pid, {:specter_signal, from, message})
        :ok

      [] ->
        {:error, :unknown_peer}
    end
  rescue
    ArgumentError -> {:error, :signaller_down}
  end

  @doc """
  Releases `peer_id` (registered by the calling process).

      iex> Specter.Signaller.Local.unregister(:no_such_signaller, "alice")
      :ok
  """
  @impl true
  @spec unregister(atom(), Specter.Signaller.peer_id()) :: :ok
  def unregister(name, peer_id) do
    Registry.unregister(name, peer_id)
  rescue
    ArgumentError -> :ok
  end

  @doc """
  The peer ids registered now, sorted.

      iex> Specter.Signaller.Local.peers(:no_such_signaller)
      []
  """
  @spec peers(atom()) :: [Specter.Signaller.peer_id()]
  def peers(name) do
    name |> Registry.select([{{:"$1", :_, :_}, [], [:"$1"]}]) |> Enum.sort()
  rescue
    ArgumentError -> []
  end
end
