defmodule Specter.RtpTransceiver do
  @moduledoc """
  Transceivers of a connection (`RTCRtpTransceiver`): a sender and a receiver sharing one
  media section. Create them with `Specter.PeerConnection.add_track/3`,
  `Specter.PeerConnection.add_transceiver_from_kind/4` or
  `Specter.PeerConnection.add_transceiver_from_track/4`; list them with
  `Specter.PeerConnection.get_transceivers/2`.

  Changing a direction or stopping a transceiver needs a renegotiation: the owner gets
  `{:negotiation_needed, pc}`, then creates and exchanges a new offer as usual.
  """

  alias Specter.Native

  @typedoc "A transceiver of a connection, named by a UUID."
  @type t() :: Specter.uuid()

  @typedoc "The directions a transceiver can be set to."
  @type direction_t() :: :sendrecv | :sendonly | :recvonly | :inactive

  @typedoc "Message sent when `set_direction/4` or `stop/3` fails on the connection."
  @type error_msg_t() ::
          {:set_direction_error | :stop_transceiver_error, Specter.PeerConnection.t(),
           Specter.error()}

  @doc """
  Sets the direction the transceiver wants (`RTCRtpTransceiver.direction`). Sends
  `{:ok, pc, :set_direction}` or `{:set_direction_error, pc, reason}` to the caller.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.add_transceiver_from_kind(specter, pc, :audio)
      iex> assert_receive {:transceiver, ^pc, transceiver}
      iex> :ok = Specter.RtpTransceiver.set_direction(specter, pc, transceiver, :recvonly)
      iex> assert_receive {:ok, ^pc, :set_direction}
      iex> :ok = Specter.PeerConnection.get_transceivers(specter, pc)
      iex> assert_receive {:transceivers, ^pc, [%{id: ^transceiver, direction: :recvonly}]}
      iex> Specter.RtpTransceiver.set_direction(specter, pc, transceiver, :sideways)
      {:error, {:invalid_option, :direction}}
  """
  @spec set_direction(Specter.t(), Specter.PeerConnection.t(), t(), direction_t()) ::
          :ok | {:error, Specter.error()}
  def set_direction(specter, pc, transceiver, direction)
      when direction in [:sendrecv, :sendonly, :recvonly, :inactive] do
    Native.transceiver_set_direction(Specter.native(specter), pc, transceiver, direction)
  end

  def set_direction(_specter, _pc, _transceiver, _direction),
    do: {:error, {:invalid_option, :direction}}

  @doc """
  Stops the transceiver for good (`RTCRtpTransceiver.stop`): its sender stops sending, its
  receiver's track ends and its media section is rejected at the next negotiation. Sends
  `{:ok, pc, :stop_transceiver}` or `{:stop_transceiver_error, pc, reason}`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> :ok = Specter.PeerConnection.add_transceiver_from_kind(specter, pc, :video)
      iex> assert_receive {:transceiver, ^pc, transceiver}
      iex> :ok = Specter.RtpTransceiver.stop(specter, pc, transceiver)
      iex> assert_receive {:ok, ^pc, :stop_transceiver}
  """
  @spec stop(Specter.t(), Specter.PeerConnection.t(), t()) :: :ok | {:error, Specter.error()}
  def stop(specter, pc, transceiver),
    do: Native.transceiver_stop(Specter.native(specter), pc, transceiver)
end
