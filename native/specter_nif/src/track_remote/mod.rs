//! `Specter.TrackRemote`: tracks the remote peer sends. Each gets a UUID, an announcement
//! to the connection's owner (`{:track, pc, track, info}`) and a reader (`fanout`) that
//! passes every packet on.

pub mod fanout;
pub mod handle;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rustler::{Atom, Encoder, Env, Term};
use webrtc::media_stream::track_remote::TrackRemote;

use crate::atoms;
use crate::error::{Error, NifResult};
use crate::flow::Active;
use crate::instance::{Instance, Specter};
use crate::nif::{answer, Answer, Arg, Pid, TrackId};
use crate::peer_connection::shared::PcEvents;
use crate::rtcp::map;
use handle::{RemoteInfo, RemoteTrackHandle};
use specter_core::registry::lock;

/// A track the remote peer added: register it, tell the owner, start its reader.
pub fn announce(inst: &Arc<Instance>, events: &Arc<PcEvents>, track: Arc<dyn TrackRemote>) {
    let events = Arc::clone(events);
    let weak = Arc::downgrade(inst);
    inst.handle.spawn(async move {
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        let info = RemoteInfo {
            kind: Some(track.kind().await),
            codec: track.codec(ssrc).await,
            ssrc,
            rid: track.rid(ssrc).await.map(|r| r.to_string()),
            stream_id: track.stream_id().await.to_string(),
            track_id: track.track_id().await.to_string(),
        };
        let handle = RemoteTrackHandle::new(&events.id, track, info.clone(), &events.owner);
        let Some(inst) = weak.upgrade() else {
            return;
        };
        inst.remote_tracks.insert(handle.id.clone(), Arc::clone(&handle));
        drop(inst);
        let id = handle.id.clone();
        events.emit(move |env, pc| {
            (atoms::track(), pc, id.as_str(), info_term(env, &info)).encode(env)
        });
        fanout::run(handle, forget(weak)).await;
        // The connection's events live as long as its tracks report (`{:track_ended, ...}`).
        drop(events);
    });
}

/// What the instance does when a remote track ends: it forgets the track (its id answers
/// `:closed`) and its recorders.
fn forget(inst: Weak<Instance>) -> fanout::OnEnd {
    Box::new(move |h, recorders| {
        if let Some(inst) = inst.upgrade() {
            for r in recorders {
                inst.recorders.remove(&r.id);
            }
            inst.remote_tracks.remove(&h.id);
        }
    })
}

fn kind_atom(kind: Option<RtpCodecKind>) -> Atom {
    match kind {
        Some(RtpCodecKind::Audio) => atoms::audio(),
        Some(RtpCodecKind::Video) => atoms::video(),
        _ => atoms::unspecified(),
    }
}

/// `%{kind, codec, ssrc, rid, stream_id, track_id}` (`t:Specter.TrackRemote.info/0`).
fn info_term<'a>(env: Env<'a>, info: &RemoteInfo) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let codec = match &info.codec {
        Some(c) => map(
            env,
            &[
                (atoms::mime_type(), c.mime_type.as_str().encode(env)),
                (atoms::clock_rate(), c.clock_rate.encode(env)),
                (atoms::channels(), c.channels.encode(env)),
                (atoms::sdp_fmtp_line(), c.sdp_fmtp_line.as_str().encode(env)),
            ],
        ),
        None => nil,
    };
    let rid = info.rid.as_deref().map(|r| r.encode(env)).unwrap_or(nil);
    map(
        env,
        &[
            (atoms::kind(), kind_atom(info.kind).encode(env)),
            (atoms::codec(), codec),
            (atoms::ssrc(), info.ssrc.encode(env)),
            (atoms::rid(), rid),
            (atoms::stream_id(), info.stream_id.as_str().encode(env)),
            (atoms::track_id(), info.track_id.as_str().encode(env)),
        ],
    )
}

/// The instance and the remote track named by the arguments.
pub fn lookup(
    specter: Arg<Specter>,
    track: Arg<TrackId>,
) -> NifResult<(Arc<Instance>, Arc<RemoteTrackHandle>)> {
    let inst = specter.instance()?;
    let h = inst.remote_tracks.get(&track.get()?.0)?;
    Ok((inst, h))
}

#[rustler::nif]
fn track_remote_exists(specter: Arg<Specter>, track: Arg<TrackId>) -> bool {
    lookup(specter, track).is_ok()
}

#[rustler::nif]
fn track_remote_set_active(
    specter: Arg<Specter>,
    track: Arg<TrackId>,
    active: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let (_, h) = lookup(specter, track)?;
        h.credit.set(Active::decode(active)?);
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn track_remote_info<'a>(
    env: Env<'a>,
    specter: Arg<Specter>,
    track: Arg<TrackId>,
) -> Answer<(Atom, Term<'a>)> {
    answer(|| {
        let (_, h) = lookup(specter, track)?;
        let info = lock(&h.info).clone();
        let counter = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut m = info_term(env, &info);
        for (k, v) in [
            (atoms::peer_connection(), h.pc_id.as_str().encode(env)),
            (atoms::packet_count(), counter(&h.packets).encode(env)),
            (atoms::duplicates(), counter(&h.duplicates).encode(env)),
            (atoms::forwarded(), counter(&h.forwarded).encode(env)),
            (atoms::forward_time_us(), (counter(&h.forward_ns) / 1_000).encode(env)),
        ] {
            m = m.map_put(k.encode(env), v).unwrap_or(m);
        }
        Ok((atoms::ok(), m))
    })
}

/// Sends a PLI (`fir: false`) or FIR to the track's sender.
#[rustler::nif]
fn track_remote_request_keyframe(
    specter: Arg<Specter>,
    track: Arg<TrackId>,
    fir: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let fir: bool = fir.decode().map_err(|_| Error::InvalidOption("fir".into()))?;
        let (inst, h) = lookup(specter, track)?;
        inst.handle.spawn(async move {
            let _ = h.request_keyframe(fir).await;
        });
        Ok(atoms::ok())
    })
}

/// Starts forwarding the remote track's RTP to a local track (on any number of connections).
#[rustler::nif]
fn track_remote_forward(
    specter: Arg<Specter>,
    track: Arg<TrackId>,
    local: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = lookup(specter, track)?;
        let entry = inst.local_track(local)?;
        let remote_mime =
            lock(&h.info).codec.as_ref().map(|c| c.mime_type.clone()).unwrap_or_default();
        if !remote_mime.eq_ignore_ascii_case(&entry.codec.mime_type) {
            return Err(Error::InvalidCodec(format!(
                "the remote track is {remote_mime}, the local track {}",
                entry.codec.mime_type
            )));
        }
        {
            let mut forwards = lock(&h.forwards);
            let known =
                forwards.iter().any(|w| w.upgrade().is_some_and(|e| Arc::ptr_eq(&e, &entry)));
            if !known {
                forwards.push(Arc::downgrade(&entry));
            }
        }
        let source: Arc<dyn crate::track_local::KeyframeSource> = h.clone();
        *lock(&entry.source) = Some(Arc::downgrade(&source));
        // Subscribers need a keyframe to start decoding.
        inst.handle.spawn(async move {
            let _ = h.request_keyframe(false).await;
        });
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn track_remote_unforward(
    specter: Arg<Specter>,
    track: Arg<TrackId>,
    local: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = lookup(specter, track)?;
        let entry = inst.local_track(local)?;
        lock(&h.forwards).retain(|w| w.upgrade().is_some_and(|e| !Arc::ptr_eq(&e, &entry)));
        let mut source = lock(&entry.source);
        let ours = source
            .as_ref()
            .and_then(Weak::upgrade)
            .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(&s), Arc::as_ptr(&h)));
        if ours {
            *source = None;
        }
        Ok(atoms::ok())
    })
}

/// Adds a process that gets every packet of the track as `{:rtp, track, packet}`.
#[rustler::nif]
fn track_remote_relay(specter: Arg<Specter>, track: Arg<TrackId>, pid: Arg<Pid>) -> Answer<Atom> {
    answer(|| {
        let pid = pid.get()?.0;
        let (_, h) = lookup(specter, track)?;
        let mut sinks = lock(&h.sinks);
        if !sinks.contains(&pid) {
            sinks.push(pid);
        }
        Ok(atoms::ok())
    })
}

/// Removes a relay sink.
#[rustler::nif]
fn track_remote_unrelay(specter: Arg<Specter>, track: Arg<TrackId>, pid: Arg<Pid>) -> Answer<Atom> {
    answer(|| {
        let pid = pid.get()?.0;
        let (_, h) = lookup(specter, track)?;
        lock(&h.sinks).retain(|p| *p != pid);
        Ok(atoms::ok())
    })
}
