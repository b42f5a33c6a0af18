defmodule Specter.RTPTest do
  use ExUnit.Case, async: true
  doctest Specter.RTP

  alias Specter.RTP

  test "round trips CSRCs, one- and two-byte extensions and padding" do
    for profile <- [0xBEDE, 0x1000] do
      packet = %RTP{
        marker: true,
        payload_type: 100,
        sequence_number: 65_535,
        timestamp: 4_294_967_295,
        ssrc: 1,
        csrc: [2, 3],
        extension_profile: profile,
        extensions: [{1, <<1, 2, 3>>}, {3, <<9>>}],
        payload: :binary.copy(<<7>>, 33),
        padding: 4
      }

      assert {:ok, ^packet} = packet |> RTP.encode() |> RTP.decode()
    end
  end

  test "refuses truncated and malformed packets" do
    good =
      RTP.encode(%RTP{
        csrc: [5],
        extension_profile: 0xBEDE,
        extensions: [{2, <<1, 2>>}],
        payload: "abc",
        padding: 2
      })

    assert {:ok, _} = RTP.decode(good)

    for n <- 0..(byte_size(good) - 1) do
      assert {:error, :invalid_packet} = RTP.decode(binary_part(good, 0, n)), "length #{n}"
    end

    assert {:error, :invalid_packet} = RTP.decode(<<1::2, 0::6, 0::88>>)
    assert {:error, :invalid_packet} = RTP.decode(:not_binary)
  end
end
