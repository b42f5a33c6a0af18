//! `Specter.TrackLocalStaticSample`: a local track description (codec, track id, stream id).
//!
//! A Specter track is added to any number of connections; each connection gets its own
//! webrtc-rs local track built from the description, so one connection's sender state never
//! touches another's.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rustler::{Encoder, Env, Term};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::rtp_transceiver::RtpSender;

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::peer_connection::{make_op, reply};
use crate::specter::{instance, lock, new_id, normalize_id, string_arg};

/// `%Specter.RtpCodecCapability{}` as Elixir passes it:
/// `{mime_type, clock_rate, channels, sdp_fmtp_line, [{type, parameter}]}`.
type CodecTuple = (String, u32, u16, String, Vec<(String, String)>);

/// One sender created by adding the track to a connection.
#[allow(dead_code)] // sender and track are driven by the media API (write_sample, remove_track)
pub struct Binding {
    pub pc_id: String,
    pub sender_id: String,
    pub sender: Arc<dyn RtpSender>,
    pub track: Arc<dyn TrackLocal>,
}

pub struct TrackEntry {
    pub id: String,
    pub codec: RTCRtpCodec,
    pub kind: RtpCodecKind,
    pub track_id: String,
    pub stream_id: String,
    pub bindings: Mutex<Vec<Binding>>,
}

impl TrackEntry {
    /// A fresh webrtc-rs local track for one connection.
    fn local_track(&self) -> Arc<dyn TrackLocal> {
        let ssrc: u32 = rand_ssrc();
        let track = MediaStreamTrack::new(
            self.stream_id.clone(),
            self.track_id.clone(),
            self.track_id.clone(),
            self.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                active: true,
                codec: self.codec.clone(),
                ..Default::default()
            }],
        );
        match TrackLocalStaticSample::new(Instant::now(), track.clone()) {
            Ok(t) => Arc::new(t),
            // No packetizer for this codec: the track can still be negotiated and carry RTP.
            Err(_) => Arc::new(TrackLocalStaticRTP::new(track)),
        }
    }
}

fn rand_ssrc() -> u32 {
    let b = uuid::Uuid::new_v4();
    let bytes = b.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn decode_codec(term: Term<'_>) -> NifResult<(RTCRtpCodec, RtpCodecKind)> {
    let (mime_type, clock_rate, channels, sdp_fmtp_line, feedback): CodecTuple =
        term.decode().map_err(|_| Error::InvalidArgument("codec"))?;
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
    // A bare kind ("audio", "video") names the kind's default codec.
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

#[rustler::nif]
fn track_new<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    codec: Term<'a>,
    track_id: Term<'a>,
    stream_id: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let (codec, kind) = decode_codec(codec)?;
        let track_id = string_arg(track_id, "id")?;
        let stream_id = string_arg(stream_id, "stream_id")?;
        let id = new_id();
        let entry = Arc::new(TrackEntry {
            id: id.clone(),
            codec,
            kind,
            track_id,
            stream_id,
            bindings: Mutex::new(Vec::new()),
        });
        lock(&s.inner.tracks).insert(id.clone(), entry);
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn track_exists(specter: Term<'_>, track: Term<'_>) -> bool {
    let (Ok(s), Ok(id)) = (instance(specter), track.decode::<String>()) else {
        return false;
    };
    normalize_id(&id).is_some_and(|k| lock(&s.inner.tracks).contains_key(&k))
}

/// Adds a track to a connection: `{:rtp_sender, pc, track, sender}` to the caller.
#[rustler::nif]
fn pc_add_track<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, track: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let pc_id = string_arg(pc, "peer_connection")?;
        let track_key = track
            .decode::<String>()
            .ok()
            .and_then(|t| normalize_id(&t))
            .ok_or(Error::InvalidTrack)?;
        let entry = lock(&s.inner.tracks)
            .get(&track_key)
            .cloned()
            .ok_or(Error::InvalidTrack)?;
        let h = s.inner.pc(&pc_id)?;
        let pc_key = h.id.clone();
        h.submit(make_op(
            &h.events,
            env.pid(),
            "add_track",
            move |pc| async move {
                let local = entry.local_track();
                let sender = pc.add_track(Arc::clone(&local)).await?;
                let sender_id = new_id();
                lock(&entry.bindings).push(Binding {
                    pc_id: pc_key,
                    sender_id: sender_id.clone(),
                    sender,
                    track: local,
                });
                let track_id = entry.id.clone();
                Ok(reply(move |env, pc| {
                    (
                        atoms::rtp_sender(),
                        pc,
                        track_id.as_str(),
                        sender_id.as_str(),
                    )
                        .encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
