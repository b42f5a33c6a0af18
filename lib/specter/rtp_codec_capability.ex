defmodule Specter.RtpCodecCapability do
  @moduledoc """
  A codec a track is encoded with, as `RTCRtpCodecCapability`.

  `mime_type` is `"audio/opus"`, `"video/VP8"`, ...; its `audio`/`video` prefix decides the
  track's kind. A bare `"audio"` or `"video"` selects that kind's default codec (Opus
  48 kHz stereo, VP8 90 kHz), whatever the other fields say. `rtcp_feedback` is a list of `%{type: "nack", parameter: "pli"}` maps.

      iex> %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2}
      %Specter.RtpCodecCapability{mime_type: "audio/opus", clock_rate: 48_000, channels: 2, sdp_fmtp_line: "", rtcp_feedback: []}
  """

  @type rtcp_feedback() :: %{type: String.t(), parameter: String.t()}

  @type t() :: %__MODULE__{
          mime_type: String.t() | nil,
          clock_rate: non_neg_integer(),
          channels: non_neg_integer(),
          sdp_fmtp_line: String.t(),
          rtcp_feedback: [rtcp_feedback()]
        }

  defstruct mime_type: nil, clock_rate: 90_000, channels: 0, sdp_fmtp_line: "", rtcp_feedback: []

  @doc false
  @spec to_native(t() | term()) :: {:ok, tuple()} | {:error, {:invalid_argument, :codec}}
  def to_native(%__MODULE__{} = c)
      when is_binary(c.mime_type) and is_integer(c.clock_rate) and c.clock_rate >= 0 and
             c.clock_rate <= 0xFFFFFFFF and is_integer(c.channels) and c.channels >= 0 and
             c.channels <= 0xFFFF and is_binary(c.sdp_fmtp_line) and is_list(c.rtcp_feedback) do
    if Specter.Options.proper_list?(c.rtcp_feedback),
      do: feedback_to_native(c),
      else: {:error, {:invalid_argument, :codec}}
  end

  def to_native(_), do: {:error, {:invalid_argument, :codec}}

  defp feedback_to_native(c) do
    feedback =
      Enum.map(c.rtcp_feedback, fn
        %{type: type, parameter: parameter} when is_binary(type) and is_binary(parameter) ->
          {type, parameter}

        %{type: type} when is_binary(type) ->
          {type, ""}

        _ ->
          :error
      end)

    if :error in feedback do
      {:error, {:invalid_argument, :codec}}
    else
      {:ok, {c.mime_type, c.clock_rate, c.channels, c.sdp_fmtp_line, feedback}}
    end
  end
end
