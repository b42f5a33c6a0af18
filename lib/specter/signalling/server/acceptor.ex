defmodule Specter.Signalling.Server.Acceptor do
  @moduledoc """
  The listening socket of a `Specter.Signalling.Server` and its accept loop. Each accepted
  connection is handed to its own `Specter.Signalling.Server.Connection` process under the
  server's `Task.Supervisor`; past `:max_connections` a connection gets `503` and is closed.
  """

  use GenServer
  require Logger

  alias Specter.Signalling.HTTP
  alias Specter.Signalling.Server.Connection

  @doc false
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @doc "Opens the listening socket (errors such as `:eaddrinuse` fail the start)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The port the server listens on."
  @spec port(pid()) :: :inet.port_number()
  def port(acceptor), do: GenServer.call(acceptor, :port)

  @impl true
  def init(opts) do
    ip = Keyword.fetch!(opts, :ip)
    port = Keyword.fetch!(opts, :port)

    listen_opts = [
      :binary,
      ip: ip,
      active: false,
      reuseaddr: true,
      backlog: 1_024,
      nodelay: true,
      send_timeout: 5_000,
      send_timeout_close: true
    ]

    case :gen_tcp.listen(port, listen_opts) do
      {:ok, listen} ->
        {:ok, port} = :inet.port(listen)
        {:ok, %{listen: listen, port: port, opts: opts, loop: nil}, {:continue, :accept}}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_continue(:accept, state) do
    sup = Keyword.fetch!(state.opts, :supervisor)
    children = Supervisor.which_children(sup)
    {_, channel, _, _} = List.keyfind(children, Specter.Signalling.Server.Channel, 0)
    {_, tasks, _, _} = List.keyfind(children, :connections, 0)

    config = %{
      read_timeout: Keyword.get(state.opts, :read_timeout, 10_000),
      max_body: Keyword.get(state.opts, :max_body, 65_536)
    }

    listen = state.listen
    loop = spawn_link(fn -> accept_loop(listen, tasks, channel, config) end)
    {:noreply, %{state | loop: loop}}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  @impl true
  def terminate(_reason, state), do: :gen_tcp.close(state.listen)

  defp accept_loop(listen, tasks, channel, config) do
    case :gen_tcp.accept(listen) do
      {:ok, sock} ->
        hand_off(sock, tasks, channel, config)
        accept_loop(listen, tasks, channel, config)

      {:error, :closed} ->
        exit(:normal)

      {:error, reason} ->
        # Out of file descriptors and the like: wait a little, keep serving.
        Logger.warning("Specter.Signalling.Server accept failed: #{inspect(reason)}")
        Process.sleep(100)
        accept_loop(listen, tasks, channel, config)
    end
  end

  defp hand_off(sock, tasks, channel, config) do
    case Task.Supervisor.start_child(tasks, Connection, :run, [channel, config]) do
      {:ok, pid} ->
        case :gen_tcp.controlling_process(sock, pid) do
          :ok -> send(pid, {:socket, sock})
          {:error, _} -> :gen_tcp.close(sock)
        end

      {:error, _} ->
        _ =
          :gen_tcp.send(sock, HTTP.response("503 Service Unavailable", "text/plain", [], "Busy"))

        :gen_tcp.close(sock)
    end
  end
end
