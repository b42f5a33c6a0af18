defmodule Specter.RtpTransceiverTest do
  use ExUnit.Case, async: true
  doctest Specter.RtpTransceiver
end
