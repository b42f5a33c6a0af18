defmodule Mix.Tasks.Specter.Server do
  @shortdoc "Runs the libwebrtc-compatible signalling server"

  @moduledoc """
  Runs `Specter.Signalling.Server`, a signalling server wire-compatible with libwebrtc's
  `peerconnection_server`, until interrupted.

      mix specter.server [--port 8888] [--ip 127.0.0.1] [--member-timeout 30] [--max-body 65536]
                        [--echo [--echo-name echo]] [--room lobby]

    * `--port` - TCP port (8888)
    * `--ip` - address to bind (127.0.0.1; `0.0.0.0` to serve other machines)
    * `--member-timeout` - seconds a member may go without a pending `/wait` (30)
    * `--max-body` - largest message body in bytes (65536)
    * `--echo` - also sign in a `Specter.EchoPeer` (named by `--echo-name`, `echo`): open
      `http://127.0.0.1:8888/` in a browser, sign in, call `echo`, and see your camera come
      back and your chat echoed. The echo peer's connections stay on loopback unless `--ip`
      is another address.
    * `--room` - also start a `Specter.Room` of that name (signed in as `room:<name>`):
      open `http://127.0.0.1:8888/room` in two or more browser tabs and join it.
  """

  use Mix.Task

  @switches [
    port: :integer,
    ip: :string,
    member_timeout: :integer,
    max_body: :integer,
    echo: :boolean,
    echo_name: :string,
    room: :string
  ]

  @impl Mix.Task
  @spec run([String.t()]) :: :ok
  def run(args) do
    {opts, _rest, invalid} = OptionParser.parse(args, strict: @switches)
    if invalid != [], do: Mix.raise("Unknown or invalid options: #{inspect(invalid)}")

    port = Keyword.get(opts, :port, 8888)
    ip_text = Keyword.get(opts, :ip, "127.0.0.1")

    ip =
      case :inet.parse_address(String.to_charlist(ip_text)) do
        {:ok, ip} -> ip
        {:error, _} -> Mix.raise("--ip #{ip_text} is not an IP address")
      end

    Mix.Task.run("app.config")

    server_opts =
      [port: port, ip: ip, member_timeout: Keyword.get(opts, :member_timeout, 30) * 1_000] ++
        Keyword.take(opts, [:max_body])

    case Specter.Signalling.Server.start_link(server_opts) do
      {:ok, server} ->
        bound = Specter.Signalling.Server.port(server)
        Mix.shell().info("Signalling server listening on #{ip_text}:#{bound}")
        Mix.shell().info("Demo page: http://#{ip_text}:#{bound}/")
        if opts[:echo], do: start_echo(ip, ip_text, bound, Keyword.get(opts, :echo_name, "echo"))
        if opts[:room], do: start_room(ip, ip_text, bound, opts[:room])

        unless iex_running?(), do: Process.sleep(:infinity)
        :ok

      {:error, reason} ->
        Mix.raise(
          "Could not start the signalling server on #{ip_text}:#{port}: #{inspect(reason)}"
        )
    end
  end

  defp start_room(ip, ip_text, port, name) do
    {specter, client_ip} = instance(ip)

    case Specter.Room.start_link(specter: specter, ip: client_ip, port: port, name: name) do
      {:ok, _room} ->
        Mix.shell().info("Room #{inspect(name)} signed in; page: http://#{ip_text}:#{port}/room")

      {:error, reason} ->
        Mix.raise("Could not start the room: #{inspect(reason)}")
    end
  end

  # Connections stay on loopback when the server does.
  defp instance(ip) do
    Mix.Task.run("app.start")
    loopback? = ip in [{127, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1}]
    {:ok, specter} = Specter.init(if loopback?, do: [loopback_only: true], else: [])
    {specter, if(ip == {0, 0, 0, 0}, do: {127, 0, 0, 1}, else: ip)}
  end

  defp start_echo(ip, ip_text, port, name) do
    {specter, client_ip} = instance(ip)

    case Specter.EchoPeer.start_link(specter: specter, ip: client_ip, port: port, name: name) do
      {:ok, _echo} ->
        Mix.shell().info("Echo peer #{inspect(name)} signed in to #{ip_text}:#{port}")

      {:error, reason} ->
        Mix.raise("Could not start the echo peer: #{inspect(reason)}")
    end
  end

  defp iex_running?, do: Code.ensure_loaded?(IEx) and IEx.started?()
end
