defmodule Specter.JSON do
  @moduledoc """
  JSON encoding and decoding on Specter's native core (serde_json), for applications that
  have no JSON library: hex.pm packages such as Jason may not be available.

  Decoded objects are maps with string keys; `null` is `nil`. Encoding accepts maps (string
  or atom keys), lists, strings, numbers, booleans and `nil`. Both run on a dirty CPU
  scheduler and accept up to 64 MiB.
  """

  @doc """
  Decodes JSON text.

      iex> Specter.JSON.decode(~s({"type": "offer", "sdp": "v=0", "n": [1, 2.5, null, true]}))
      {:ok, %{"n" => [1, 2.5, nil, true], "sdp" => "v=0", "type" => "offer"}}

      iex> Specter.JSON.decode("{oops")
      {:error, :invalid_json}
  """
  @spec decode(binary()) ::
          {:ok, term()} | {:error, :invalid_json | :too_large | {:invalid_argument, :json}}
  def decode(text), do: Specter.Native.json_decode(text)

  @doc """
  Encodes a term as JSON text.

      iex> Specter.JSON.encode(%{type: "answer", ok: true, list: [1, nil]})
      {:ok, ~s({"list":[1,null],"ok":true,"type":"answer"})}

      iex> Specter.JSON.encode({:not, :json})
      {:error, :invalid_json}
  """
  @spec encode(term()) :: {:ok, String.t()} | {:error, :invalid_json | :too_large}
  def encode(term), do: Specter.Native.json_encode(term)
end
