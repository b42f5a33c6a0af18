//! The reader of a remote track: every RTP packet goes through these steps, in order.
//!
//! 1. **dedup**: Chromium's bandwidth probes resend recent packets over RTX, which webrtc-rs
//!    unwraps into the stream; each sequence number is passed on once.
//! 2. **forward** to the local tracks it feeds (native forwarding: each subscriber binding
//!    rewrites SSRC and payload type; a subscriber whose queue is full loses the packet,
//!    nobody else waits).
//! 3. **record**: to the track's recorders; the first seconds of a track are kept until a
//!    recorder or 2 s come, so a recording started on `{:track, ...}` misses nothing.
//! 4. **relay** to every process that asked for all packets (`relay/3`).
//! 5. **deliver** to the owner as `{:rtp, track, packet}` only while it grants credit
//!    (`set_active/3`, as for data channels). Media is real time: a packet with no credit is
//!    not kept.
//!
//! RTCP about the track (sender reports) becomes `{:track_rtcp, track, [packet]}`; mute,
//! unmute and end become `{:track_mute | :track_unmute | :track_ended, track}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rtc::rtp;
use rustler::{Encoder, LocalPid};
use webrtc::media_stream::track_remote::TrackRemoteEvent;

use super::handle::{
    RemoteTrackHandle, PREBUFFER_PACKETS, PREBUFFER_TIME, RECORDER_KEYFRAME_INTERVAL,
};
use crate::atoms;
use crate::mailbox;
use crate::media_file::recorder::Recorder;
use crate::rtcp;
use specter_core::recording::SeqWindow;
use specter_core::registry::lock;
use specter_core::rtcp::{describe, RtcpInfo};

/// What the instance does when a track ends: forget it and its recorders.
pub type OnEnd = Box<dyn FnOnce(&RemoteTrackHandle, &[Arc<Recorder>]) + Send>;

/// Reads the track until it ends, then finishes it.
pub async fn run(h: Arc<RemoteTrackHandle>, on_end: OnEnd) {
    let mut seen = SeqWindow::new();
    while let Some(event) = h.track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) if dedup(&h, &mut seen, &pkt) => {
                forward(&h, &pkt).await;
                record(&h, &pkt).await;
                relay_and_deliver(&h, &pkt);
            }
            TrackRemoteEvent::OnRtpPacket(_) => {}
            TrackRemoteEvent::OnRtcpPacket(pkts) => {
                let infos: Vec<RtcpInfo> =
                    pkts.iter().filter_map(|p| describe(p.as_ref())).collect();
                if !infos.is_empty() {
                    h.emit(move |env, track| {
                        (atoms::track_rtcp(), track, rtcp::terms(env, &infos)).encode(env)
                    });
                }
            }
            TrackRemoteEvent::OnMute => {
                h.emit(|env, track| (atoms::track_mute(), track).encode(env));
            }
            TrackRemoteEvent::OnUnmute => {
                h.emit(|env, track| (atoms::track_unmute(), track).encode(env));
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
    finish(&h, on_end);
}

/// Step 1: whether the packet is new (counted), or a repeat (counted, dropped).
fn dedup(h: &RemoteTrackHandle, seen: &mut SeqWindow, pkt: &rtp::Packet) -> bool {
    if seen.insert(pkt.header.sequence_number) {
        h.packets.fetch_add(1, Ordering::Relaxed);
        true
    } else {
        h.duplicates.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Step 2: to every binding of every local track this track feeds, timed.
async fn forward(h: &RemoteTrackHandle, pkt: &rtp::Packet) {
    let targets = h.forward_targets();
    if targets.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut n = 0;
    for entry in targets {
        for b in entry.live_bindings() {
            b.forward(pkt).await;
            n += 1;
        }
    }
    h.forwarded.fetch_add(n, Ordering::Relaxed);
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    h.forward_ns.fetch_add(ns, Ordering::Relaxed);
}

/// Step 3: to the recorders (or the prebuffer); a recording that lost a packet asks for a
/// keyframe.
async fn record(h: &RemoteTrackHandle, pkt: &rtp::Packet) {
    let mut wants_keyframe = false;
    {
        let mut recording = lock(&h.recording);
        for r in &recording.recorders {
            wants_keyframe |= r.write(pkt);
        }
        let keep = h.announced.elapsed() < PREBUFFER_TIME;
        match recording.prebuffer.as_mut() {
            Some(kept) if keep && kept.len() < PREBUFFER_PACKETS => kept.push_back(pkt.clone()),
            Some(_) => recording.prebuffer = None,
            None => {}
        }
    }
    if wants_keyframe {
        h.request_keyframe_throttled(RECORDER_KEYFRAME_INTERVAL).await;
    }
}

/// Steps 4 and 5: marshalled once for the relay sinks and the owner (if it has credit).
fn relay_and_deliver(h: &RemoteTrackHandle, pkt: &rtp::Packet) {
    let sinks = lock(&h.sinks).clone();
    let to_owner = h.credit.take();
    if to_owner.is_some() || !sinks.is_empty() {
        if let Ok(bytes) = rtc::shared::marshal::Marshal::marshal(pkt) {
            let bytes: Arc<[u8]> = Arc::from(bytes.as_ref());
            relay(h, &sinks, &bytes);
            if to_owner.is_some() {
                h.emit(move |env, track| {
                    let bin = rustler::OwnedBinary::from_slice(&bytes);
                    (atoms::rtp(), track, bin.release(env)).encode(env)
                });
            }
        }
    }
    if to_owner == Some(true) {
        h.emit(|env, track| (atoms::track_passive(), track).encode(env));
    }
}

/// Sends a packet to every relay sink; a sink whose process is gone is dropped.
fn relay(h: &RemoteTrackHandle, sinks: &[LocalPid], bytes: &Arc<[u8]>) {
    let mut dead = Vec::new();
    for pid in sinks {
        let id = h.id.clone();
        let bytes = Arc::clone(bytes);
        let alive = mailbox::send_alive(*pid, move |env| {
            let bin = rustler::OwnedBinary::from_slice(&bytes);
            (atoms::rtp(), id.as_str(), bin.release(env)).encode(env)
        });
        if !alive {
            dead.push(*pid);
        }
    }
    if !dead.is_empty() {
        lock(&h.sinks).retain(|p| !dead.contains(p));
    }
}

/// The track ended (or its connection closed): recorders close, the owner and the relay
/// sinks are told, the instance forgets the track.
fn finish(h: &RemoteTrackHandle, on_end: OnEnd) {
    if h.ended.swap(true, Ordering::AcqRel) {
        return;
    }
    let recorders: Vec<Arc<Recorder>> = {
        let mut recording = lock(&h.recording);
        recording.prebuffer = None;
        std::mem::take(&mut recording.recorders)
    };
    on_end(h, &recorders);
    for r in recorders {
        r.finish();
    }
    h.emit(|env, track| (atoms::track_ended(), track).encode(env));
    for pid in std::mem::take(&mut *lock(&h.sinks)) {
        let id = h.id.clone();
        mailbox::send(pid, move |env| (atoms::track_ended(), id.as_str()).encode(env));
    }
}
