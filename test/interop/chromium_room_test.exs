defmodule Specter.Interop.ChromiumRoomTest do
  # Two headless Chromium participants and an Elixir one in a Specter.Room (the /room page):
  # the test is in test/support/interop/room_cases.ex, shared by both browsers.
  use Specter.Interop.RoomCases, browser: :chromium
end
