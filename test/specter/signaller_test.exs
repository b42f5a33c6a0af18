defmodule Specter.SignallerTest do
  use ExUnit.Case, async: true
  doctest Specter.Signaller
  doctest Specter.Signaller.Local
end
