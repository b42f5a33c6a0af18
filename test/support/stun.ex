defmodule Specter.Test.Stun do
  @moduledoc false
  # Just enough STUN (RFC 8489) and ICE (RFC 8445 §7.1.2) to play the remote side of a
  # connectivity check by hand: a Binding request with USERNAME, PRIORITY, ICE-CONTROLLED,
  # MESSAGE-INTEGRITY and FINGERPRINT, and the decoding of the answer.

  import Bitwise

  @cookie 0x2112A442

  @doc """
  A Binding request from the remote (`remote_ufrag`) to the local agent (`local_ufrag`,
  `local_pwd`), as the controlled agent. Returns `{transaction_id, datagram}`.
  """
  def binding_request(local_ufrag, remote_ufrag, local_pwd) do
    tid = :crypto.strong_rand_bytes(12)
    username = "#{local_ufrag}:#{remote_ufrag}"

    attrs =
      attribute(0x0006, username) <>
        attribute(0x0024, <<0x6E7F1EFF::32>>) <>
        attribute(0x8029, :crypto.strong_rand_bytes(8))

    # MESSAGE-INTEGRITY: HMAC-SHA1 over the message so far, its length counting the
    # attribute itself (24 bytes).
    head = header(0x0001, byte_size(attrs) + 24, tid)
    mac = :crypto.mac(:hmac, :sha, local_pwd, head <> attrs)
    attrs = attrs <> attribute(0x0008, mac)

    # FINGERPRINT: CRC-32 of the message so far, XORed with 0x5354554E.
    head = header(0x0001, byte_size(attrs) + 8, tid)
    crc = bxor(:erlang.crc32(head <> attrs), 0x5354554E)
    attrs = attrs <> attribute(0x8028, <<crc::32>>)
    {tid, header(0x0001, byte_size(attrs), tid) <> attrs}
  end

  @doc """
  Decodes a STUN message: `{:ok, %{class: :success | :error | :request | :indication,
  method: integer, transaction_id: binary, xor_mapped_address: {ip, port} | nil}}`.
  """
  def decode(<<0::2, type::14, len::16, @cookie::32, tid::binary-12, rest::binary>>)
      when byte_size(rest) == len do
    class =
      case band(type, 0x0110) do
        0x0000 -> :request
        0x0010 -> :indication
        0x0100 -> :success
        0x0110 -> :error
      end

    attrs = attributes(rest, %{})

    {:ok,
     %{
       class: class,
       method: band(type, 0x3EEF),
       transaction_id: tid,
       xor_mapped_address: xor_address(attrs[0x0020])
     }}
  end

  def decode(_), do: :error

  @doc "The ICE username fragment and password of a session description's JSON."
  def credentials(description_json) do
    {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(description_json)
    [_, ufrag] = Regex.run(~r/a=ice-ufrag:(\S+)/, sdp)
    [_, pwd] = Regex.run(~r/a=ice-pwd:(\S+)/, sdp)
    {ufrag, pwd}
  end

  @doc "`{ip, port}` of every UDP host candidate in a session description's JSON."
  def host_candidates(description_json) do
    {:ok, %{"sdp" => sdp}} = Specter.JSON.decode(description_json)

    for [_, ip, port] <- Regex.scan(~r/a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host/, sdp) do
      {:ok, addr} = :inet.parse_address(String.to_charlist(ip))
      {addr, String.to_integer(port)}
    end
  end

  defp header(type, len, tid), do: <<type::16, len::16, @cookie::32, tid::binary>>

  defp attribute(type, value) do
    pad = rem(4 - rem(byte_size(value), 4), 4)
    <<type::16, byte_size(value)::16, value::binary, 0::size(pad * 8)>>
  end

  defp attributes(<<type::16, len::16, rest::binary>>, acc) when byte_size(rest) >= len do
    pad = rem(4 - rem(len, 4), 4)
    <<value::binary-size(len), rest::binary>> = rest

    rest =
      if byte_size(rest) >= pad, do: binary_part(rest, pad, byte_size(rest) - pad), else: <<>>

    attributes(rest, Map.put_new(acc, type, value))
  end

  defp attributes(_, acc), do: acc

  defp xor_address(<<_::8, 0x01, port::16, ip::32>>) do
    <<a, b, c, d>> = <<bxor(ip, @cookie)::32>>
    {{a, b, c, d}, bxor(port, @cookie >>> 16)}
  end

  defp xor_address(_), do: nil
end
