defmodule Specter.Room.Participant do
  @moduledoc """
  A participant of a `Specter.Room` written in Elixir (a bot, a recorder, a load
  generator, a test): it signs in to the signalling server, offers the room its tracks and
  a data channel, and answers the room's offers as publications come and go — what a
  browser page does.

  It publishes a `Specter.TrackLocalStaticRTP` per kind asked for (`audio: true` Opus,
  `video: true` VP8; `tracks/1`): write RTP packets to them. What the others publish
  arrives as remote tracks (their `stream_id` is the publisher's name) that the
  participant owns; read them with `Specter.TrackRemote.relay/3` or count them with
  `Specter.TrackRemote.info/2`.

  Events go to `:subscriber` as `{:specter_participant, participant, event}`:

    * `:connected` once the connection is up
    * `{:track, track, info}` / `{:track_ended, track}` - another participant's track
    * `{:data, {:text | :binary, binary}}` - a message relayed by the room
    * `{:data_channel_open, dc}`
    * `{:keyframe_request, track}` - a subscriber asked for a keyframe of one of the
      participant's own tracks (a PLI or FIR reached its sender): send one
    * `{:left, reason}` - the room hung up, the connection failed or closed (the process
      then stops)

  Options: `:specter`, `:name` and `:room` (the room's name on the signalling server,
  `"room:" <> room_name`) are required; `:port`, `:ip` (8888, `{127, 0, 0, 1}`), `:audio`,
  `:video` (`false`), `:subscriber`, `:data_channel_active` (`true`: messages are
  delivered; `false` leaves them unread, a slow participant).
  """

  use GenServer

  alias Specter.{DataChannel, Negotiation, PeerConnection, RtpCodecCapability}
  alias Specter.Signalling.Client
  alias Specter.TrackLocalStaticRTP

  require Negotiation

  @typedoc "A participant process."
  @type t() :: GenServer.server()

  @schema [
    specter: [type: {:struct, Specter}, required: true],
    name: [type: :string, required: true],
    room: [type: :string, required: true],
    port: [type: {:in, 1..65_535}],
    ip: [type: :host],
    audio: [type: :boolean, default: false],
    video: [type: :boolean, default: false],
    subscriber: [type: {:or, [nil, :pid]}],
    data_channel_active: [type: :boolean, default: true]
  ]

  @doc """
  Starts a participant and joins the room (see the module documentation for the options;
  errors follow `Specter.Options`).

      iex> Specter.Room.Participant.start_link(name: "x", room: "room:y")
      {:error, {:missing_option, :specter}}
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    with {:ok, opts} <- Specter.Options.validate(opts, @schema),
         do: GenServer.start_link(__MODULE__, opts)
  end

  @doc "The participant's own tracks, `%{audio: track | nil, video: track | nil}`."
  @spec tracks(t()) :: %{audio: String.t() | nil, video: String.t() | nil}
  def tracks(participant), do: GenServer.call(participant, :tracks)

  @doc "The remote tracks received, `%{track => info}` (ended ones are removed)."
  @spec remote_tracks(t()) :: %{String.t() => map()}
  def remote_tracks(participant), do: GenServer.call(participant, :remote_tracks)

  @doc "The participant's peer connection."
  @spec peer_connection(t()) :: String.t()
  def peer_connection(participant), do: GenServer.call(participant, :peer_connection)

  @doc """
  Sends a message to the room (every other participant): `{:text, string}` or
  `{:binary, data}`. `{:error, :not_open}` before the data channel opens.
  """
  @spec send_data(t(), {:text | :binary, binary()}) :: :ok | {:error, term()}
  def send_data(participant, message), do: GenServer.call(participant, {:send_data, message})

  @doc "Leaves the room: hangs up, closes the connection, signs out and stops."
  @spec leave(t()) :: :ok
  def leave(participant), do: GenServer.stop(participant, :normal)

  ## Server

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    specter = opts[:specter]

    client_opts = [peer_name: opts[:name]] ++ Keyword.take(opts, [:port, :ip])

    with {:ok, client} <- Client.start_link(client_opts),
         {:ok, _id} <- Client.await_signed_in(client, 5_000),
         {:ok, room_id} <- Client.find_peer(client, opts[:room]),
         {:ok, tracks} <- new_tracks(specter, opts),
         {:ok, pc} <- PeerConnection.new(specter, PeerConnection.default_api!(specter)) do
      {:ok,
       %{
         specter: specter,
         name: opts[:name],
         client: client,
         room_id: room_id,
         pc: pc,
         dc: nil,
         own_dc: nil,
         dc_active: opts[:data_channel_active],
         tracks: tracks,
         remote: %{},
         ended: MapSet.new(),
         senders: %{},
         subscriber: opts[:subscriber],
         neg: :offering,
         nego: Negotiation.new(specter, pc),
         connected: false
       }}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp new_tracks(specter, opts) do
    kinds = [
      audio:
        {opts[:audio],
         %RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}},
      video: {opts[:video], %RtpCodecCapability{mime_type: "video/VP8", clock_rate: 90_000}}
    ]

    Enum.reduce_while(kinds, {:ok, %{audio: nil, video: nil}}, fn
      {kind, {true, codec}}, {:ok, acc} ->
        case TrackLocalStaticRTP.new(specter, codec, "#{kind}-#{opts[:name]}", opts[:name]) do
          {:ok, track} -> {:cont, {:ok, Map.put(acc, kind, track)}}
          error -> {:halt, error}
        end

      _, acc ->
        {:cont, acc}
    end)
  end

  @impl true
  def handle_call(:tracks, _from, s), do: {:reply, s.tracks, s}
  def handle_call(:remote_tracks, _from, s), do: {:reply, s.remote, s}
  def handle_call(:peer_connection, _from, s), do: {:reply, s.pc, s}

  def handle_call({:send_data, message}, _from, s) do
    reply =
      case {s.dc, message} do
        {nil, _} -> {:error, :not_open}
        {dc, {:text, text}} -> DataChannel.send_text(s.specter, dc, text)
        {dc, {:binary, data}} -> DataChannel.send(s.specter, dc, data)
        _ -> {:error, {:invalid_argument, :data}}
      end

    {:reply, reply, s}
  end

  @impl true
  def handle_info({:peer_connection_ready, pc}, %{pc: pc} = s) do
    for {_kind, track} <- s.tracks, track, do: _ = PeerConnection.add_track(s.specter, pc, track)

    case DataChannel.create(s.specter, pc, "room") do
      {:ok, dc} ->
        unless s.dc_active, do: _ = DataChannel.set_active(s.specter, dc, false)
        _ = PeerConnection.create_offer(s.specter, pc)
        {:noreply, %{s | own_dc: dc}}

      {:error, reason} ->
        {:stop, {:shutdown, {:data_channel, reason}}, s}
    end
  end

  def handle_info(message, %{pc: pc} = s) when Negotiation.is_message(message, pc) do
    {action, nego} = Negotiation.handle_message(s.nego, message)
    s = %{s | nego: nego}

    case action do
      {:local_description, sdp} ->
        signal(s, {:sdp, sdp})
        neg = if sdp["type"] == "answer", do: :stable, else: :offering
        {:noreply, %{s | neg: neg}}

      {:remote_description, :offer} ->
        _ = PeerConnection.create_answer(s.specter, pc)
        {:noreply, s}

      {:error, :no_local_description} ->
        {:stop, {:shutdown, :no_local_description}, s}

      {:error, reason} ->
        left(s, reason)

      _ ->
        {:noreply, s}
    end
  end

  def handle_info({:ice_candidate, pc, candidate}, %{pc: pc} = s) do
    signal(s, Specter.Signaller.candidate_message(candidate))
    {:noreply, s}
  end

  def handle_info({:specter_signalling, client, {:signal, from, message}}, %{client: client} = s)
      when from == s.room_id,
      do: on_signal(s, message)

  def handle_info({:specter_signalling, _client, _event}, s), do: {:noreply, s}

  def handle_info({:connection_state_change, pc, :connected}, %{pc: pc} = s) do
    unless s.connected, do: emit(s, :connected)
    {:noreply, %{s | connected: true}}
  end

  def handle_info({:connection_state_change, pc, state}, %{pc: pc} = s)
      when state in [:failed, :closed],
      do: left(s, state)

  def handle_info({:peer_connection_closed, pc}, %{pc: pc} = s), do: left(s, :closed)

  def handle_info({:data_channel_open, dc}, %{own_dc: dc} = s) do
    emit(s, {:data_channel_open, dc})
    {:noreply, %{s | dc: dc}}
  end

  def handle_info({:data_channel_message, dc, message}, %{own_dc: dc} = s) do
    emit(s, {:data, message})
    {:noreply, s}
  end

  def handle_info({:rtp_sender, pc, track, sender}, %{pc: pc} = s),
    do: {:noreply, %{s | senders: Map.put(s.senders, sender, track)}}

  def handle_info({:sender_rtcp, sender, rtcp}, s) do
    with %{^sender => track} <- s.senders,
         true <- Enum.any?(rtcp, &(&1.type in [:pli, :fir])) do
      emit(s, {:keyframe_request, track})
    end

    {:noreply, s}
  end

  def handle_info({:track, pc, track, info}, %{pc: pc} = s) do
    emit(s, {:track, track, info})
    {:noreply, %{s | remote: Map.put(s.remote, track, info)}}
  end

  def handle_info({:track_ended, track}, s) do
    if Map.has_key?(s.remote, track), do: emit(s, {:track_ended, track})
    {:noreply, %{s | remote: Map.delete(s.remote, track)}}
  end

  def handle_info({:EXIT, client, reason}, %{client: client} = s),
    do: left(s, {:signalling, reason})

  def handle_info(_message, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    _ = safe(fn -> signal(s, {:control, :hangup, "leave"}) end)
    _ = PeerConnection.close(s.specter, s.pc)

    for {_kind, track} <- s.tracks, track, do: _ = TrackLocalStaticRTP.close(s.specter, track)

    _ = safe(fn -> Client.sign_out(s.client) end)
    :ok
  end

  defp on_signal(s, {:sdp, %{"type" => "answer"} = sdp}) when s.neg == :offering do
    {_, nego} = Negotiation.set_remote_description(s.nego, sdp)
    {:noreply, %{s | neg: :stable, nego: nego}}
  end

  defp on_signal(s, {:sdp, %{"type" => "offer"} = sdp}) when s.neg == :stable do
    {_, nego} = Negotiation.set_remote_description(s.nego, sdp)
    s = end_unsent(s, sdp["sdp"])
    {:noreply, %{s | neg: :answering, nego: nego}}
  end

  defp on_signal(s, {:candidate, candidate}),
    do: {:noreply, %{s | nego: Negotiation.remote_candidate(s.nego, candidate)}}

  defp on_signal(s, {:control, :hangup, reason}), do: left(s, {:room_hangup, reason})
  defp on_signal(s, _message), do: {:noreply, s}

  # The room removed a sender: its m-section no longer sends that track. webrtc-rs keeps
  # the receiver's track alive (browsers mute it and fire `removetrack`), so the
  # participant ends it itself.
  defp end_unsent(s, sdp) do
    sent = sent_track_ids(sdp)

    {ended, kept} =
      Enum.split_with(s.remote, fn {_track, info} -> not MapSet.member?(sent, info.track_id) end)

    for {track, _} <- ended, do: emit(s, {:track_ended, track})
    %{s | remote: Map.new(kept), ended: Enum.reduce(ended, s.ended, &MapSet.put(&2, elem(&1, 0)))}
  end

  @doc false
  # The track ids an SDP's media sections send (`a=msid:<stream> <track>` in a section
  # whose direction is sendrecv or sendonly and whose port is not 0).
  @spec sent_track_ids(String.t()) :: MapSet.t()
  def sent_track_ids(sdp) when is_binary(sdp) do
    sdp
    |> String.split(~r/\r?\nm=/)
    |> Enum.drop(1)
    |> Enum.flat_map(fn section ->
      lines = String.split(section, ~r/\r?\n/)
      rejected = match?([_kind, "0" | _], String.split(hd(lines), " "))

      direction =
        Enum.find_value(lines, "sendrecv", fn
          "a=" <> d when d in ["sendrecv", "sendonly", "recvonly", "inactive"] -> d
          _ -> nil
        end)

      tracks =
        for "a=msid:" <> msid <- lines,
            [_stream, track] <- [String.split(msid, " ", parts: 2)],
            do: String.trim(track)

      if rejected or direction not in ["sendrecv", "sendonly"], do: [], else: tracks
    end)
    |> MapSet.new()
  end

  def sent_track_ids(_), do: MapSet.new()

  defp left(s, reason) do
    emit(s, {:left, reason})
    {:stop, :normal, s}
  end

  defp signal(s, message), do: Client.send_signal(s.client, s.name, s.room_id, message)

  defp safe(fun) do
    fun.()
  catch
    _, _ -> :error
  end

  defp emit(%{subscriber: nil}, _event), do: :ok

  defp emit(s, event) do
    send(s.subscriber, {:specter_participant, self(), event})
    :ok
  end
end
