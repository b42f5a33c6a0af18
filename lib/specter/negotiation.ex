defmodule Specter.Negotiation do
  @moduledoc """
  Offer/answer over a connection's raw messages, for a process that owns a
  `Specter.PeerConnection` (`Specter.Session`, `Specter.Room.Peer` and
  `Specter.Room.Participant` use it): what is the same in every such process, so that each
  keeps only its own policy (who offers, when to renegotiate, what an error ends).

  It holds:

    * the local description being applied: `create_offer/3` and `create_answer/3` reply
      `{:offer | :answer, pc, json}`; `handle_message/2` sets it as the local description
      and, on `{:ok, pc, :set_local_description}`, gives it back to be sent;
    * the kinds of the remote descriptions applied and not yet confirmed: a connection runs
      its operations in call order, so one description can be applied while the one before
      it is still pending, and `{:ok, pc, :set_remote_description}` does not say which;
    * the remote ICE candidates that arrive before the remote description, queued (never
      dropped) and added once it is set.

  Route the connection's negotiation messages to `handle_message/2` with the
  `is_message/2` guard; it returns what the owner has to do and the new state. Errors are
  `{tag, reason}` with the tag of the connection's message (`:offer_error`, `:answer_error`,
  `:set_local_description_error`, `:set_remote_description_error`), or
  `:no_local_description` when the connection confirms a local description it was never
  given.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> assert_receive {:peer_connection_ready, ^pc}
      iex> :ok = Specter.PeerConnection.create_data_channel(specter, pc, "x")
      iex> negotiation = Specter.Negotiation.new(specter, pc)
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc)
      iex> assert_receive {:offer, ^pc, _json} = message
      iex> require Specter.Negotiation
      iex> Specter.Negotiation.is_message(message, pc)
      true
      iex> {:ok, negotiation} = Specter.Negotiation.handle_message(negotiation, message)
      iex> assert_receive {:ok, ^pc, :set_local_description} = message
      iex> {{:local_description, %{"type" => "offer", "sdp" => _}}, _negotiation} =
      ...>   Specter.Negotiation.handle_message(negotiation, message)
  """

  alias Specter.PeerConnection

  @enforce_keys [:specter]
  defstruct specter: nil,
            pc: nil,
            local: nil,
            remote_set: false,
            remote_kinds: :queue.new(),
            candidates: []

  @typedoc "The negotiation state of one connection (opaque)."
  @opaque t() :: %__MODULE__{
            specter: Specter.t(),
            pc: PeerConnection.t() | nil,
            local: String.t() | nil,
            remote_set: boolean(),
            remote_kinds: :queue.queue(:offer | :answer),
            candidates: [map()]
          }

  @typedoc "The tags of the connection's negotiation errors."
  @type error_tag() ::
          :offer_error
          | :answer_error
          | :set_local_description_error
          | :set_remote_description_error

  @typedoc "What the owner has to do after `handle_message/2` (see there)."
  @type action() ::
          :ok
          | {:local_description, %{String.t() => String.t()}}
          | {:remote_description, :offer | :answer | nil}
          | {:error, {error_tag(), term()} | :no_local_description}

  @errors [
    :offer_error,
    :answer_error,
    :set_local_description_error,
    :set_remote_description_error
  ]

  @doc """
  Whether `message` is one of `pc`'s negotiation messages for `handle_message/2`:
  `{:offer | :answer, pc, json}`, `{:ok, pc, :set_local_description |
  :set_remote_description}` or `{error_tag, pc, reason}` (`t:error_tag/0`). Usable in
  guards (`require Specter.Negotiation` first).

      iex> require Specter.Negotiation
      iex> Specter.Negotiation.is_message({:answer_error, "pc", :reason}, "pc")
      true
      iex> Specter.Negotiation.is_message({:ok, "pc", :add_ice_candidate}, "pc")
      false
  """
  defguard is_message(message, pc)
           when is_tuple(message) and tuple_size(message) == 3 and elem(message, 1) == pc and
                  (elem(message, 0) in [:offer, :answer | @errors] or
                     (elem(message, 0) == :ok and
                        elem(message, 2) in [:set_local_description, :set_remote_description]))

  @doc """
  A negotiation of `pc` (or of the connection to come: see `put_peer_connection/2`).
  Remote candidates given before it has one are queued.

      iex> {:ok, specter} = Specter.init()
      iex> negotiation = Specter.Negotiation.new(specter)
      iex> {Specter.Negotiation.pending_candidates(negotiation), Specter.Negotiation.remote_description_set?(negotiation)}
      {[], false}
  """
  @spec new(Specter.t(), PeerConnection.t() | nil) :: t()
  def new(specter, pc \\ nil), do: %__MODULE__{specter: specter, pc: pc}

  @doc """
  Gives the negotiation its connection, keeping the candidates queued so far.

      iex> {:ok, specter} = Specter.init()
      iex> negotiation = Specter.Negotiation.new(specter) |> Specter.Negotiation.remote_candidate(%{"candidate" => "a"})
      iex> negotiation = Specter.Negotiation.put_peer_connection(negotiation, "pc")
      iex> Specter.Negotiation.pending_candidates(negotiation)
      [%{"candidate" => "a"}]
  """
  @spec put_peer_connection(t(), PeerConnection.t()) :: t()
  def put_peer_connection(%__MODULE__{} = n, pc), do: %{n | pc: pc}

  @doc """
  Handles one of the connection's negotiation messages (`is_message/2`); returns
  `{action, t}`:

    * `{:offer | :answer, pc, json}` - sets it as the local description: `:ok`;
    * `{:ok, pc, :set_local_description}` - `{:local_description, %{"type" => _, "sdp" =>
      _}}`: send it to the remote peer (`{:error, :no_local_description}` when there was
      none);
    * `{:ok, pc, :set_remote_description}` - the candidates queued are added;
      `{:remote_description, kind}` with the kind of the description applied
      (`set_remote_description/2`; `nil` for one applied otherwise): answer an `:offer`;
    * `{error_tag, pc, reason}` - `{:error, {error_tag, reason}}`.
  """
  @spec handle_message(t(), tuple()) :: {action(), t()}
  def handle_message(%__MODULE__{pc: pc} = n, {kind, pc, json}) when kind in [:offer, :answer] do
    _ = PeerConnection.set_local_description(n.specter, pc, json)
    {:ok, %{n | local: json}}
  end

  def handle_message(%__MODULE__{pc: pc} = n, {:ok, pc, :set_local_description}) do
    case Specter.JSON.decode(n.local || "") do
      {:ok, %{"type" => type, "sdp" => sdp}} ->
        {{:local_description, %{"type" => type, "sdp" => sdp}}, %{n | local: nil}}

      _ ->
        {{:error, :no_local_description}, n}
    end
  end

  def handle_message(%__MODULE__{pc: pc} = n, {:ok, pc, :set_remote_description}) do
    for c <- Enum.reverse(n.candidates),
        do: _ = PeerConnection.add_ice_candidate(n.specter, pc, c)

    {kind, kinds} =
      case :queue.out(n.remote_kinds) do
        {{:value, kind}, kinds} -> {kind, kinds}
        {:empty, kinds} -> {nil, kinds}
      end

    {{:remote_description, kind}, %{n | remote_set: true, candidates: [], remote_kinds: kinds}}
  end

  def handle_message(%__MODULE__{pc: pc} = n, {tag, pc, reason}) when tag in @errors,
    do: {{:error, {tag, reason}}, n}

  @doc """
  Applies a remote description (`%{"type" => "offer" | "answer", "sdp" => _}`): returns
  what `Specter.PeerConnection.set_remote_description/3` returned and the new state, which
  expects `{:ok, pc, :set_remote_description}` once for it.
  """
  @spec set_remote_description(t(), map()) :: {:ok | {:error, Specter.error()}, t()}
  def set_remote_description(%__MODULE__{} = n, description) do
    case PeerConnection.set_remote_description(n.specter, n.pc, description) do
      :ok ->
        kind = if match?(%{"type" => "offer"}, description), do: :offer, else: :answer
        {:ok, %{n | remote_kinds: :queue.in(kind, n.remote_kinds)}}

      error ->
        {error, n}
    end
  end

  @doc """
  A remote ICE candidate: added once the remote description is set, queued until then.
  `nil` (the end of the remote candidates) is ignored.

      iex> {:ok, specter} = Specter.init()
      iex> negotiation = Specter.Negotiation.new(specter)
      iex> Specter.Negotiation.remote_candidate(negotiation, nil) == negotiation
      true
  """
  @spec remote_candidate(t(), map() | nil) :: t()
  def remote_candidate(%__MODULE__{} = n, nil), do: n

  def remote_candidate(%__MODULE__{remote_set: true} = n, candidate) do
    _ = PeerConnection.add_ice_candidate(n.specter, n.pc, candidate)
    n
  end

  def remote_candidate(%__MODULE__{} = n, candidate),
    do: %{n | candidates: [candidate | n.candidates]}

  @doc """
  The remote candidates queued (in the order they came) until the remote description is
  set.

      iex> {:ok, specter} = Specter.init()
      iex> negotiation = Specter.Negotiation.new(specter)
      iex> negotiation = Specter.Negotiation.remote_candidate(negotiation, %{"candidate" => "a"})
      iex> negotiation = Specter.Negotiation.remote_candidate(negotiation, %{"candidate" => "b"})
      iex> Specter.Negotiation.pending_candidates(negotiation)
      [%{"candidate" => "a"}, %{"candidate" => "b"}]
  """
  @spec pending_candidates(t()) :: [map()]
  def pending_candidates(%__MODULE__{} = n), do: Enum.reverse(n.candidates)

  @doc """
  Whether a remote description has been set (confirmed by the connection).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.Negotiation.remote_description_set?(Specter.Negotiation.new(specter))
      false
  """
  @spec remote_description_set?(t()) :: boolean()
  def remote_description_set?(%__MODULE__{} = n), do: n.remote_set
end
