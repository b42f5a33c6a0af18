defmodule Specter.MediaFileTest do
  use ExUnit.Case, async: true
  doctest Specter.MediaFile
end
