//! `Specter.TrackLocalStaticSample`: a local track fed with encoded samples (Opus, VP8,
//! H264, ...) that Specter packetizes. See `track_local` for bindings and writing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RtpCodecKind};
use rustler::{Binary, Env, Term};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::specter::{instance, int_arg, lock, new_id, normalize_id, string_arg, Instance};
use crate::track_local::{Flavor, TrackEntry, Write};

/// `%Specter.RtpCodecCapability{}` as Elixir passes it:
/// `{mime_type, clock_rate, channels, sdp_fmtp_line, [{type, parameter}]}`.
type CodecTuple<'a> = (String, Term<'a>, Term<'a>, String, Term<'a>);

/// Decodes a codec capability; a bare kind (`"audio"`, `"video"`) names the kind's default
/// codec (Opus, VP8).
pub fn decode_codec(term: Term<'_>) -> NifResult<(RTCRtpCodec, RtpCodecKind)> {
    let (mime_type, clock_rate, channels, sdp_fmtp_line, feedback): CodecTuple<'_> =
        term.decode().map_err(|_| Error::InvalidArgument("codec"))?;
    // Decoding a `Vec` walks the list with rustler's iterator, which panics on an improper
    // list: count it first.
    feedback
        .list_length()
        .map_err(|_| Error::InvalidArgument("codec"))?;
    let feedback: Vec<(String, String)> = feedback
        .decode()
        .map_err(|_| Error::InvalidArgument("codec"))?;
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
    let rtcp_feedback = feedback
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback { typ, parameter })
        .collect();
    let codec = match lower.as_str() {
        "audio" => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback,
        },
        "video" => RTCRtpCodec {
            mime_type: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback,
        },
        _ => RTCRtpCodec {
            mime_type,
            clock_rate,
            channels,
            sdp_fmtp_line,
            rtcp_feedback,
        },
    };
    Ok((codec, kind))
}

/// Creates a local track of either flavor.
pub fn new_track(
    specter: Term<'_>,
    codec: Term<'_>,
    track_id: Term<'_>,
    stream_id: Term<'_>,
    flavor: Flavor,
) -> NifResult<String> {
    let s = instance(specter)?;
    let (codec, kind) = decode_codec(codec)?;
    let track_id = string_arg(track_id, "id")?;
    let stream_id = string_arg(stream_id, "stream_id")?;
    let id = new_id();
    let entry = TrackEntry::new(id.clone(), flavor, codec, kind, track_id, stream_id);
    lock(&s.inner.tracks).insert(id.clone(), entry);
    Ok(id)
}

/// Finds a local track of this instance (`:invalid_track` otherwise).
pub fn local_track(inst: &Instance, track: Term<'_>) -> NifResult<Arc<TrackEntry>> {
    let key = track
        .decode::<String>()
        .ok()
        .and_then(|t| normalize_id(&t))
        .ok_or(Error::InvalidTrack)?;
    let found = lock(&inst.tracks).get(&key).cloned();
    found.ok_or(Error::InvalidTrack)
}

#[rustler::nif]
fn track_new<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    codec: Term<'a>,
    track_id: Term<'a>,
    stream_id: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (decoded, _) = decode_codec(codec)?;
        if decoded.payloader().is_err() {
            return Err(Error::InvalidCodec(format!(
                "no packetizer for {}; send it with Specter.TrackLocalStaticRTP",
                decoded.mime_type
            )));
        }
        new_track(specter, codec, track_id, stream_id, Flavor::Sample).map(|id| (atoms::ok(), id))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn track_exists(specter: Term<'_>, track: Term<'_>) -> bool {
    instance(specter).is_ok_and(|s| local_track(&s.inner, track).is_ok())
}

/// Queues one encoded sample lasting `duration_us` for every connection the track is on.
#[rustler::nif]
fn track_write_sample<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    track: Term<'a>,
    data: Term<'a>,
    duration_us: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let entry = local_track(&s.inner, track)?;
        if entry.flavor != Flavor::Sample {
            return Err(Error::InvalidTrack);
        }
        let bin: Binary<'_> = data.decode().map_err(|_| Error::InvalidArgument("data"))?;
        let us: u64 = duration_us
            .decode()
            .ok()
            .filter(|us| *us > 0 && *us <= 10_000_000)
            .ok_or(Error::InvalidArgument("duration"))?;
        entry.submit(
            &s.inner.handle,
            Write::Sample(
                Bytes::copy_from_slice(bin.as_slice()),
                Duration::from_micros(us),
            ),
        )?;
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// Forgets a local track (either flavor): its senders stay on their connections but send
/// nothing until `replace_track` gives them another track; forwarding into it stops.
#[rustler::nif]
fn track_close<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let key = track
            .decode::<String>()
            .ok()
            .and_then(|t| normalize_id(&t))
            .ok_or(Error::InvalidTrack)?;
        let removed = lock(&s.inner.tracks).remove(&key);
        let entry = removed.ok_or(Error::InvalidTrack)?;
        for b in lock(&entry.bindings).drain(..) {
            *lock(&b.entry) = std::sync::Weak::new();
        }
        *lock(&entry.source) = std::sync::Weak::new();
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
