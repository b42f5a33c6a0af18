defmodule Specter.Signalling.Codec do
  @moduledoc """
  `Specter.Signaller` messages as the bodies libwebrtc's `peerconnection_client` (its
  `Conductor`) sends through the signalling server:

  | Specter.Signaller message | body |
  |---|---|
  | `{:sdp, %{"type" => "offer", "sdp" => sdp}}` | `{"type":"offer","sdp":"..."}` |
  | `{:candidate, %{"candidate" => c, "sdpMid" => m, "sdpMLineIndex" => i}}` | `{"candidate":"...","sdpMid":"0","sdpMLineIndex":0}` |
  | `{:control, :hangup, _}` | `BYE` |
  | `{:control, :init \\| :accept \\| :reject, reason}` | `{"type":"specter-control","control":"init","reason":null}` |
  | `{:candidate, nil}` (end of candidates) | `{"type":"specter-control","control":"end-of-candidates","reason":null}` |

  libwebrtc has no call control: its client ignores the `specter-control` bodies (an
  unknown SDP type), and `Specter.Signalling.Client` makes up the missing `init` when an
  offer arrives without one. A candidate with an empty `candidate` string (a browser's
  end-of-candidates) decodes as `{:candidate, nil}`.
  """

  @candidate_keys ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"]
  @controls %{"init" => :init, "accept" => :accept, "reject" => :reject, "hangup" => :hangup}

  @doc """
  Encodes a `Specter.Signaller` message as `{:ok, content_type, body}`.

      iex> Specter.Signalling.Codec.encode({:control, :hangup, nil})
      {:ok, "text/plain", "BYE"}
      iex> Specter.Signalling.Codec.encode({:sdp, %{"type" => "offer", "sdp" => "v=0"}})
      {:ok, "text/plain", ~s({"sdp":"v=0","type":"offer"})}
      iex> Specter.Signalling.Codec.encode({:control, :init, nil})
      {:ok, "text/plain", ~s({"control":"init","reason":null,"type":"specter-control"})}
      iex> Specter.Signalling.Codec.encode({:dance, :now})
      {:error, :invalid_message}
  """
  @spec encode(Specter.Signaller.message()) ::
          {:ok, String.t(), binary()} | {:error, :invalid_message}
  def encode(message) do
    if Specter.Signaller.valid_message?(message), do: do_encode(message), else: invalid()
  end

  defp do_encode({:control, :hangup, _reason}), do: {:ok, "text/plain", "BYE"}

  defp do_encode({:control, type, reason}),
    do:
      json(%{"type" => "specter-control", "control" => Atom.to_string(type), "reason" => reason})

  defp do_encode({:sdp, %{"type" => type, "sdp" => sdp}}),
    do: json(%{"type" => type, "sdp" => sdp})

  defp do_encode({:candidate, nil}),
    do: json(%{"type" => "specter-control", "control" => "end-of-candidates", "reason" => nil})

  defp do_encode({:candidate, candidate}), do: json(Map.take(candidate, @candidate_keys))

  defp json(map) do
    case Specter.JSON.encode(map) do
      {:ok, body} -> {:ok, "text/plain", body}
      {:error, _} -> invalid()
    end
  end

  defp invalid, do: {:error, :invalid_message}

  @doc """
  Decodes a relayed body into a `Specter.Signaller` message, or `:error` when it is not
  one (the client then hands it to its owner as a plain message).

      iex> Specter.Signalling.Codec.decode("BYE")
      {:ok, {:control, :hangup, nil}}
      iex> Specter.Signalling.Codec.decode(~s({"type":"answer","sdp":"v=0"}))
      {:ok, {:sdp, %{"type" => "answer", "sdp" => "v=0"}}}
      iex> Specter.Signalling.Codec.decode(~s({"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}))
      {:ok, {:candidate, %{"candidate" => "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid" => "0", "sdpMLineIndex" => 0}}}
      iex> Specter.Signalling.Codec.decode(~s({"type":"specter-control","control":"reject","reason":"busy"}))
      {:ok, {:control, :reject, "busy"}}
      iex> Specter.Signalling.Codec.decode("hello")
      :error
  """
  @spec decode(binary()) :: {:ok, Specter.Signaller.message()} | :error
  def decode("BYE"), do: {:ok, {:control, :hangup, nil}}

  def decode(body) when is_binary(body) do
    with "{" <> _ <- String.trim_leading(body),
         {:ok, map} when is_map(map) <- Specter.JSON.decode(body) do
      from_map(map)
    else
      _ -> :error
    end
  end

  def decode(_), do: :error

  defp from_map(%{"type" => "specter-control", "control" => "end-of-candidates"}),
    do: {:ok, {:candidate, nil}}

  defp from_map(%{"type" => "specter-control", "control" => control} = map) do
    reason = Map.get(map, "reason")

    case Map.fetch(@controls, control) do
      {:ok, type} when is_binary(reason) or is_nil(reason) -> {:ok, {:control, type, reason}}
      _ -> :error
    end
  end

  defp from_map(%{"type" => type, "sdp" => sdp})
       when type in ["offer", "answer"] and is_binary(sdp),
       do: {:ok, {:sdp, %{"type" => type, "sdp" => sdp}}}

  defp from_map(%{"candidate" => ""}), do: {:ok, {:candidate, nil}}

  defp from_map(%{"candidate" => candidate} = map) when is_binary(candidate),
    do: {:ok, {:candidate, Map.take(map, @candidate_keys)}}

  defp from_map(_), do: :error
end
