defmodule Specter.EchoPeer do
  @moduledoc """
  A peer that answers every call and sends everything back: the caller's audio and video
  (forwarded natively, `Specter.TrackRemote.forward/3`, into the session's own RTP tracks)
  and its data-channel messages (text comes back as `"echo: " <> text`, binary as is).
  One call at a time; a second caller is rejected as busy.

  It signs in to a signalling server (`Specter.Signalling.Client`) under a name, so a
  browser page (the server's own `/`) or a libwebrtc client can call it:

      mix specter.server --echo          # the server on 127.0.0.1:8888 plus a peer "echo"

  In an application or a test:

      {:ok, echo} = Specter.EchoPeer.start_link(specter: specter, port: port, name: "echo")

  The peer's own events (`{:specter_session, session, event}` of its `Specter.Session`)
  are forwarded to `:subscriber` when given.
  """

  use GenServer

  alias Specter.{Session, TrackRemote}
  alias Specter.Signalling.Client

  @schema [
    specter: [type: {:struct, Specter}, required: true],
    port: [type: {:in, 1..65_535}],
    ip: [type: :host],
    name: [type: :string, default: "echo"],
    subscriber: [type: {:or, [nil, :pid]}]
  ]

  @doc """
  Starts the echo peer. Options: `:specter` (required), `:port` and `:ip` of the signalling
  server (8888, `{127, 0, 0, 1}`), `:name` to sign in with (`"echo"`), `:subscriber`.
  Errors follow `Specter.Options`.

      iex> Specter.EchoPeer.start_link(port: 1)
      {:error, {:missing_option, :specter}}
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    with {:ok, opts} <- Specter.Options.validate(opts, @schema),
         do: GenServer.start_link(__MODULE__, opts)
  end

  @doc """
  The peer's session (a `Specter.Session`).

      iex> {:ok, server} = Specter.Signalling.Server.start_link(port: 0)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, echo} = Specter.EchoPeer.start_link(specter: specter, port: Specter.Signalling.Server.port(server))
      iex> Specter.Session.state(Specter.EchoPeer.session(echo))
      :idle
  """
  @spec session(GenServer.server()) :: pid()
  def session(echo), do: GenServer.call(echo, :session)

  @doc """
  Calls answered so far, and what was echoed in them.

      iex> {:ok, server} = Specter.Signalling.Server.start_link(port: 0)
      iex> {:ok, specter} = Specter.init()
      iex> {:ok, echo} = Specter.EchoPeer.start_link(specter: specter, port: Specter.Signalling.Server.port(server))
      iex> Specter.EchoPeer.stats(echo)
      %{calls: 0, messages: 0, tracks: 0}
  """
  @spec stats(GenServer.server()) :: %{
          calls: non_neg_integer(),
          messages: non_neg_integer(),
          tracks: non_neg_integer()
        }
  def stats(echo), do: GenServer.call(echo, :stats)

  @impl true
  def init(opts) do
    specter = opts[:specter]
    name = opts[:name]

    with {:ok, client} <-
           Client.start_link([peer_name: name] ++ Keyword.take(opts, [:port, :ip])),
         {:ok, _id} <- Client.await_signed_in(client, 5_000),
         {:ok, session} <-
           Session.start_link(
             specter: specter,
             signaller: {Client, client},
             peer_id: name,
             audio: :sendrecv,
             video: :sendrecv,
             local_tracks: :rtp,
             subscriber: self()
           ) do
      {:ok,
       %{
         specter: specter,
         client: client,
         session: session,
         subscriber: opts[:subscriber],
         stats: %{calls: 0, messages: 0, tracks: 0}
       }}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:session, _from, s), do: {:reply, s.session, s}
  def handle_call(:stats, _from, s), do: {:reply, s.stats, s}

  @impl true
  def handle_info({:specter_session, session, event} = message, %{session: session} = s) do
    if s.subscriber, do: send(s.subscriber, message)
    {:noreply, on_event(event, s)}
  end

  # The client's own events (sign-in, peer list).
  def handle_info({:specter_signalling, _client, _event}, s), do: {:noreply, s}
  def handle_info(_message, s), do: {:noreply, s}

  defp on_event({:incoming_call, _peer}, s) do
    case Session.accept(s.session) do
      :ok -> update_in(s.stats.calls, &(&1 + 1))
      {:error, _} -> s
    end
  end

  defp on_event({:track, track, %{kind: kind}}, s) when kind in [:audio, :video] do
    local = Session.media(s.session)[kind]

    case local && TrackRemote.forward(s.specter, track, local) do
      :ok -> update_in(s.stats.tracks, &(&1 + 1))
      _ -> s
    end
  end

  defp on_event({:data, message}, s) do
    reply =
      case message do
        {:text, text} -> {:text, "echo: " <> text}
        {:binary, data} -> {:binary, data}
      end

    case Session.send_data(s.session, reply) do
      :ok -> update_in(s.stats.messages, &(&1 + 1))
      {:error, _} -> s
    end
  end

  defp on_event(_event, s), do: s
end
