defmodule Specter.Interop.ChromiumDataChannelTest do
  # Data channels between Specter and Debian's headless Chromium (Playwright): the tests are
  # in test/support/interop/data_channel_cases.ex, shared with Firefox.
  use Specter.Interop.DataChannelCases, browser: :chromium
end
