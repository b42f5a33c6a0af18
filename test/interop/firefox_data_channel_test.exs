defmodule Specter.Interop.FirefoxDataChannelTest do
  # Data channels between Specter and Debian's headless Firefox ESR (Puppeteer, WebDriver
  # BiDi): the tests are in test/support/interop/data_channel_cases.ex, shared with Chromium.
  use Specter.Interop.DataChannelCases, browser: :firefox
end
