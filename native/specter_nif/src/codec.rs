//! `Specter.RtpCodecCapability` as the NIF receives it, and the default codecs.
//!
//! Elixir validates the struct and passes it as a tuple, `{mime_type, clock_rate, channels,
//! sdp_fmtp_line, [{type, parameter}]}` (`Specter.RtpCodecCapability.to_native/1`), so a
//! malformed struct (an improper feedback list, say) never reaches rustler's list decoder.

use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RtpCodecKind};
use rustler::Term;

use crate::error::{Error, NifResult};
use crate::nif::int_arg;

type CodecTuple<'a> = (String, Term<'a>, Term<'a>, String, Term<'a>);

/// The codec a bare kind names (Opus or VP8, the defaults every browser has).
pub fn default(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// Decodes a codec capability; a bare kind (`"audio"`, `"video"`) as the mime type names
/// the kind's default codec.
pub fn decode(term: Term<'_>) -> NifResult<(RTCRtpCodec, RtpCodecKind)> {
    let bad = |_| Error::InvalidArgument("codec");
    let (mime_type, clock_rate, channels, sdp_fmtp_line, feedback): CodecTuple<'_> =
        term.decode().map_err(bad)?;
    // Decoding a `Vec` walks the list with rustler's iterator, which panics on an improper
    // list: count it first.
    feedback.list_length().map_err(bad)?;
    let feedback: Vec<(String, String)> = feedback.decode().map_err(bad)?;
    let clock_rate: u32 = int_arg(clock_rate).ok_or(Error::InvalidArgument("codec"))?;
    let channels: u16 = int_arg(channels).ok_or(Error::InvalidArgument("codec"))?;
    let lower = mime_type.to_ascii_lowercase();
    let kind = if lower.starts_with("audio") {
        RtpCodecKind::Audio
    } else if lower.starts_with("video") {
        RtpCodecKind::Video
    } else {
        return Err(Error::InvalidCodec(format!(
            "mime_type {mime_type:?} is neither audio nor video"
        )));
    };
    let rtcp_feedback =
        feedback.into_iter().map(|(typ, parameter)| RTCPFeedback { typ, parameter }).collect();
    let codec = if lower == "audio" || lower == "video" {
        RTCRtpCodec { rtcp_feedback, ..default(kind) }
    } else {
        RTCRtpCodec { mime_type, clock_rate, channels, sdp_fmtp_line, rtcp_feedback }
    };
    Ok((codec, kind))
}
