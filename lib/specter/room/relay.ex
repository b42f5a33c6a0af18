defmodule Specter.Room.Relay do
  @moduledoc """
  Carries one publication of a `Specter.Room` from the node it is published on to another
  node of the room, over distributed Erlang.

  On the subscribing node an **importer** owns a `Specter.TrackLocalStaticRTP` (the
  publication's local copy, which every subscriber of that node is sent) and asks the
  publishing room for the packets. On the publishing node an **exporter** receives every
  packet of the remote track (`Specter.TrackRemote.relay/3`) and sends them to the importer
  in batches (what is in its mailbox, up to #{64} packets a message), which writes them to
  its track. Keyframe requests go the other way (`keyframe_request/1` on the importer), at
  most one PLI per 250 ms reaching the publisher. The two monitor each other: when the
  exporter's node goes away, the importer stops (its room ends the publication on that
  node); when the publication ends, the exporter says so and both stop.
  """

  alias Specter.{TrackLocalStaticRTP, TrackRemote}

  @batch 64
  @keyframe_interval_ms 250

  @doc """
  Starts an importer (linked to the caller) for the publication `pub` (a map with `:id`,
  `:publisher` and `:codec`), published by the room process `room` on another node. Returns the
  importer and its local track.
  """
  @spec start_importer(Specter.t(), map(), pid()) ::
          {:ok, pid(), TrackLocalStaticRTP.t()} | {:error, term()}
  def start_importer(specter, pub, room) do
    with {:ok, codec} <- codec(pub.codec),
         {:ok, local} <- TrackLocalStaticRTP.new(specter, codec, pub.id, pub.publisher) do
      parent = self()
      pid = spawn_link(fn -> importer(specter, pub.id, local, room, parent) end)
      {:ok, pid, local}
    end
  end

  @doc """
  Asks the publisher of an importer's publication for a keyframe.

      iex> Specter.Room.Relay.keyframe_request(spawn(fn -> :ok end))
      :ok
  """
  @spec keyframe_request(pid()) :: :ok
  def keyframe_request(importer) do
    send(importer, :keyframe_request)
    :ok
  end

  @doc """
  Starts an exporter (linked to the caller) of the local remote track `track`, the
  publication `pub_id`, to `importer` on another node.
  """
  @spec start_exporter(Specter.t(), String.t(), TrackRemote.t(), pid()) :: {:ok, pid()}
  def start_exporter(specter, pub_id, track, importer) do
    {:ok, spawn_link(fn -> exporter(specter, pub_id, track, importer) end)}
  end

  @doc """
  A codec map of `Specter.TrackRemote.info_t/0` as a `%Specter.RtpCodecCapability{}`.

      iex> Specter.Room.Relay.codec(%{mime_type: "video/VP8", clock_rate: 90_000, channels: 0, sdp_fmtp_line: ""})
      {:ok, %Specter.RtpCodecCapability{mime_type: "video/VP8", clock_rate: 90_000}}
      iex> Specter.Room.Relay.codec(nil)
      {:error, :no_codec}
  """
  @spec codec(map() | nil) :: {:ok, Specter.RtpCodecCapability.t()} | {:error, :no_codec}
  def codec(%{mime_type: mime} = c) when is_binary(mime) do
    {:ok,
     %Specter.RtpCodecCapability{
       mime_type: mime,
       clock_rate: Map.get(c, :clock_rate, 90_000),
       channels: Map.get(c, :channels, 0),
       sdp_fmtp_line: Map.get(c, :sdp_fmtp_line, "")
     }}
  end

  def codec(_), do: {:error, :no_codec}

  ## Importer

  defp importer(specter, pub_id, local, room, parent) do
    send(room, {:room_export, pub_id, self()})
    mon = Process.monitor(room)

    importer_loop(%{
      specter: specter,
      pub_id: pub_id,
      local: local,
      parent: parent,
      room_mon: mon,
      exporter: nil,
      pending_keyframe: false
    })
  end

  defp importer_loop(s) do
    receive do
      {:relay_rtp, _pub_id, packets} ->
        for p <- packets, do: _ = TrackLocalStaticRTP.write_rtp(s.specter, s.local, p)
        importer_loop(s)

      {:relay_exporter, _pub_id, exporter} ->
        Process.demonitor(s.room_mon, [:flush])
        mon = Process.monitor(exporter)
        if s.pending_keyframe, do: send(exporter, :keyframe_request)
        importer_loop(%{s | exporter: exporter, room_mon: mon, pending_keyframe: false})

      :keyframe_request ->
        case s.exporter do
          nil ->
            importer_loop(%{s | pending_keyframe: true})

          exporter ->
            send(exporter, :keyframe_request)
            importer_loop(s)
        end

      {:relay_ended, _pub_id} ->
        stop_importer(s, :normal)

      {:relay_refused, _pub_id} ->
        stop_importer(s, :normal)

      {:DOWN, ref, :process, _, reason} when ref == s.room_mon ->
        stop_importer(s, {:shutdown, {:publisher_down, reason}})

      :stop ->
        stop_importer(s, :normal)
    end
  end

  defp stop_importer(s, reason) do
    _ = TrackLocalStaticRTP.close(s.specter, s.local)
    exit(reason)
  end

  ## Exporter

  defp exporter(specter, pub_id, track, importer) do
    mon = Process.monitor(importer)

    case TrackRemote.relay(specter, track, self()) do
      :ok ->
        send(importer, {:relay_exporter, pub_id, self()})
        # New subscribers need a keyframe to start decoding.
        _ = TrackRemote.request_keyframe(specter, track)

        exporter_loop(%{
          specter: specter,
          pub_id: pub_id,
          track: track,
          importer: importer,
          mon: mon,
          last_keyframe: System.monotonic_time(:millisecond)
        })

      {:error, _} ->
        send(importer, {:relay_refused, pub_id})
    end
  end

  defp exporter_loop(s) do
    receive do
      {:rtp, _track, packet} ->
        send(s.importer, {:relay_rtp, s.pub_id, [packet | drain(@batch - 1)]})
        exporter_loop(s)

      :keyframe_request ->
        now = System.monotonic_time(:millisecond)

        if now - s.last_keyframe >= @keyframe_interval_ms do
          _ = TrackRemote.request_keyframe(s.specter, s.track)
          exporter_loop(%{s | last_keyframe: now})
        else
          exporter_loop(s)
        end

      {:track_ended, _track} ->
        send(s.importer, {:relay_ended, s.pub_id})

      {:DOWN, ref, :process, _, _} when ref == s.mon ->
        _ = TrackRemote.unrelay(s.specter, s.track, self())

      :stop ->
        _ = TrackRemote.unrelay(s.specter, s.track, self())
        send(s.importer, {:relay_ended, s.pub_id})
    end
  end

  defp drain(0), do: []

  defp drain(n) do
    receive do
      {:rtp, _track, packet} -> [packet | drain(n - 1)]
    after
      0 -> []
    end
  end
end
