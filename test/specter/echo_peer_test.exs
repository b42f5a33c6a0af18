defmodule Specter.EchoPeerTest do
  use ExUnit.Case, async: true
  doctest Specter.EchoPeer
end
