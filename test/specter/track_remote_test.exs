defmodule Specter.TrackRemoteTest do
  use ExUnit.Case, async: true
  doctest Specter.TrackRemote
end
