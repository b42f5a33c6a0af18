defmodule Specter.DataChannel do
  @moduledoc """
  RTCDataChannels of a peer connection.

  A channel is named by a UUID. Channels the remote peer opens are announced to the
  connection's owner as `{:data_channel, pc, dc}`; channels created with `create/4` are
  answered with `{:data_channel_created, pc, dc}`. The owner then receives the channel's
  events, `t:event_t/0`:

    * `{:data_channel_open, dc}` - the channel can send
    * `{:data_channel_message, dc, {:text, binary}}` or `{:data_channel_message, dc, {:binary, binary}}`
    * `{:data_channel_messages, dc, [{:text | :binary, binary}, ...]}` instead, for a channel
      that batches (`set_batch/3`)
    * `{:data_channel_passive, dc}` - an `{:active, n}` count ran out (see below)
    * `{:data_channel_buffered_amount_low, dc}` - the buffered amount fell to the low threshold
    * `{:data_channel_error, dc, reason}` - a send or close failed
    * `{:data_channel_closing, dc}` when the remote peer closes the channel (after the messages
      it sent before), then `{:data_channel_close, dc}`; a channel closed with `close/2`, or
      whose connection closes, only gets `{:data_channel_close, dc}` (as W3C)

  ## Flow control

  **Receiving** works like `:gen_tcp`'s `active` option (`set_active/3`, or `active:` when
  creating; the instance default is `Specter.Config`'s `:data_channel_active`, `true`):

    * `true` - every message is sent to the owner as it arrives;
    * `:once` - one message, then the channel turns passive;
    * `n` (a positive integer) - `n` more messages, then `{:data_channel_passive, dc}`;
      counts add up like `:inet.setopts(socket, active: n)`;
    * `false` - passive: nothing is delivered until the mode changes (`recv/3` asks for one).

  While a channel is passive Specter holds up to the instance's
  `:data_channel_receive_buffer` bytes (1 MiB), then stops taking its messages from
  webrtc-rs, whose queues fill and close the SCTP receive window: the sender slows down and
  nobody's memory grows. (webrtc-rs sends no window update when the window reopens, so a
  sender that was stopped this way resumes only at its next retransmission or delayed-ack
  timer: keep credit flowing, e.g. a large enough count, to avoid that.)

  **Batching.** A high-rate consumer can take several messages per Erlang message:
  `set_batch(specter, dc, n)` makes the channel deliver up to `n` messages already waiting
  as one `{:data_channel_messages, dc, [message, ...]}` (each message still takes one unit of
  credit). Nothing waits to fill a batch.

  **Sending** never drops a message silently. `send/3` queues it and returns at once; it
  answers `{:error, :buffer_full}` when the instance's `:data_channel_send_buffer_limit`
  bytes are already waiting (retry after `{:data_channel_buffered_amount_low, dc}`), and
  `{:error, :too_large}` above the negotiated maximum message size (`info/2`).
  `buffered_amount/2` is what was accepted and not yet acknowledged by the peer; the low
  event fires each time it falls to `set_buffered_amount_low_threshold/3`'s value (0 by
  default) after being above it, as W3C's `bufferedamountlow`.

  ## Example

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc_a} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, pc_b} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc_a, "chat")
      iex> assert_receive {:data_channel_created, ^pc_a, ^dc}
      iex> :ok = Specter.PeerConnection.create_offer(specter, pc_a)
      iex> assert_receive {:offer, ^pc_a, offer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc_a, offer)
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_b, offer)
      iex> :ok = Specter.PeerConnection.create_answer(specter, pc_b)
      iex> assert_receive {:answer, ^pc_b, answer}
      iex> :ok = Specter.PeerConnection.set_local_description(specter, pc_b, answer)
      iex> :ok = Specter.PeerConnection.set_remote_description(specter, pc_a, answer)
      iex> :ok = Specter.PeerConnection.await_connected(specter, [pc_a, pc_b])
      iex> assert_receive {:data_channel_open, ^dc}, 5_000
      iex> assert_receive {:data_channel, ^pc_b, remote}, 5_000
      iex> :ok = Specter.DataChannel.send_text(specter, dc, "hello")
      iex> assert_receive {:data_channel_message, ^remote, {:text, "hello"}}, 5_000
      iex> :ok = Specter.DataChannel.send(specter, remote, <<1, 2, 3>>)
      iex> assert_receive {:data_channel_message, ^dc, {:binary, <<1, 2, 3>>}}, 5_000
  """

  alias Specter.Native

  @typedoc "A data channel, named by a UUID."
  @type t() :: Specter.uuid()

  @typedoc "`RTCDataChannelInit` options."
  @type init_option() ::
          {:ordered, boolean()}
          | {:max_retransmits, non_neg_integer()}
          | {:max_packet_life_time, non_neg_integer()}
          | {:protocol, String.t()}
          | {:negotiated, boolean()}
          | {:id, non_neg_integer()}

  @typedoc "Ready state of a channel."
  @type ready_state_t() :: :connecting | :open | :closing | :closed

  @typedoc "Receive mode, as `:gen_tcp`'s `active`."
  @type active_t() :: boolean() | :once | pos_integer()

  @typedoc "Message sent when `create/4` fails on the connection."
  @type error_msg_t() ::
          {:create_data_channel_error, Specter.PeerConnection.t(), Specter.error()}

  @typedoc "Message sent to the owner of a channel's connection."
  @type event_t() ::
          {:data_channel_open, t()}
          | {:data_channel_message, t(), {:text | :binary, binary()}}
          | {:data_channel_messages, t(), [{:text | :binary, binary()}]}
          | {:data_channel_passive, t()}
          | {:data_channel_buffered_amount_low, t()}
          | {:data_channel_error, t(), Specter.error()}
          | {:data_channel_closing, t()}
          | {:data_channel_close, t()}

  @init_keys [
    :ordered,
    :max_retransmits,
    :max_packet_life_time,
    :protocol,
    :negotiated,
    :id,
    :active
  ]

  @doc """
  Creates a data channel on a connection and returns its handle at once. The caller gets
  `{:data_channel_created, pc, dc}` when webrtc-rs has created it (or
  `{:create_data_channel_error, pc, reason}`); the owner gets `{:data_channel_open, dc}`
  once it can send.

  Options are `RTCDataChannelInit`'s: `ordered` (default `true`), `max_retransmits` or
  `max_packet_life_time` (ms) for partial reliability, `protocol`, and `negotiated: true`
  with an `id` for a channel both sides create out-of-band (no `{:data_channel, pc, dc}`
  announcement then: each side uses its own handle). `active:` sets the receive mode and
  `batch:` the batching (`set_batch/3`).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "telemetry", ordered: false, max_retransmits: 0)
      iex> assert_receive {:data_channel_created, ^pc, ^dc}
      iex> {:ok, %{label: "telemetry", ordered: false, max_retransmits: 0}} = Specter.DataChannel.info(specter, dc)
      iex> Specter.DataChannel.create(specter, pc, "both", max_retransmits: 1, max_packet_life_time: 10)
      {:error, {:invalid_option, :max_retransmits}}
  """
  @spec create(Specter.t(), Specter.PeerConnection.t(), String.t(), [init_option()]) ::
          {:ok, t()} | {:error, Specter.error()}
  def create(specter, pc, label, opts \\ [])

  def create(specter, pc, label, opts) when is_list(opts) do
    {batch, opts} = if Keyword.keyword?(opts), do: Keyword.pop(opts, :batch, 1), else: {1, opts}

    with {:ok, init} <- init_options(opts),
         :ok <- valid_batch(batch),
         {:ok, dc} <- Native.dc_create(Specter.native(specter), pc, label, init, :pc_and_channel) do
      if batch != 1, do: :ok = set_batch(specter, dc, batch)
      {:ok, dc}
    end
  end

  def create(_specter, _pc, _label, _opts), do: {:error, {:invalid_argument, :options}}

  defp valid_batch(n) when is_integer(n) and n >= 1 and n <= 65_536, do: :ok
  defp valid_batch(_), do: {:error, {:invalid_option, :batch}}

  @doc """
  Makes the channel deliver up to `n` messages that are already waiting as one
  `{:data_channel_messages, dc, [message, ...]}` (1, the default, delivers each as
  `{:data_channel_message, dc, message}`). Also `batch: n` when creating.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "telemetry", batch: 64)
      iex> Specter.DataChannel.set_batch(specter, dc, 0)
      {:error, {:invalid_option, :batch}}
  """
  @spec set_batch(Specter.t(), t(), pos_integer()) :: :ok | {:error, Specter.error()}
  def set_batch(specter, dc, n), do: Native.dc_set_batch(Specter.native(specter), dc, n)

  @doc """
  Sends a binary message. Returns `{:error, {:invalid_state, "connecting"}}` before the
  channel opens, `{:error, :buffer_full}` when more than the instance's
  `:data_channel_send_buffer_limit` is waiting to be sent, `{:error, :too_large}` above the
  negotiated maximum message size and `{:error, :closed}` once closed.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.DataChannel.send(specter, "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c", "hi")
      {:error, :not_found}
  """
  @spec send(Specter.t(), t(), binary()) :: :ok | {:error, Specter.error()}
  def send(specter, dc, data) when is_binary(data),
    do: Native.dc_send(Specter.native(specter), dc, data, false)

  def send(_specter, _dc, _data), do: {:error, {:invalid_argument, :data}}

  @doc """
  Sends a text message (UTF-8).

      iex> {:ok, specter} = Specter.init()
      iex> Specter.DataChannel.send_text(specter, "6a2f5d8e-1c3b-4e7f-9a0d-2b4c6e8f0a1c", <<255>>)
      {:error, :not_found}
  """
  @spec send_text(Specter.t(), t(), String.t()) :: :ok | {:error, Specter.error()}
  def send_text(specter, dc, text) when is_binary(text),
    do: Native.dc_send(Specter.native(specter), dc, text, true)

  def send_text(_specter, _dc, _text), do: {:error, {:invalid_argument, :data}}

  @doc """
  Closes the channel after the messages already queued are sent. The owner gets
  `{:data_channel_close, dc}` when it is closed.

      iex> {:ok, specter} = Specter.init()
      iex> Specter.DataChannel.close(specter, "not-a-channel")
      {:error, :not_found}
  """
  @spec close(Specter.t(), t()) :: :ok | {:error, Specter.error()}
  def close(specter, dc), do: Native.dc_close(Specter.native(specter), dc)

  @doc """
  The channel's ready state.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "chat")
      iex> Specter.DataChannel.ready_state(specter, dc)
      {:ok, :connecting}
  """
  @spec ready_state(Specter.t(), t()) :: {:ok, ready_state_t()} | {:error, Specter.error()}
  def ready_state(specter, dc), do: Native.dc_ready_state(Specter.native(specter), dc)

  @doc """
  What the channel was created with: `:label`, `:protocol`, `:ordered`, `:negotiated`,
  `:id` (the SCTP stream id: known at once for negotiated channels, once open for the
  others), `:max_retransmits`, `:max_packet_life_time`, `:max_message_size` (negotiated,
  once open), `:buffered_amount_low_threshold` and its `:peer_connection`.

  For a channel the remote peer opened, `:max_retransmits` and `:max_packet_life_time`
  read `nil`: webrtc-rs 0.21.1 drops them from the DCEP OPEN message. Partial reliability is
  applied by the sending side, so only what the creator sends follows them: what the side
  that accepted the channel sends is delivered reliably and in order, whatever the creator
  asked for (measured in `test/specter/network_faults_test.exs` on a link losing 5%: 0 of
  300 messages lost from the accepting side, ~6% from the creator). Create a partially
  reliable channel on the side that sends the loss-tolerant data.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "control", negotiated: true, id: 7, protocol: "json")
      iex> {:ok, info} = Specter.DataChannel.info(specter, dc)
      iex> {info.label, info.protocol, info.negotiated, info.id, info.peer_connection == pc}
      {"control", "json", true, 7, true}
  """
  @spec info(Specter.t(), t()) :: {:ok, map()} | {:error, Specter.error()}
  def info(specter, dc), do: Native.dc_info(Specter.native(specter), dc)

  @doc """
  Sets how incoming messages are delivered: `true`, `false`, `:once` or a count (see the
  module documentation). Integers add to a remaining count, like `:inet.setopts/2`.

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "chat", active: false)
      iex> Specter.DataChannel.set_active(specter, dc, 10)
      :ok
      iex> Specter.DataChannel.set_active(specter, dc, :sometimes)
      {:error, {:invalid_option, :active}}
  """
  @spec set_active(Specter.t(), t(), active_t()) :: :ok | {:error, Specter.error()}
  def set_active(specter, dc, active),
    do: Native.dc_set_active(Specter.native(specter), dc, active)

  @doc """
  Receives one message from a passive channel, like `:gen_tcp.recv/3`: asks for one message
  (`set_active(specter, dc, :once)`) and waits up to `timeout` ms for it. Call it from the
  owner. On timeout the channel is passive again, but a message already on its way may still
  arrive in the mailbox. A timeout that is neither `:infinity` nor 0..4_294_967_295 ms is
  `{:error, {:invalid_argument, :timeout}}`.
  """
  @spec recv(Specter.t(), t(), timeout()) ::
          {:ok, {:text | :binary, binary()}} | {:error, :timeout | :closed | Specter.error()}
  def recv(specter, dc, timeout \\ 5_000)

  def recv(specter, dc, timeout)
      when timeout == :infinity or (is_integer(timeout) and timeout in 0..4_294_967_295) do
    with :ok <- set_active(specter, dc, :once) do
      receive do
        {:data_channel_message, ^dc, message} ->
          {:ok, message}

        {:data_channel_close, ^dc} ->
          {:error, :closed}
      after
        timeout ->
          set_active(specter, dc, false)
          {:error, :timeout}
      end
    end
  end

  def recv(_specter, _dc, _timeout), do: {:error, {:invalid_argument, :timeout}}

  @doc """
  Bytes accepted by `send/3` and not yet acknowledged by the peer (W3C `bufferedAmount`).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "chat")
      iex> Specter.DataChannel.buffered_amount(specter, dc)
      {:ok, 0}
  """
  @spec buffered_amount(Specter.t(), t()) :: {:ok, non_neg_integer()} | {:error, Specter.error()}
  def buffered_amount(specter, dc), do: Native.dc_buffered_amount(Specter.native(specter), dc)

  @doc """
  Sets the buffered amount at or below which `{:data_channel_buffered_amount_low, dc}` is
  sent (W3C `bufferedAmountLowThreshold`, 0 by default).

      iex> {:ok, specter} = Specter.init()
      iex> {:ok, pc} = Specter.PeerConnection.new(specter, Specter.PeerConnection.default_api!(specter))
      iex> {:ok, dc} = Specter.DataChannel.create(specter, pc, "chat")
      iex> :ok = Specter.DataChannel.set_buffered_amount_low_threshold(specter, dc, 65_536)
      iex> {:ok, %{buffered_amount_low_threshold: 65_536}} = Specter.DataChannel.info(specter, dc)
  """
  @spec set_buffered_amount_low_threshold(Specter.t(), t(), non_neg_integer()) ::
          :ok | {:error, Specter.error()}
  def set_buffered_amount_low_threshold(specter, dc, bytes)
      when is_integer(bytes) and bytes >= 0,
      do: Native.dc_set_buffered_amount_low_threshold(Specter.native(specter), dc, bytes)

  def set_buffered_amount_low_threshold(_specter, _dc, _bytes),
    do: {:error, {:invalid_argument, :threshold}}

  defp init_options(opts) when is_list(opts) do
    Enum.reduce_while(opts, {:ok, %{}}, fn
      {key, value}, {:ok, acc} when key in @init_keys ->
        if valid_init?(key, value),
          do: {:cont, {:ok, Map.put(acc, key, value)}},
          else: {:halt, {:error, {:invalid_option, key}}}

      {key, _}, _ when is_atom(key) ->
        {:halt, {:error, {:invalid_option, key}}}

      _, _ ->
        {:halt, {:error, {:invalid_argument, :options}}}
    end)
  end

  defp init_options(_), do: {:error, {:invalid_argument, :options}}

  defp valid_init?(key, v) when key in [:ordered, :negotiated], do: is_boolean(v)

  defp valid_init?(:active, v),
    do: is_boolean(v) or v == :once or (is_integer(v) and v > 0 and v <= 2_147_483_647)

  defp valid_init?(:protocol, v), do: is_binary(v) and byte_size(v) <= 65_535

  defp valid_init?(key, v) when key in [:max_retransmits, :max_packet_life_time, :id],
    do: is_integer(v) and v >= 0 and v <= 65_535
end
