defmodule Specter.PeerConnectionTest do
  use ExUnit.Case, async: true
  doctest Specter.PeerConnection
end
