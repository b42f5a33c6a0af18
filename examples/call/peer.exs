# One side of a call between two VMs: a Specter.Session over Specter.Signalling.Client
# (libwebrtc's peerconnection protocol), as in libwebrtc's peerconnection example.
#
#   mix specter.server --port 8888                                          # terminal 1
#   mix run examples/call/peer.exs --name bob --port 8888 --media /tmp/call  # terminal 2
#   mix run examples/call/peer.exs --name alice --call bob --port 8888 --media /tmp/call
#
# The callee (no --call) signs in, waits for a call, accepts it, records the remote tracks
# to DIR/<name>-video.ivf and DIR/<name>-audio.ogg, answers "hello Bob" with "hello Alice",
# and exits when the caller hangs up. The caller signs in, prints the peer list, waits until
# the callee is listed, calls it, plays DIR/vp8.ivf and DIR/opus.ogg into its tracks, sends
# "hello Bob", and hangs up when both files have played and the reply has arrived.
# examples/call/run.exs makes the files and runs all three processes.
#
# Options: --name NAME (required), --call NAME, --port N (8888), --media DIR (required),
# --timeout SECONDS (25: the exit status is 1 if the call is not over by then).
#
# Exit status 0 when the call went as described, 1 otherwise. Nothing leaves 127.0.0.1.

defmodule Call.Peer do
  alias Specter.{MediaFile, Session}
  alias Specter.Signalling.Client

  @switches [name: :string, call: :string, port: :integer, media: :string, timeout: :integer]

  def main(argv) do
    {opts, _, invalid} = OptionParser.parse(argv, strict: @switches)
    if invalid != [], do: fail("invalid options #{inspect(invalid)}")
    name = opts[:name] || fail("--name is required")
    dir = opts[:media] || fail("--media DIR is required")
    deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :timeout, 25) * 1_000

    {:ok, specter} = Specter.init(loopback_only: true)
    port = Keyword.get(opts, :port, 8888)
    {:ok, client} = Client.start_link(peer_name: name, port: port)

    # The session registers under our name before the sign-in completes, so no call that
    # arrives right after it is missed.
    {:ok, session} =
      Session.start_link(
        specter: specter,
        signaller: {Client, client},
        peer_id: name,
        audio: :sendrecv,
        video: :sendrecv,
        subscriber: self()
      )

    {:ok, id} = Client.await_signed_in(client, 5_000)
    log("signed in to 127.0.0.1:#{port} as #{inspect(name)} (id #{id})")
    log("peers: " <> peer_list(Client.peers(client)))

    st = %{
      name: name,
      specter: specter,
      client: client,
      session: session,
      dir: dir,
      deadline: deadline,
      role: if(opts[:call], do: :caller, else: :callee),
      remote_name: opts[:call],
      ended: nil,
      idle: false,
      players: %{},
      played: %{},
      recorders: %{},
      recorded: %{},
      sent: nil,
      received: [],
      errors: [],
      timed_out: false
    }

    st =
      case st.role do
        :caller ->
          remote = wait_for_peer(st, opts[:call])
          log("calling #{opts[:call]} (id #{remote})")
          :ok = Session.call(session, remote)
          st

        :callee ->
          log("waiting for a call")
          st
      end

    st = loop(st)
    code = report(st)
    GenServer.stop(session)
    _ = Client.sign_out(client)
    log("signed out, exit #{code}")
    System.halt(code)
  end

  ## Waiting for the callee to sign in

  defp wait_for_peer(st, name, said? \\ false) do
    case Client.find_peer(st.client, name) do
      {:ok, id} ->
        id

      {:error, :not_found} ->
        unless said?, do: log("#{name} is not signed in yet; waiting")

        receive do
          {:specter_signalling, _, event} ->
            on_client_event(st, event)
            wait_for_peer(st, name, true)
        after
          remaining(st) -> fail("#{name} never signed in")
        end
    end
  end

  ## The call

  defp loop(st) do
    if done?(st) do
      st
    else
      receive do
        {:specter_session, _, event} -> st |> on_session(event) |> loop()
        {:specter_signalling, _, event} -> loop(on_client_event(st, event))
        {:play_finished, player, info} -> st |> play_finished(player, info) |> loop()
        {:record_finished, rec, info} -> st |> record_finished(rec, info) |> loop()
        {:record_error, rec, reason} -> st |> record_finished(rec, {:error, reason}) |> loop()
        other -> loop(error(st, "unexpected message #{inspect(other)}"))
      after
        remaining(st) ->
          %{error(st, "timed out in state #{Session.state(st.session)}") | timed_out: true}
      end
    end
  end

  # The caller is done when its session is idle again; the callee also waits for its
  # recordings to be closed.
  defp done?(st), do: st.timed_out or (st.idle and map_size(st.recorders) == 0)

  defp on_session(st, {:state, state}) do
    log("session state -> #{state}")
    %{st | idle: state == :idle and st.ended != nil}
  end

  defp on_session(st, {:incoming_call, from}) do
    # The signaller's peer ids are the server's ids; the peer list has their names.
    name = Map.get(Client.peers(st.client), from, from)
    log("incoming call from #{name} (id #{from}); accepting")
    :ok = Session.accept(st.session)
    %{st | remote_name: name}
  end

  defp on_session(st, {:media_attached, media}) do
    log("media attached: local #{kinds(media, [:audio, :video])}")

    if st.role == :caller do
      Enum.reduce([video: "vp8.ivf", audio: "opus.ogg"], st, fn {kind, file}, st ->
        path = Path.join(st.dir, file)
        {:ok, player} = MediaFile.play(st.specter, Map.fetch!(media, kind), path)
        log("playing #{path} into the #{kind} track")
        %{st | players: Map.put(st.players, player, kind)}
      end)
    else
      st
    end
  end

  defp on_session(st, {:track, track, %{kind: kind} = info}) when kind in [:audio, :video] do
    log("remote #{kind} track #{info.codec.mime_type}, ssrc #{info.ssrc}")

    if st.role == :callee do
      ext = if kind == :video, do: "ivf", else: "ogg"
      path = Path.join(st.dir, "#{st.name}-#{kind}.#{ext}")
      {:ok, rec} = MediaFile.record(st.specter, track, path)
      log("recording #{kind} to #{path}")
      %{st | recorders: Map.put(st.recorders, rec, kind)}
    else
      st
    end
  end

  defp on_session(st, {:track, _track, info}) do
    log("remote track #{inspect(info)}")
    st
  end

  defp on_session(st, {:data_channel_open, _dc}) do
    log("data channel open")

    if st.role == :caller do
      text = "hello #{String.capitalize(st.remote_name)}"
      :ok = Session.send_data(st.session, {:text, text})
      log("sent #{inspect(text)}")
      %{st | sent: text}
    else
      st
    end
  end

  defp on_session(st, {:data, {:text, text}}) do
    log("received #{inspect(text)}")
    st = %{st | received: st.received ++ [text]}

    if st.role == :callee and st.sent == nil do
      reply = "hello #{String.capitalize(st.remote_name)}"
      :ok = Session.send_data(st.session, {:text, reply})
      log("sent #{inspect(reply)}")
      %{st | sent: reply}
    else
      maybe_hang_up(st)
    end
  end

  defp on_session(st, {:data_channel_close, _dc}) do
    log("data channel closed")
    st
  end

  defp on_session(st, {:call_ended, peer, reason}) do
    log("call with #{st.remote_name} (id #{peer}) ended: #{inspect(reason)}")
    %{st | ended: reason}
  end

  defp on_session(st, {:media_detached, media}) do
    log("media detached: remote #{kinds(media, [:remote_audio, :remote_video])}")

    # Recordings close when their remote track ends; stop any that is still open.
    for {rec, _kind} <- st.recorders, do: _ = MediaFile.stop_record(st.specter, rec)
    st
  end

  defp on_session(st, event) do
    log("session event #{inspect(event)}")
    st
  end

  defp play_finished(st, player, %{frames: frames}) do
    {kind, players} = Map.pop(st.players, player)
    log("finished playing #{kind}: #{frames} frames")
    maybe_hang_up(%{st | players: players, played: Map.put(st.played, kind, frames)})
  end

  # The caller hangs up once both files have played and the callee's reply has arrived.
  defp maybe_hang_up(%{role: :caller, players: players, received: [_ | _]} = st)
       when map_size(players) == 0 and map_size(st.played) == 2 and st.ended == nil do
    log("hanging up")
    :ok = Session.hangup(st.session, "done")
    st
  end

  defp maybe_hang_up(st), do: st

  defp record_finished(st, rec, info) do
    {kind, recorders} = Map.pop(st.recorders, rec)

    case info do
      {:error, reason} ->
        error(%{st | recorders: recorders}, "recording #{kind} failed: #{inspect(reason)}")

      info ->
        frames =
          if info[:frames],
            do: "#{info.frames} frames (#{info.frames_dropped} incomplete, left out), ",
            else: ""

        log(
          "recorded #{kind}: #{frames}#{info.packet_count} packets, #{info.bytes} bytes -> #{info.path}"
        )

        %{st | recorders: recorders, recorded: Map.put(st.recorded, kind, info)}
    end
  end

  ## Signalling client events

  # Printed already, from await_signed_in/2 and peers/1.
  defp on_client_event(st, {:signed_in, _id, _peers}), do: st

  defp on_client_event(st, {:peer_joined, id, name}) do
    log("peer joined: #{name} (id #{id})")
    st
  end

  defp on_client_event(st, {:peer_left, id, name}) do
    log("peer left: #{name} (id #{id})")
    st
  end

  defp on_client_event(st, event) do
    log("signalling event #{inspect(event)}")
    st
  end

  ## The end

  defp report(st) do
    expected_end = if st.role == :caller, do: :hangup, else: :remote_hangup

    checks =
      [
        {"call ended by #{expected_end}", match?({^expected_end, _}, st.ended)},
        {"received a message", st.received != []},
        {"sent a message", st.sent != nil}
      ] ++
        if st.role == :caller do
          [{"played video and audio", Enum.all?([:video, :audio], &(st.played[&1] > 0))}]
        else
          [{"recorded video and audio", Map.keys(st.recorded) |> Enum.sort() == [:audio, :video]}]
        end

    if st.role == :callee, do: probe(st)

    failed = for {what, false} <- checks, do: what
    Enum.each(failed, &log("ERROR check failed: #{&1}"))
    if st.errors == [] and failed == [], do: 0, else: 1
  end

  defp probe(st) do
    if System.find_executable("ffprobe") do
      for {kind, %{path: path}} <- Enum.sort(st.recorded) do
        {entry, flag} =
          if kind == :video,
            do: {"nb_read_frames", "-count_frames"},
            else: {"nb_read_packets", "-count_packets"}

        {out, _} =
          System.cmd(
            "ffprobe",
            ["-v", "error", flag, "-select_streams", "0", "-show_entries"] ++
              ["stream=codec_name,#{entry}", "-of", "csv=p=0", path],
            stderr_to_stdout: true
          )

        log("ffprobe #{Path.basename(path)}: #{String.trim(out)} (codec, #{entry})")
      end
    end
  end

  ## Helpers

  defp remaining(st), do: max(st.deadline - System.monotonic_time(:millisecond), 0)

  defp error(st, text) do
    log("ERROR #{text}")
    %{st | errors: [text | st.errors]}
  end

  defp kinds(media, keys) do
    keys
    |> Enum.filter(&media[&1])
    |> Enum.map_join(" + ", &(&1 |> Atom.to_string() |> String.replace("remote_", "")))
    |> case do
      "" -> "none"
      text -> text
    end
  end

  defp peer_list(peers) when map_size(peers) == 0, do: "(none)"

  defp peer_list(peers),
    do: peers |> Enum.sort() |> Enum.map_join(", ", fn {id, name} -> "#{name} (id #{id})" end)

  defp log(text), do: IO.puts(text)

  defp fail(text) do
    IO.puts("ERROR #{text}")
    System.halt(1)
  end
end

Call.Peer.main(System.argv())
