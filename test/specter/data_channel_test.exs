defmodule Specter.DataChannelTest do
  use ExUnit.Case, async: true
  doctest Specter.DataChannel
end
