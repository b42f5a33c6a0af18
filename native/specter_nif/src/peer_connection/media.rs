//! The media functions of `Specter.PeerConnection`: adding, removing and replacing tracks,
//! transceivers, senders and receivers. webrtc-rs numbers transceivers per connection and
//! identifies senders and receivers by opaque ids; Specter names each with a UUID, kept per
//! connection in `PcMedia`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rustler::{Atom, Encoder, Env, NifMap, NifUnitEnum, Term};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::{RtpReceiver, RtpSender, RtpTransceiver};

use super::lookup;
use super::shared::{done, reply, w3c_enum, PcEvents, PcHandle};
use crate::atoms;
use crate::codec;
use crate::error::{Error, NifResult};
use crate::instance::{Instance, Specter};
use crate::nif::{answer, Answer, Arg, PcId, SenderId};
use crate::track_local::{Binding, Flavor, LocalTrack, TrackEntry};
use specter_core::registry::{lock, new_id, normalize_id};

w3c_enum!(
    /// W3C `RTCRtpTransceiverDirection`.
    Direction from RTCRtpTransceiverDirection { Sendrecv, Sendonly, Recvonly, Inactive }
);

impl Direction {
    /// Decodes a direction option (`:unspecified` is not one).
    pub fn decode(term: Term<'_>) -> NifResult<RTCRtpTransceiverDirection> {
        match term.decode::<Direction>() {
            Ok(Direction::Sendrecv) => Ok(RTCRtpTransceiverDirection::Sendrecv),
            Ok(Direction::Sendonly) => Ok(RTCRtpTransceiverDirection::Sendonly),
            Ok(Direction::Recvonly) => Ok(RTCRtpTransceiverDirection::Recvonly),
            Ok(Direction::Inactive) => Ok(RTCRtpTransceiverDirection::Inactive),
            _ => Err(Error::InvalidOption("direction".into())),
        }
    }
}

/// An id argument of a connection's media object: `:not_found` if it is not a UUID.
pub fn media_id(id: String) -> NifResult<String> {
    normalize_id(&id).ok_or(Error::NotFound)
}

/// The connection's transceivers in creation order (webrtc-rs returns them unordered).
pub async fn ordered_transceivers(pc: &Arc<dyn PeerConnection>) -> Vec<Arc<dyn RtpTransceiver>> {
    let mut transceivers = pc.get_transceivers().await;
    transceivers.sort_by_key(|t| t.id());
    transceivers
}

async fn ordered_senders(pc: &Arc<dyn PeerConnection>) -> Vec<Arc<dyn RtpSender>> {
    let mut out = Vec::new();
    for t in ordered_transceivers(pc).await {
        if let Ok(Some(s)) = t.sender().await {
            out.push(s);
        }
    }
    out
}

async fn ordered_receivers(pc: &Arc<dyn PeerConnection>) -> Vec<Arc<dyn RtpReceiver>> {
    let mut out = Vec::new();
    for t in ordered_transceivers(pc).await {
        if let Ok(Some(r)) = t.receiver().await {
            out.push(r);
        }
    }
    out
}

async fn find_sender(
    pc: &Arc<dyn PeerConnection>,
    events: &PcEvents,
    sender_id: &str,
) -> NifResult<Arc<dyn RtpSender>> {
    for s in pc.get_senders().await {
        if lock(&events.media).sender(s.id()) == sender_id {
            return Ok(s);
        }
    }
    Err(Error::NotFound)
}

pub async fn find_transceiver(
    pc: &Arc<dyn PeerConnection>,
    events: &PcEvents,
    transceiver_id: &str,
) -> NifResult<Arc<dyn RtpTransceiver>> {
    for t in pc.get_transceivers().await {
        if lock(&events.media).transceiver(t.id()) == transceiver_id {
            return Ok(t);
        }
    }
    Err(Error::NotFound)
}

/// The binding that drives `sender_id`, and the Specter track writing into it now.
fn find_binding(
    events: &PcEvents,
    sender_id: &str,
) -> Option<(Arc<Binding>, Option<Arc<TrackEntry>>)> {
    let binding = lock(&events.media).bindings.get(sender_id).cloned()?;
    let entry = lock(&binding.entry).upgrade();
    Some((binding, entry))
}

/// Binds a Specter track to a new sender of the connection: a fresh local track with its
/// own SSRC, and the sender's UUID.
fn bind_sender(
    inst: &Instance,
    events: &Arc<PcEvents>,
    entry: &Arc<TrackEntry>,
    sender: Arc<dyn RtpSender>,
    (local, ssrc): (LocalTrack, u32),
) -> String {
    let sender_id = lock(&events.media).sender(sender.id());
    let binding =
        entry.bind(&inst.handle, &events.id, &events.owner, sender_id.clone(), sender, local, ssrc);
    lock(&events.media).bindings.insert(sender_id.clone(), binding);
    sender_id
}

/// The instance and connection a media NIF works on.
fn target(specter: Arg<Specter>, pc: Arg<PcId>) -> NifResult<(Arc<Instance>, Arc<PcHandle>)> {
    let inst = specter.instance()?;
    let h = inst.pcs.get(&pc.get()?.0)?;
    Ok((inst, h))
}

/// `add_track`: `{:rtp_sender, pc, track, sender}` to the caller.
#[rustler::nif]
fn pc_add_track(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    track: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = target(specter, pc)?;
        let entry = inst.local_track(track)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::add_track_error(), move |pc| async move {
            let local = entry.local_track()?;
            let sender = pc.add_track(local.0.as_track_local()).await?;
            let sender_id = bind_sender(&inst, &events, &entry, sender, local);
            let track_id = entry.id.clone();
            Ok(reply(move |env, pc| {
                (atoms::rtp_sender(), pc, track_id.as_str(), sender_id.as_str()).encode(env)
            }))
        })
    })
}

/// `remove_track`: the sender stops sending (renegotiation needed). `{:ok, pc, :remove_track}`.
#[rustler::nif]
fn pc_remove_track(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    sender: Arg<SenderId>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let sender_id = media_id(sender.get()?.0)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::remove_track_error(), move |pc| async move {
            let sender = find_sender(&pc, &events, &sender_id).await?;
            pc.remove_track(&sender).await?;
            if let Some((binding, entry)) = find_binding(&events, &sender_id) {
                lock(&events.media).bindings.remove(&sender_id);
                binding.stopped.store(true, Ordering::Release);
                if let Some(entry) = entry {
                    lock(&entry.bindings).retain(|b| !Arc::ptr_eq(b, &binding));
                }
            }
            Ok(done(atoms::remove_track()))
        })
    })
}

/// `replace_track`: the sender sends another Specter track (of the same codec), or nothing
/// (`nil`), without renegotiation. `{:ok, pc, :replace_track}`.
#[rustler::nif]
fn pc_replace_track<'a>(
    env: Env<'a>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    sender: Arg<SenderId>,
    track: Term<'a>,
) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = target(specter, pc)?;
        let sender_id = media_id(sender.get()?.0)?;
        let next =
            if track == atoms::nil().encode(env) { None } else { Some(inst.local_track(track)?) };
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::replace_track_error(), move |pc| async move {
            find_sender(&pc, &events, &sender_id).await?;
            let (binding, current) = find_binding(&events, &sender_id).ok_or(Error::NotFound)?;
            if let Some(next) = &next {
                let same_codec = next.codec.mime_type.eq_ignore_ascii_case(binding.mime_type());
                let same_kind = current.as_ref().is_none_or(|c| c.kind == next.kind);
                if !(same_codec && same_kind) {
                    return Err(Error::InvalidCodec(format!(
                        "the sender sends {}, the track is {}",
                        binding.mime_type(),
                        next.codec.mime_type
                    )));
                }
            }
            if let Some(current) = current {
                lock(&current.bindings).retain(|b| !Arc::ptr_eq(b, &binding));
            }
            match next {
                Some(next) => {
                    *lock(&binding.entry) = Arc::downgrade(&next);
                    lock(&next.bindings).push(Arc::clone(&binding));
                }
                None => *lock(&binding.entry) = Weak::new(),
            }
            Ok(done(atoms::replace_track()))
        })
    })
}

/// What a transceiver is added from.
enum Source {
    Kind(RtpCodecKind),
    Track(Arc<TrackEntry>),
}

/// Adds the transceiver and binds its sender, if it has one.
async fn add_transceiver(
    pc: &Arc<dyn PeerConnection>,
    inst: &Instance,
    events: &Arc<PcEvents>,
    source: Source,
    init: RTCRtpTransceiverInit,
) -> NifResult<Arc<dyn RtpTransceiver>> {
    let sends = matches!(
        init.direction,
        RTCRtpTransceiverDirection::Sendrecv | RTCRtpTransceiverDirection::Sendonly
    );
    let entry = match source {
        Source::Kind(kind) if !sends => {
            let t = pc.add_transceiver_from_kind(kind, Some(init)).await?;
            lock(&events.media).kinds.insert(t.id(), kind);
            return Ok(t);
        }
        // webrtc-rs wants a track to send; W3C gives the sender none. Bind a track of the
        // kind's default codec with no Specter track behind it: it sends nothing until
        // `replace_track`.
        Source::Kind(kind) => {
            TrackEntry::new(new_id(), Flavor::Rtp, codec::default(kind), kind, new_id(), new_id())
        }
        Source::Track(entry) => entry,
    };
    let local = entry.local_track()?;
    let t = pc.add_transceiver_from_track(local.0.as_track_local(), Some(init)).await?;
    if let Ok(Some(sender)) = t.sender().await {
        bind_sender(inst, events, &entry, sender, local);
    }
    lock(&events.media).kinds.insert(t.id(), entry.kind);
    Ok(t)
}

/// `add_transceiver`: from a kind (`:audio`/`:video`) or a Specter track, with a direction.
/// `{:transceiver, pc, transceiver}` to the caller.
#[rustler::nif]
fn pc_add_transceiver<'a>(
    env: Env<'a>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    what: Term<'a>,
    dir: Term<'a>,
) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = target(specter, pc)?;
        let init = RTCRtpTransceiverInit {
            direction: Direction::decode(dir)?,
            streams: vec![],
            send_encodings: vec![],
        };
        let source = if what == atoms::audio().encode(env) {
            Source::Kind(RtpCodecKind::Audio)
        } else if what == atoms::video().encode(env) {
            Source::Kind(RtpCodecKind::Video)
        } else {
            Source::Track(inst.local_track(what)?)
        };
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::add_transceiver_error(), move |pc| async move {
            let transceiver = add_transceiver(&pc, &inst, &events, source, init).await?;
            let id = lock(&events.media).transceiver(transceiver.id());
            Ok(reply(move |env, pc| (atoms::transceiver(), pc, id.as_str()).encode(env)))
        })
    })
}

/// An item of `{:transceivers, pc, [...]}`.
#[derive(NifMap)]
struct TransceiverInfo {
    id: String,
    mid: Option<String>,
    kind: Option<Atom>,
    direction: Direction,
    current_direction: Direction,
    sender: Option<String>,
    receiver: Option<String>,
}

fn kind_atom(kind: RtpCodecKind) -> Option<Atom> {
    match kind {
        RtpCodecKind::Audio => Some(atoms::audio()),
        RtpCodecKind::Video => Some(atoms::video()),
        _ => None,
    }
}

/// Kinds by mid, from the descriptions (webrtc-rs exposes no transceiver kind).
async fn kinds_by_mid(pc: &Arc<dyn PeerConnection>) -> HashMap<String, RtpCodecKind> {
    let mut by_mid = HashMap::new();
    for desc in [pc.remote_description().await, pc.local_description().await].into_iter().flatten()
    {
        for (mid, kind) in specter_core::signalling::media_kinds(&desc.sdp) {
            match kind.as_str() {
                "audio" => by_mid.insert(mid, RtpCodecKind::Audio),
                "video" => by_mid.insert(mid, RtpCodecKind::Video),
                _ => None,
            };
        }
    }
    by_mid
}

async fn transceiver_info(
    t: &Arc<dyn RtpTransceiver>,
    events: &PcEvents,
    by_mid: &HashMap<String, RtpCodecKind>,
) -> TransceiverInfo {
    let sender = t.sender().await.ok().flatten();
    let receiver = t.receiver().await.ok().flatten();
    let mid = t.mid().await.ok().flatten();
    let known = lock(&events.media).kinds.get(&t.id()).copied();
    let kind = match (known, mid.as_ref().and_then(|m| by_mid.get(m))) {
        (Some(k), _) | (None, Some(&k)) => Some(k),
        (None, None) => match (&receiver, &sender) {
            (_, Some(s)) => Some(s.track().kind().await),
            (Some(r), None) => Some(r.track().kind().await),
            _ => None,
        },
    };
    let (id, sender, receiver) = {
        let mut media = lock(&events.media);
        (
            media.transceiver(t.id()),
            sender.as_ref().map(|s| media.sender(s.id())),
            receiver.as_ref().map(|r| media.receiver(r.id())),
        )
    };
    TransceiverInfo {
        id,
        mid,
        kind: kind.and_then(kind_atom),
        direction: t.direction().await.unwrap_or_default().into(),
        current_direction: t.current_direction().await.unwrap_or_default().into(),
        sender,
        receiver,
    }
}

/// `get_transceivers`: `{:transceivers, pc, [%{id, mid, kind, direction, current_direction,
/// sender, receiver}]}`.
#[rustler::nif]
fn pc_get_transceivers(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::get_transceivers_error(), move |pc| async move {
            let by_mid = kinds_by_mid(&pc).await;
            let mut list = Vec::new();
            for t in ordered_transceivers(&pc).await {
                list.push(transceiver_info(&t, &events, &by_mid).await);
            }
            Ok(reply(move |env, pc| (atoms::transceivers(), pc, list).encode(env)))
        })
    })
}

/// An item of `{:senders, pc, [...]}`: `track` is the Specter track it sends; `dropped` the
/// packets a full send queue refused.
#[derive(NifMap)]
struct SenderInfo {
    id: String,
    track: Option<String>,
    dropped: u64,
}

/// `get_senders`: `{:senders, pc, [%{id, track, dropped}]}`.
#[rustler::nif]
fn pc_get_senders(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::get_senders_error(), move |pc| async move {
            let mut list = Vec::new();
            for s in ordered_senders(&pc).await {
                let id = lock(&events.media).sender(s.id());
                let found = find_binding(&events, &id);
                let dropped =
                    found.as_ref().map(|(b, _)| b.dropped.load(Ordering::Relaxed)).unwrap_or(0);
                let track = found.and_then(|(_, e)| e).map(|e| e.id.clone());
                list.push(SenderInfo { id, track, dropped });
            }
            Ok(reply(move |env, pc| (atoms::senders(), pc, list).encode(env)))
        })
    })
}

/// An item of `{:receivers, pc, [...]}`: `track` is the remote track's UUID once announced.
#[derive(NifMap)]
struct ReceiverInfo {
    id: String,
    track: Option<String>,
}

/// `get_receivers`: `{:receivers, pc, [%{id, track}]}`.
#[rustler::nif]
fn pc_get_receivers(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = target(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::get_receivers_error(), move |pc| async move {
            let mut list = Vec::new();
            for r in ordered_receivers(&pc).await {
                let id = lock(&events.media).receiver(r.id());
                let track = inst
                    .remote_tracks
                    .values()
                    .into_iter()
                    .find(|t| t.pc_id == events.id && Arc::ptr_eq(&t.track, r.track()))
                    .map(|t| t.id.clone());
                list.push(ReceiverInfo { id, track });
            }
            Ok(reply(move |env, pc| (atoms::receivers(), pc, list).encode(env)))
        })
    })
}
