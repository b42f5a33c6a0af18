defmodule Specter.Signalling.Server do
  @moduledoc """
  A signalling server speaking libwebrtc's `peerconnection_server` protocol over HTTP/1.x,
  on `:gen_tcp`: the native `peerconnection_client`, browser pages written for that server,
  and `Specter.Signalling.Client` can all use it.

  As a child of an application (port 0 picks a free port; `port/1` tells which):

      children = [{Specter.Signalling.Server, port: 8888, ip: {127, 0, 0, 1}, name: MyApp.Signalling}]

  From a shell: `mix specter.server --port 8888`.

      iex> {:ok, server} = Specter.Signalling.Server.start_link(port: 0)
      iex> port = Specter.Signalling.Server.port(server)
      iex> {:ok, {200, headers, body}} =
      ...>   Specter.Signalling.HTTP.request({127, 0, 0, 1}, port, "GET", "/sign_in?alice")
      iex> {headers["pragma"], body}
      {"1", "alice,1,1\\n"}
      iex> Specter.Signalling.Server.members(server)
      [{1, "alice"}]
      iex> Supervisor.stop(server)
      :ok

  ## Protocol

    * `GET /sign_in?<name>` → `200 Added`, `Pragma: <id>`, body `name,id,1` lines: the caller
      first, then every other member. Every other member is notified.
    * `GET /wait?peer_id=<id>` (long poll) → the next queued response: a message relayed from
      another member (`Pragma:` the sender's id, the sender's content type) or a membership
      notification `name,id,1|0` (`Pragma:` the receiver's own id). Responses queued while
      no wait is pending are delivered by the next waits, in order.
    * `POST /message?peer_id=<from>&to=<to>` → `200 OK` with an empty body; the body is
      queued for `to` with its content type. Sent to oneself, it comes back in the response.
    * `GET /sign_out?peer_id=<id>` → `200 OK`; every other member is notified (`name,id,0`).
    * `OPTIONS` anything (`OPTIONS *` too) → `200 OK`, no body, with the CORS headers
      (every response has them).
    * A member with no pending `/wait` for `:member_timeout` (30 s) is dropped and the others
      are notified. Names are the raw query string, cut to 512 bytes, commas replaced by `_`.
    * Every response has `Connection: close` and the connection closes after it, like the
      original. A `POST /message` whose `peer_id` or `to` is unknown gets `500 Error`
      ("Peer most likely gone."); a `/wait` or `/sign_out` whose `peer_id` is unknown or
      missing, and an unknown path, get `500 Sorry` (text/html), as the original answers
      any request it cannot attribute to a member. Other errors: see
      `Specter.Signalling.Server.Connection`.

  ## Extensions and differences (not in `peerconnection_server`)

    * `GET /`, `/demo.js`, `/room`, `/room.js` serve the browser demos (the original: `500 Sorry`).
    * A known path with the wrong method gets `405` with `Allow` (the original acts on the
      path whatever the method: a `GET /message` relays an empty message, a `POST /sign_in`
      signs in); an empty `POST /message` body gets `400` (the original: `500 Sorry`).
    * Limits answered with a status: `408`, `411`, `413`, `431`, `503` (queue full, too many
      connections); a request line that does not parse gets `400` and a method other than
      GET/POST/OPTIONS `500 Sorry` (the original leaves such a connection unanswered).
    * `Access-Control-Expose-Headers` also lists `Pragma`; `Server:` ends with `(Specter)`.
    * A response whose write to a waiter fails goes back to the front of the member's queue
      (the original drops it).
    * No `/quit` (in the original, any request for `/quit` stops the server).

  ## Options

    * `:port` - TCP port (8888; 0 for any free port)
    * `:ip` - address to bind (`{127, 0, 0, 1}`)
    * `:name` - registers the server's supervisor
    * `:member_timeout` - ms a member may go without a pending `/wait` (30 000)
    * `:read_timeout` - ms a client has to send a complete request (10 000)
    * `:max_body` - largest message body in bytes (65 536; larger gets `413`)
    * `:max_queue` - messages queued per member before senders get `503` (1 000)
    * `:max_connections` - simultaneous connections (8 192; more get `503`)
  """

  use Supervisor

  alias Specter.Signalling.Server.{Acceptor, Channel}

  # The timeouts and limits are positive integers.
  @limits [:member_timeout, :read_timeout, :max_body, :max_queue, :max_connections]
  @schema [port: [type: {:in, 0..65_535}], ip: [type: :ip_address], name: [type: :name]] ++
            for(key <- @limits, do: {key, [type: :pos_integer]})

  @doc """
  Starts the server; see the module documentation for the options (their errors follow
  `Specter.Options`). A port already in use gives `{:error, :eaddrinuse}`.
  """
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []) do
    with {:ok, opts} <- Specter.Options.validate(opts, @schema) do
      result =
        case Keyword.fetch(opts, :name) do
          {:ok, name} -> Supervisor.start_link(__MODULE__, opts, name: name)
          :error -> Supervisor.start_link(__MODULE__, opts)
        end

      case result do
        {:error, {:shutdown, {:failed_to_start_child, Acceptor, reason}}} -> {:error, reason}
        other -> other
      end
    end
  end

  @doc """
  The TCP port the server listens on (useful after starting with `port: 0`).
  """
  @spec port(Supervisor.supervisor()) :: :inet.port_number()
  def port(server), do: server |> child(Acceptor) |> Acceptor.port()

  @doc "The members signed in now, as `{id, name}` in sign-in order."
  @spec members(Supervisor.supervisor()) :: [{pos_integer(), String.t()}]
  def members(server), do: server |> child(Channel) |> Channel.members()

  @impl true
  def init(opts) do
    opts =
      opts
      |> Keyword.put_new(:port, 8888)
      |> Keyword.put_new(:ip, {127, 0, 0, 1})
      |> Keyword.put(:supervisor, self())

    children = [
      {Channel, opts},
      %{
        id: :connections,
        start:
          {Task.Supervisor, :start_link,
           [[max_children: Keyword.get(opts, :max_connections, 8_192)]]},
        type: :supervisor
      },
      {Acceptor, opts}
    ]

    Supervisor.init(children, strategy: :one_for_all, max_restarts: 10, max_seconds: 10)
  end

  defp child(server, id) do
    {_, pid, _, _} = server |> Supervisor.which_children() |> List.keyfind(id, 0)
    pid
  end
end
