defmodule SpecterTest do
  use ExUnit.Case, async: true
  doctest Specter
  doctest Specter.JSON
  doctest Specter.RtpCodecCapability
  doctest Specter.TrackLocalStaticSample
end
