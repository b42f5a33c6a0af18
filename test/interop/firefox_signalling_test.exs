defmodule Specter.Interop.FirefoxSignallingTest do
  # The signalling demo page (priv/static/demo) in headless Firefox calls a Specter.EchoPeer:
  # the test is in test/support/interop/signalling_cases.ex, shared by both browsers.
  use Specter.Interop.SignallingCases, browser: :firefox
end
