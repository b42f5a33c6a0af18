//! `Specter.RtpTransceiver` and the media functions of `Specter.PeerConnection`: adding,
//! removing and replacing tracks, transceivers, senders and receivers.
//!
//! webrtc-rs numbers transceivers per connection and identifies senders and receivers by
//! opaque ids; Specter names each with a UUID, kept per connection in `PcMedia`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId,
    RTCRtpTransceiverInit,
};
use rustler::{Atom, Encoder, Env, Term};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::{RtpReceiver, RtpSender, RtpTransceiver};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::peer_connection::{lookup, make_op, reply, PcEvents};
use crate::specter::{lock, new_id, normalize_id, string_arg, Instance};
use crate::track_local::{default_codec, Binding, Flavor, TrackEntry};
use crate::track_local_static_sample::local_track;

/// UUIDs of a connection's transceivers, senders and receivers.
#[derive(Default)]
pub struct PcMedia {
    transceivers: HashMap<RTCRtpTransceiverId, String>,
    senders: HashMap<RTCRtpSenderId, String>,
    receivers: HashMap<RTCRtpReceiverId, String>,
    /// The Specter track binding behind each sender (by sender UUID).
    bindings: HashMap<String, Arc<Binding>>,
    /// Kinds of the transceivers Specter created (webrtc-rs does not expose a kind before
    /// a sender or receiver exists).
    kinds: HashMap<RTCRtpTransceiverId, RtpCodecKind>,
}

impl PcMedia {
    fn transceiver(&mut self, id: RTCRtpTransceiverId) -> String {
        self.transceivers.entry(id).or_insert_with(new_id).clone()
    }

    fn sender(&mut self, id: RTCRtpSenderId) -> String {
        self.senders.entry(id).or_insert_with(new_id).clone()
    }

    fn receiver(&mut self, id: RTCRtpReceiverId) -> String {
        self.receivers.entry(id).or_insert_with(new_id).clone()
    }
}

fn direction(term: Term<'_>) -> NifResult<RTCRtpTransceiverDirection> {
    let atom: Atom = term
        .decode()
        .map_err(|_| Error::InvalidOption("direction".into()))?;
    if atom == atoms::sendrecv() {
        Ok(RTCRtpTransceiverDirection::Sendrecv)
    } else if atom == atoms::sendonly() {
        Ok(RTCRtpTransceiverDirection::Sendonly)
    } else if atom == atoms::recvonly() {
        Ok(RTCRtpTransceiverDirection::Recvonly)
    } else if atom == atoms::inactive() {
        Ok(RTCRtpTransceiverDirection::Inactive)
    } else {
        Err(Error::InvalidOption("direction".into()))
    }
}

fn direction_sends(d: RTCRtpTransceiverDirection) -> bool {
    matches!(
        d,
        RTCRtpTransceiverDirection::Sendrecv | RTCRtpTransceiverDirection::Sendonly
    )
}

fn direction_atom(d: RTCRtpTransceiverDirection) -> Atom {
    match d {
        RTCRtpTransceiverDirection::Sendrecv => atoms::sendrecv(),
        RTCRtpTransceiverDirection::Sendonly => atoms::sendonly(),
        RTCRtpTransceiverDirection::Recvonly => atoms::recvonly(),
        RTCRtpTransceiverDirection::Inactive => atoms::inactive(),
        _ => atoms::unspecified(),
    }
}

/// Binds a Specter track to a new sender of the connection: a fresh local track with its
/// own SSRC, and the sender's UUID.
async fn bind_sender(
    inst: &Instance,
    events: &Arc<PcEvents>,
    entry: &Arc<TrackEntry>,
    sender: Arc<dyn RtpSender>,
    local: crate::track_local::LocalTrack,
    ssrc: u32,
) -> String {
    let sender_id = lock(&events.media).sender(sender.id());
    let binding = entry.bind(&inst.handle, events, sender_id.clone(), sender, local, ssrc);
    lock(&events.media)
        .bindings
        .insert(sender_id.clone(), binding);
    sender_id
}

/// `add_track`: `{:rtp_sender, pc, track, sender}` to the caller.
#[rustler::nif]
fn pc_add_track<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, track: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup_pc_and_instance(specter, pc)?;
        let entry = local_track(&inst, track)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "add_track",
            move |pc| async move {
                let (local, ssrc) = entry.local_track()?;
                let sender = pc.add_track(local.as_track_local()).await?;
                let sender_id = bind_sender(&inst, &events, &entry, sender, local, ssrc).await;
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

fn lookup_pc_and_instance(
    specter: Term<'_>,
    pc: Term<'_>,
) -> NifResult<(Arc<Instance>, Arc<crate::peer_connection::PcHandle>)> {
    lookup(specter, pc)
}

/// The connection's transceivers in creation order (webrtc-rs returns them unordered).
async fn ordered_transceivers(pc: &Arc<dyn PeerConnection>) -> Vec<Arc<dyn RtpTransceiver>> {
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

async fn find_transceiver(
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

fn id_arg(term: Term<'_>, name: &'static str) -> NifResult<String> {
    let id = string_arg(term, name)?;
    normalize_id(&id).ok_or(Error::NotFound)
}

/// `remove_track`: the sender stops sending (renegotiation needed). `{:ok, pc, :remove_track}`.
#[rustler::nif]
fn pc_remove_track<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    sender: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let sender_id = id_arg(sender, "sender")?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "remove_track",
            move |pc| async move {
                let sender = find_sender(&pc, &events, &sender_id).await?;
                pc.remove_track(&sender).await?;
                if let Some((binding, entry)) = find_binding(&events, &sender_id) {
                    lock(&events.media).bindings.remove(&sender_id);
                    binding
                        .stopped
                        .store(true, std::sync::atomic::Ordering::Release);
                    if let Some(entry) = entry {
                        lock(&entry.bindings).retain(|b| !Arc::ptr_eq(b, &binding));
                    }
                }
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::remove_track()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `replace_track`: the sender sends another Specter track (of the same codec), or nothing
/// (`nil`), without renegotiation. `{:ok, pc, :replace_track}`.
#[rustler::nif]
fn pc_replace_track<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    sender: Term<'a>,
    track: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup(specter, pc)?;
        let sender_id = id_arg(sender, "sender")?;
        let next = if track == atoms::nil().encode(env) {
            None
        } else {
            Some(local_track(&inst, track)?)
        };
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "replace_track",
            move |pc| async move {
                find_sender(&pc, &events, &sender_id).await?;
                let (binding, current) =
                    find_binding(&events, &sender_id).ok_or(Error::NotFound)?;
                if let Some(next) = &next {
                    if !next
                        .codec
                        .mime_type
                        .eq_ignore_ascii_case(binding.mime_type())
                        || next.kind != current.as_ref().map(|c| c.kind).unwrap_or(next.kind)
                    {
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
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::replace_track()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `add_transceiver`: from a kind (`:audio`/`:video`) or a Specter track, with a direction.
/// `{:transceiver, pc, transceiver}` to the caller.
#[rustler::nif]
fn pc_add_transceiver<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    what: Term<'a>,
    dir: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup(specter, pc)?;
        let direction = direction(dir)?;
        let init = RTCRtpTransceiverInit {
            direction,
            streams: vec![],
            send_encodings: vec![],
        };
        enum What {
            Kind(RtpCodecKind),
            Track(Arc<TrackEntry>),
        }
        let what = if what == atoms::audio().encode(env) {
            What::Kind(RtpCodecKind::Audio)
        } else if what == atoms::video().encode(env) {
            What::Kind(RtpCodecKind::Video)
        } else {
            What::Track(local_track(&inst, what)?)
        };
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "add_transceiver",
            move |pc| async move {
                let transceiver = match what {
                    What::Kind(kind) if direction_sends(init.direction) => {
                        // webrtc-rs wants a track to send; W3C gives the sender none. Bind a
                        // track of the kind's default codec with no Specter track behind it:
                        // it sends nothing until `replace_track`.
                        let placeholder = TrackEntry::new(
                            new_id(),
                            Flavor::Rtp,
                            default_codec(kind),
                            kind,
                            new_id(),
                            new_id(),
                        );
                        let (local, ssrc) = placeholder.local_track()?;
                        let t = pc
                            .add_transceiver_from_track(local.as_track_local(), Some(init))
                            .await?;
                        if let Ok(Some(sender)) = t.sender().await {
                            bind_sender(&inst, &events, &placeholder, sender, local, ssrc).await;
                        }
                        drop(placeholder);
                        lock(&events.media).kinds.insert(t.id(), kind);
                        t
                    }
                    What::Kind(kind) => {
                        let t = pc.add_transceiver_from_kind(kind, Some(init)).await?;
                        lock(&events.media).kinds.insert(t.id(), kind);
                        t
                    }
                    What::Track(entry) => {
                        let (local, ssrc) = entry.local_track()?;
                        let t = pc
                            .add_transceiver_from_track(local.as_track_local(), Some(init))
                            .await?;
                        if let Ok(Some(sender)) = t.sender().await {
                            bind_sender(&inst, &events, &entry, sender, local, ssrc).await;
                        }
                        lock(&events.media).kinds.insert(t.id(), entry.kind);
                        t
                    }
                };
                let id = lock(&events.media).transceiver(transceiver.id());
                Ok(reply(move |env, pc| {
                    (atoms::transceiver(), pc, id.as_str()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

fn map<'a>(env: Env<'a>, pairs: Vec<(Atom, Term<'a>)>) -> Term<'a> {
    let mut m = rustler::types::map::map_new(env);
    for (k, v) in pairs {
        m = m.map_put(k.encode(env), v).unwrap_or(m);
    }
    m
}

struct TransceiverInfo {
    id: String,
    mid: Option<String>,
    kind: Option<RtpCodecKind>,
    direction: RTCRtpTransceiverDirection,
    current_direction: RTCRtpTransceiverDirection,
    sender: Option<String>,
    receiver: Option<String>,
}

async fn receiver_kind(r: &Arc<dyn RtpReceiver>) -> RtpCodecKind {
    r.track().kind().await
}

/// `get_transceivers`: `{:transceivers, pc, [%{id, mid, kind, direction, current_direction,
/// sender, receiver}]}`.
#[rustler::nif]
fn pc_get_transceivers<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "get_transceivers",
            move |pc| async move {
                let mut list = Vec::new();
                // Kinds by mid, from the descriptions (webrtc-rs exposes no transceiver kind).
                let mut by_mid: HashMap<String, RtpCodecKind> = HashMap::new();
                for desc in [pc.remote_description().await, pc.local_description().await]
                    .into_iter()
                    .flatten()
                {
                    for (mid, kind) in specter_core::signalling::media_kinds(&desc.sdp) {
                        let kind = match kind.as_str() {
                            "audio" => RtpCodecKind::Audio,
                            "video" => RtpCodecKind::Video,
                            _ => continue,
                        };
                        by_mid.insert(mid, kind);
                    }
                }
                for t in ordered_transceivers(&pc).await {
                    let sender = t.sender().await.ok().flatten();
                    let receiver = t.receiver().await.ok().flatten();
                    let mid = t.mid().await.ok().flatten();
                    let known = lock(&events.media).kinds.get(&t.id()).copied();
                    let kind = match (known, mid.as_ref().and_then(|m| by_mid.get(m))) {
                        (Some(k), _) | (None, Some(&k)) => Some(k),
                        (None, None) => match (&receiver, &sender) {
                            (_, Some(s)) => Some(s.track().kind().await),
                            (Some(r), None) => Some(receiver_kind(r).await),
                            _ => None,
                        },
                    };
                    let info = {
                        let mut media = lock(&events.media);
                        TransceiverInfo {
                            id: media.transceiver(t.id()),
                            mid: None,
                            kind,
                            direction: RTCRtpTransceiverDirection::Unspecified,
                            current_direction: RTCRtpTransceiverDirection::Unspecified,
                            sender: sender.as_ref().map(|s| media.sender(s.id())),
                            receiver: receiver.as_ref().map(|r| media.receiver(r.id())),
                        }
                    };
                    list.push(info);
                    if let Some(info) = list.last_mut() {
                        info.mid = t.mid().await.ok().flatten();
                        info.direction = t.direction().await.unwrap_or_default();
                        info.current_direction = t.current_direction().await.unwrap_or_default();
                    }
                }
                Ok(reply(move |env, pc| {
                    let nil = atoms::nil().encode(env);
                    let opt =
                        |v: &Option<String>| v.as_deref().map(|s| s.encode(env)).unwrap_or(nil);
                    let items: Vec<Term<'_>> = list
                        .iter()
                        .map(|t| {
                            map(
                                env,
                                vec![
                                    (atoms::id(), t.id.as_str().encode(env)),
                                    (atoms::mid(), opt(&t.mid)),
                                    (
                                        atoms::kind(),
                                        match t.kind {
                                            Some(RtpCodecKind::Audio) => atoms::audio().encode(env),
                                            Some(RtpCodecKind::Video) => atoms::video().encode(env),
                                            _ => nil,
                                        },
                                    ),
                                    (atoms::direction(), direction_atom(t.direction).encode(env)),
                                    (
                                        atoms::current_direction(),
                                        direction_atom(t.current_direction).encode(env),
                                    ),
                                    (atoms::sender(), opt(&t.sender)),
                                    (atoms::receiver(), opt(&t.receiver)),
                                ],
                            )
                        })
                        .collect();
                    (atoms::transceivers(), pc, items).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `get_senders`: `{:senders, pc, [%{id, track, dropped}]}` (`track` is the Specter track it
/// sends; `dropped` the packets a full send queue refused).
#[rustler::nif]
fn pc_get_senders<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "get_senders",
            move |pc| async move {
                let ids: Vec<String> = ordered_senders(&pc)
                    .await
                    .iter()
                    .map(|s| lock(&events.media).sender(s.id()))
                    .collect();
                let list: Vec<(String, Option<String>, u64)> = ids
                    .into_iter()
                    .map(|id| {
                        let found = find_binding(&events, &id);
                        let dropped = found
                            .as_ref()
                            .map(|(b, _)| b.dropped.load(std::sync::atomic::Ordering::Relaxed))
                            .unwrap_or(0);
                        let track = found.and_then(|(_, e)| e).map(|e| e.id.clone());
                        (id, track, dropped)
                    })
                    .collect();
                Ok(reply(move |env, pc| {
                    let nil = atoms::nil().encode(env);
                    let items: Vec<Term<'_>> = list
                        .iter()
                        .map(|(id, track, dropped)| {
                            map(
                                env,
                                vec![
                                    (atoms::id(), id.as_str().encode(env)),
                                    (
                                        atoms::track(),
                                        track.as_deref().map(|t| t.encode(env)).unwrap_or(nil),
                                    ),
                                    (atoms::dropped(), dropped.encode(env)),
                                ],
                            )
                        })
                        .collect();
                    (atoms::senders(), pc, items).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `get_receivers`: `{:receivers, pc, [%{id, track}]}` (`track` is the remote track's UUID
/// once announced).
#[rustler::nif]
fn pc_get_receivers<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "get_receivers",
            move |pc| async move {
                let mut list = Vec::new();
                for r in ordered_receivers(&pc).await {
                    let id = lock(&events.media).receiver(r.id());
                    let track = lock(&inst.remote_tracks)
                        .values()
                        .find(|t| t.pc_id == events.id && Arc::ptr_eq(&t.track, r.track()))
                        .map(|t| t.id.clone());
                    list.push((id, track));
                }
                Ok(reply(move |env, pc| {
                    let nil = atoms::nil().encode(env);
                    let items: Vec<Term<'_>> = list
                        .iter()
                        .map(|(id, track)| {
                            map(
                                env,
                                vec![
                                    (atoms::id(), id.as_str().encode(env)),
                                    (
                                        atoms::track(),
                                        track.as_deref().map(|t| t.encode(env)).unwrap_or(nil),
                                    ),
                                ],
                            )
                        })
                        .collect();
                    (atoms::receivers(), pc, items).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `set_direction`: `{:ok, pc, :set_direction}`.
#[rustler::nif]
fn tx_set_direction<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    transceiver: Term<'a>,
    dir: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let id = id_arg(transceiver, "transceiver")?;
        let direction = direction(dir)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "set_direction",
            move |pc| async move {
                let t = find_transceiver(&pc, &events, &id).await?;
                t.set_direction(direction).await?;
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::set_direction()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `stop`: `{:ok, pc, :stop_transceiver}`.
#[rustler::nif]
fn tx_stop<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, transceiver: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let id = id_arg(transceiver, "transceiver")?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "stop_transceiver",
            move |pc| async move {
                let t = find_transceiver(&pc, &events, &id).await?;
                let was = t.current_direction().await.ok();
                t.stop().await?;
                // W3C: stopping updates the negotiation-needed flag; webrtc-rs 0.21.1 does
                // not, so the owner is told here (once negotiated: the next offer changes).
                if was.is_some_and(|d| d != RTCRtpTransceiverDirection::Unspecified) {
                    events.emit(|env, pc| (atoms::negotiation_needed(), pc).encode(env));
                }
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::stop_transceiver()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
