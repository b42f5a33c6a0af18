defmodule SpecterTest do
  use ExUnit.Case, async: true
  doctest Specter
  doctest Specter.JSON
  doctest Specter.RtpCodecCapability
end
