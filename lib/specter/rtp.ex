defmodule Specter.RTP do
  @moduledoc """
  RTP packets (RFC 3550) as Elixir structs: what `{:rtp, track, packet}` carries and what
  `Specter.TrackLocalStaticRTP.write_rtp/3` takes, without a hex dependency.

      iex> packet = %Specter.RTP{payload_type: 96, sequence_number: 7, timestamp: 3000, ssrc: 42, marker: true, payload: "frame"}
      iex> {:ok, decoded} = packet |> Specter.RTP.encode() |> Specter.RTP.decode()
      iex> decoded == packet
      true
  """

  import Bitwise, only: [<<<: 2]

  @typedoc """
  A packet. `extensions` are `{id, data}` pairs of a one-byte (RFC 8285, profile `0xBEDE`)
  or two-byte (`0x1000`) header extension block; `extension_profile` is that block's
  profile, or `nil` when there is none. `padding` counts padding bytes after the payload.
  """
  @type t() :: %__MODULE__{
          marker: boolean(),
          payload_type: 0..127,
          sequence_number: 0..65_535,
          timestamp: 0..4_294_967_295,
          ssrc: 0..4_294_967_295,
          csrc: [0..4_294_967_295],
          extension_profile: 0..65_535 | nil,
          extensions: [{non_neg_integer(), binary()}],
          payload: binary(),
          padding: non_neg_integer()
        }

  defstruct marker: false,
            payload_type: 0,
            sequence_number: 0,
            timestamp: 0,
            ssrc: 0,
            csrc: [],
            extension_profile: nil,
            extensions: [],
            payload: <<>>,
            padding: 0

  @doc """
  Decodes a marshalled RTP packet.

      iex> {:ok, p} = Specter.RTP.decode(<<0x80, 0xE0, 0, 1, 0, 0, 0x0B, 0xB8, 0, 0, 0, 42, "hi">>)
      iex> {p.marker, p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.payload}
      {true, 96, 1, 3000, 42, "hi"}
      iex> Specter.RTP.decode(<<0x80, 0xE0>>)
      {:error, :invalid_packet}
  """
  @spec decode(binary()) :: {:ok, t()} | {:error, :invalid_packet}
  def decode(
        <<2::2, padding?::1, extension?::1, cc::4, marker::1, pt::7, seq::16, ts::32, ssrc::32,
          rest::binary>>
      ) do
    with {:ok, csrc, rest} <- csrcs(rest, cc, []),
         {:ok, profile, extensions, rest} <- extension_block(rest, extension?),
         {:ok, payload, padding} <- strip_padding(rest, padding?) do
      {:ok,
       %__MODULE__{
         marker: marker == 1,
         payload_type: pt,
         sequence_number: seq,
         timestamp: ts,
         ssrc: ssrc,
         csrc: csrc,
         extension_profile: profile,
         extensions: extensions,
         payload: payload,
         padding: padding
       }}
    end
  end

  def decode(_), do: {:error, :invalid_packet}

  defp csrcs(rest, 0, acc), do: {:ok, Enum.reverse(acc), rest}
  defp csrcs(<<c::32, rest::binary>>, n, acc), do: csrcs(rest, n - 1, [c | acc])
  defp csrcs(_, _, _), do: {:error, :invalid_packet}

  defp extension_block(rest, 0), do: {:ok, nil, [], rest}

  defp extension_block(<<profile::16, words::16, rest::binary>>, 1)
       when byte_size(rest) >= words * 4 do
    <<block::binary-size(words * 4), rest::binary>> = rest

    case elements(profile, block, []) do
      {:ok, extensions} -> {:ok, profile, extensions, rest}
      :error -> {:error, :invalid_packet}
    end
  end

  defp extension_block(_, _), do: {:error, :invalid_packet}

  # One-byte elements (RFC 8285 4.2): id 15 ends the block, 0 is padding.
  defp elements(0xBEDE, <<>>, acc), do: {:ok, Enum.reverse(acc)}
  defp elements(0xBEDE, <<0, rest::binary>>, acc), do: elements(0xBEDE, rest, acc)
  defp elements(0xBEDE, <<15::4, _::4, _::binary>>, acc), do: {:ok, Enum.reverse(acc)}

  defp elements(0xBEDE, <<id::4, len::4, rest::binary>>, acc) when byte_size(rest) > len do
    <<data::binary-size(len + 1), rest::binary>> = rest
    elements(0xBEDE, rest, [{id, data} | acc])
  end

  # Two-byte elements (RFC 8285 4.3).
  defp elements(profile, <<>>, acc) when profile in 0x1000..0x100F, do: {:ok, Enum.reverse(acc)}

  defp elements(profile, <<0, rest::binary>>, acc) when profile in 0x1000..0x100F,
    do: elements(profile, rest, acc)

  defp elements(profile, <<id, len, rest::binary>>, acc)
       when profile in 0x1000..0x100F and byte_size(rest) >= len do
    <<data::binary-size(len), rest::binary>> = rest
    elements(profile, rest, [{id, data} | acc])
  end

  # Any other profile: the block as one opaque element (none when the block is empty).
  defp elements(profile, <<>>, []) when profile != 0xBEDE and profile not in 0x1000..0x100F,
    do: {:ok, []}

  defp elements(profile, block, []) when profile != 0xBEDE and profile not in 0x1000..0x100F,
    do: {:ok, [{0, block}]}

  defp elements(_, _, _), do: :error

  defp strip_padding(rest, 0), do: {:ok, rest, 0}

  defp strip_padding(rest, 1) when byte_size(rest) > 0 do
    n = :binary.last(rest)

    if n > 0 and n <= byte_size(rest),
      do: {:ok, binary_part(rest, 0, byte_size(rest) - n), n},
      else: {:error, :invalid_packet}
  end

  defp strip_padding(_, _), do: {:error, :invalid_packet}

  @doc """
  Encodes a packet (one-byte header extensions when `extension_profile` is `0xBEDE`,
  two-byte ones for `0x1000..0x100F`, any other profile one `{0, data}` element whose data
  is a multiple of 4 bytes). A packet that cannot be encoded as it says, because a field
  is out of range or of the wrong type (more than 15 CSRCs, a one-byte extension id outside
  1..14 or data outside 1..16 bytes, a padding count over 255, ...), or anything that is
  not a `%Specter.RTP{}`, is `{:error, :invalid_packet}`: whatever `encode/1` returns as a
  binary, `decode/1` turns back into the same struct.

      iex> Specter.RTP.encode(%Specter.RTP{payload_type: 111, sequence_number: 1, timestamp: 960, ssrc: 7, payload: <<1, 2>>})
      <<0x80, 111, 0, 1, 0, 0, 3, 192, 0, 0, 0, 7, 1, 2>>
      iex> Specter.RTP.encode(%Specter.RTP{payload_type: 200})
      {:error, :invalid_packet}
  """
  @spec encode(t()) :: binary() | {:error, :invalid_packet}
  def encode(packet) do
    if valid?(packet), do: encode_valid(packet), else: {:error, :invalid_packet}
  end

  defguardp u(v, bits) when is_integer(v) and v >= 0 and v < 1 <<< bits

  defp valid?(%__MODULE__{} = p) do
    is_boolean(p.marker) and u(p.payload_type, 7) and u(p.sequence_number, 16) and
      u(p.timestamp, 32) and u(p.ssrc, 32) and valid_csrc?(p.csrc) and is_binary(p.payload) and
      u(p.padding, 8) and valid_extensions?(p.extension_profile, p.extensions)
  end

  defp valid?(_), do: false

  defp valid_csrc?(csrc) do
    is_list(csrc) and Specter.Options.proper_list?(csrc) and length(csrc) <= 15 and
      Enum.all?(csrc, &u(&1, 32))
  end

  defp valid_extensions?(nil, extensions), do: extensions == []

  defp valid_extensions?(profile, extensions) when u(profile, 16) and is_list(extensions) do
    Specter.Options.proper_list?(extensions) and
      Enum.all?(extensions, fn
        {id, data} when is_binary(data) -> valid_element?(profile, id, data)
        _ -> false
      end) and
      (profile == 0xBEDE or profile in 0x1000..0x100F or length(extensions) <= 1) and
      block_size(profile, extensions) <= 0xFFFF * 4
  end

  defp valid_extensions?(_, _), do: false

  defp valid_element?(0xBEDE, id, data),
    do: is_integer(id) and id in 1..14 and byte_size(data) in 1..16

  defp valid_element?(profile, id, data) when profile in 0x1000..0x100F,
    do: is_integer(id) and id in 1..255 and byte_size(data) <= 255

  # Any other profile: one opaque element, id 0, whole 32-bit words (decode/1 cannot tell
  # padding from data there).
  defp valid_element?(_, id, data), do: id == 0 and rem(byte_size(data), 4) == 0

  defp block_size(profile, extensions) do
    per = if profile == 0xBEDE, do: 1, else: 2

    Enum.reduce(extensions, 0, fn {_, data}, acc ->
      acc + byte_size(data) + if(profile == 0xBEDE or profile in 0x1000..0x100F, do: per, else: 0)
    end)
  end

  defp encode_valid(p) do
    extension = if p.extension_profile == nil, do: 0, else: 1
    padding = if p.padding > 0, do: 1, else: 0

    header =
      <<2::2, padding::1, extension::1, length(p.csrc)::4, bool(p.marker)::1, p.payload_type::7,
        p.sequence_number::16, p.timestamp::32, p.ssrc::32>>

    csrc = for c <- p.csrc, into: <<>>, do: <<c::32>>
    pad = if p.padding > 0, do: <<0::size((p.padding - 1) * 8), p.padding>>, else: <<>>
    header <> csrc <> extension_bytes(p) <> p.payload <> pad
  end

  defp bool(true), do: 1
  defp bool(false), do: 0

  defp extension_bytes(%{extension_profile: nil}), do: <<>>

  defp extension_bytes(%{extension_profile: profile, extensions: extensions}) do
    body =
      for {id, data} <- extensions, into: <<>> do
        case profile do
          0xBEDE -> <<id::4, byte_size(data) - 1::4, data::binary>>
          p when p in 0x1000..0x100F -> <<id, byte_size(data), data::binary>>
          _ -> data
        end
      end

    pad = rem(4 - rem(byte_size(body), 4), 4)
    body = body <> <<0::size(pad * 8)>>
    <<profile::16, div(byte_size(body), 4)::16, body::binary>>
  end
end
