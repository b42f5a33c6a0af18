defmodule Specter.Signaller do
  @moduledoc """
  The transport a `Specter.Session` talks to its remote peer over.

  A signaller moves three kinds of messages between peer ids, and nothing else: it does not
  own call state (`Specter.Session` does).

    * `{:control, type, reason}` - call control: `type` is `:init`, `:accept`, `:reject` or
      `:hangup`; `reason` is a string or `nil`
    * `{:sdp, %{"type" => "offer" | "answer", "sdp" => sdp}}` - a session description
    * `{:candidate, candidate}` - an ICE candidate in the browser's `RTCIceCandidateInit`
      JSON shape (`"candidate"`, `"sdpMid"`, `"sdpMLineIndex"`, `"usernameFragment"`), or
      `nil` for the end of candidates

  A signaller is named by `{module, config}`, where `module` implements this behaviour. The
  session process calls `c:register/3` once when it starts; from then on the signaller
  delivers every message for that peer id to the process as

      {:specter_signal, from_peer_id, message}

  and the session sends with `c:send_signal/4`. `c:register/3` returns the process that
  carries the transport: the session monitors it, and ends its call (reason
  `:signaller_down`) when it exits.

  Implementations: `Specter.Signaller.Local` (inside one VM or a cluster: tests, demos,
  rooms) and `Specter.Signalling.Client` (libwebrtc's peerconnection protocol over HTTP).
  """

  @typedoc "A peer's identifier, as the signaller knows it."
  @type peer_id() :: String.t()

  @typedoc "A signaller: its module and the configuration its callbacks get."
  @type t() :: {module(), term()}

  @typedoc "Call-control message types."
  @type control_t() :: :init | :accept | :reject | :hangup

  @typedoc "What a signaller carries."
  @type message() ::
          {:control, control_t(), String.t() | nil}
          | {:sdp, %{required(String.t()) => String.t()}}
          | {:candidate, map() | nil}

  @doc """
  Binds `peer_id` to `pid` (the calling session): messages for `peer_id` go to `pid` as
  `{:specter_signal, from, message}`. Returns the process to monitor.
  Errors: `{:error, :already_registered}`, or the transport's own reason.
  """
  @callback register(config :: term(), peer_id(), pid()) :: {:ok, pid()} | {:error, term()}

  @doc "Sends `message` from `from` to `to`. `{:error, :unknown_peer}` when `to` is not known."
  @callback send_signal(config :: term(), from :: peer_id(), to :: peer_id(), message()) ::
              :ok | {:error, term()}

  @doc "Releases `peer_id` (the session is stopping)."
  @callback unregister(config :: term(), peer_id()) :: :ok

  @doc """
  Checks that `message` has one of the shapes above.

      iex> Specter.Signaller.valid_message?({:control, :init, nil})
      true
      iex> Specter.Signaller.valid_message?({:sdp, %{"type" => "offer", "sdp" => "v=0"}})
      true
      iex> Specter.Signaller.valid_message?({:control, :dance, nil})
      false
  """
  @spec valid_message?(term()) :: boolean()
  def valid_message?({:control, type, reason})
      when type in [:init, :accept, :reject, :hangup] and (is_binary(reason) or is_nil(reason)),
      do: true

  def valid_message?({:sdp, %{"type" => type, "sdp" => sdp}})
      when type in ["offer", "answer"] and is_binary(sdp),
      do: true

  def valid_message?({:candidate, nil}), do: true
  def valid_message?({:candidate, %{"candidate" => c}}) when is_binary(c), do: true
  def valid_message?(_), do: false

  @doc """
  The signaller message for a local candidate as a connection announces it
  (`{:ice_candidate, pc, json}`: the browser's `RTCIceCandidateInit` JSON, or `nil` at the
  end of candidates).

      iex> Specter.Signaller.candidate_message(~s({"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}))
      {:candidate, %{"candidate" => "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid" => "0"}}
      iex> Specter.Signaller.candidate_message(nil)
      {:candidate, nil}
      iex> Specter.Signaller.candidate_message("candidate:1 1 udp 1 127.0.0.1 5000 typ host")
      {:candidate, %{"candidate" => "candidate:1 1 udp 1 127.0.0.1 5000 typ host"}}
  """
  @spec candidate_message(String.t() | nil) :: {:candidate, map() | nil}
  def candidate_message(nil), do: {:candidate, nil}

  def candidate_message(json) when is_binary(json) do
    case Specter.JSON.decode(json) do
      {:ok, map} when is_map(map) -> {:candidate, map}
      _ -> {:candidate, %{"candidate" => json}}
    end
  end
end
