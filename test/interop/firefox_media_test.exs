defmodule Specter.Interop.FirefoxMediaTest do
  # Media between Specter and Debian's headless Firefox ESR (fake camera and microphone):
  # the tests are in test/support/interop/media_cases.ex, shared with Chromium. No H.264
  # test: Firefox does H.264 in WebRTC only through the OpenH264 plugin, which it downloads
  # (never here); RTCRtpReceiver.getCapabilities("video") lists VP8, VP9 and AV1.
  use Specter.Interop.MediaCases, browser: :firefox
end
