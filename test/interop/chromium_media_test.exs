defmodule Specter.Interop.ChromiumMediaTest do
  # Media between Specter and Debian's headless Chromium (fake camera and microphone): the
  # tests are in test/support/interop/media_cases.ex, shared with Firefox. Chromium 148
  # decodes H.264, so its module also has the H.264 test.
  use Specter.Interop.MediaCases, browser: :chromium, h264: true
end
