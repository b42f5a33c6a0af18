defmodule Specter.Room.Negotiation do
  @moduledoc false
  # The steps `Specter.Room.Peer` and `Specter.Room.Participant` share once a remote
  # description is being applied. Their states hold `remote_set`, `pending_candidates` and
  # `remote_ops` (a queue of the kinds, `:offer` or `:answer`, of the descriptions applied
  # and not yet confirmed: a connection runs its operations in call order, so one can be
  # applied while the one before it is still pending).

  alias Specter.PeerConnection

  @doc "A remote description was applied: queued candidates go in; an offer is answered."
  @spec remote_applied(Specter.t(), PeerConnection.t(), map()) :: map()
  def remote_applied(specter, pc, s) do
    for c <- Enum.reverse(s.pending_candidates),
        do: _ = PeerConnection.add_ice_candidate(specter, pc, c)

    s = %{s | remote_set: true, pending_candidates: []}

    case :queue.out(s.remote_ops) do
      {{:value, :offer}, ops} ->
        _ = PeerConnection.create_answer(specter, pc)
        %{s | remote_ops: ops}

      {{:value, _}, ops} ->
        %{s | remote_ops: ops}

      {:empty, _} ->
        s
    end
  end

  @doc "A remote candidate: added, or queued until the remote description is set."
  @spec remote_candidate(Specter.t(), PeerConnection.t(), map(), map() | nil) :: map()
  def remote_candidate(_specter, _pc, s, nil), do: s

  def remote_candidate(specter, pc, %{remote_set: true} = s, candidate) do
    _ = PeerConnection.add_ice_candidate(specter, pc, candidate)
    s
  end

  def remote_candidate(_specter, _pc, s, candidate),
    do: %{s | pending_candidates: [candidate | s.pending_candidates]}
end
