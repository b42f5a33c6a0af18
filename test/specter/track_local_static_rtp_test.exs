defmodule Specter.TrackLocalStaticRTPTest do
  use ExUnit.Case, async: true
  doctest Specter.TrackLocalStaticRTP
end
