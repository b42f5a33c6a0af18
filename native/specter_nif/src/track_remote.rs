//! `Specter.TrackRemote`: tracks the remote peer sends.
//!
//! Each remote track gets a UUID, an announcement to the connection's owner
//! (`{:track, pc, track, info}`) and a reader task that, for every RTP packet:
//!
//! 1. forwards it to the local tracks it feeds (native forwarding: each subscriber binding
//!    rewrites SSRC and payload type; a subscriber whose queue is full loses the packet,
//!    nobody else waits),
//! 2. hands it to recorders (the first seconds of a track are kept until a recorder or
//!    2 s come, so a recording started on `{:track, ...}` misses nothing),
//! 3. sends it to the owner as `{:rtp, track, packet}` only while the owner grants credit
//!    (`set_active/3`, as for data channels). Media is real time: a packet with no credit
//!    is not kept.
//!
//! RTCP about the track (sender reports) becomes `{:track_rtcp, track, [packet]}`; mute,
//! unmute and end become `{:track_mute | :track_unmute | :track_ended, track}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rustler::{Atom, Encoder, Env, LocalPid, Term};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use specter_core::recording::SeqWindow;
use specter_core::rtcp::{describe, RtcpInfo};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::flow::{Active, Credit};
use crate::mailbox;
use crate::media_file::Recorder;
use crate::peer_connection::PcEvents;
use crate::specter::{instance, lock, new_id, normalize_id, string_arg, Instance};
use crate::track_local::{rtcp_terms, TrackEntry};

/// What a remote track is, as announced.
#[derive(Debug, Clone, Default)]
pub struct RemoteInfo {
    pub kind: Option<RtpCodecKind>,
    pub codec: Option<RTCRtpCodec>,
    pub ssrc: u32,
    pub rid: Option<String>,
    pub stream_id: String,
    pub track_id: String,
}

/// How long, and how many packets, a new track's packets are kept for a recorder to come.
const PREBUFFER_TIME: Duration = Duration::from_secs(2);
const PREBUFFER_PACKETS: usize = 1024;

/// How often a recording that lost a packet asks for a keyframe.
const RECORDER_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// A track's recorders, and its first packets while none has come yet.
pub struct Recording {
    prebuffer: Option<std::collections::VecDeque<rtc::rtp::Packet>>,
    pub recorders: Vec<Arc<Recorder>>,
}

impl Recording {
    /// Adds a recorder, first writing it the packets kept since the track began.
    pub fn attach(&mut self, recorder: Arc<Recorder>) {
        if let Some(kept) = self.prebuffer.take() {
            for pkt in &kept {
                recorder.write(pkt);
            }
        }
        self.recorders.push(recorder);
    }
}

pub struct RemoteTrackHandle {
    pub id: String,
    pub pc_id: String,
    pub track: Arc<dyn TrackRemote>,
    pub info: Mutex<RemoteInfo>,
    events: Weak<PcEvents>,
    credit: Credit,
    forwards: Mutex<Vec<Weak<TrackEntry>>>,
    /// Processes that get every packet (`relay/3`): relays to other nodes, taps.
    sinks: Mutex<Vec<LocalPid>>,
    pub recording: Mutex<Recording>,
    last_keyframe_request: Mutex<Option<Instant>>,
    announced: Instant,
    pub ended: AtomicBool,
    pub packets: AtomicU64,
    /// Packets that arrived again (same sequence number) and were passed on only once.
    pub duplicates: AtomicU64,
    pub forwarded: AtomicU64,
    /// Time spent handing packets to subscribers (the forwarding loop), in ns.
    pub forward_ns: AtomicU64,
}

impl RemoteTrackHandle {
    fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let Some(events) = self.events.upgrade() else {
            return;
        };
        let id = self.id.clone();
        mailbox::send(events.owner(), move |env| {
            let track = id.encode(env);
            f(env, track)
        });
    }

    fn media_ssrc(&self) -> u32 {
        lock(&self.info).ssrc
    }

    /// Asks the remote sender for a keyframe (PLI, or FIR).
    pub async fn request_keyframe(&self, fir: bool) -> NifResult<()> {
        let media_ssrc = self.media_ssrc();
        *lock(&self.last_keyframe_request) = Some(Instant::now());
        let pkt: Box<dyn rtc::rtcp::packet::Packet> = if fir {
            Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc,
                fir: vec![FirEntry {
                    ssrc: media_ssrc,
                    sequence_number: 0,
                }],
            })
        } else {
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })
        };
        self.track
            .write_rtcp(vec![pkt])
            .await
            .map_err(|e| Error::from_webrtc(&e))
    }

    /// A PLI, unless one went out less than `interval` ago (subscribers' requests for the
    /// same publisher are merged).
    pub async fn request_keyframe_throttled(&self, interval: Duration) {
        let recent = lock(&self.last_keyframe_request).is_some_and(|t| t.elapsed() < interval);
        if !recent {
            let _ = self.request_keyframe(false).await;
        }
    }

    fn forward_targets(&self) -> Vec<Arc<TrackEntry>> {
        let mut forwards = lock(&self.forwards);
        forwards.retain(|w| w.strong_count() > 0);
        forwards.iter().filter_map(Weak::upgrade).collect()
    }
}

/// A track the remote peer added: register it, tell the owner, start its reader.
pub fn announce(events: &Arc<PcEvents>, track: Arc<dyn TrackRemote>) {
    let Some(inst) = events.instance.upgrade() else {
        return;
    };
    let events = Arc::clone(events);
    let handle_rt = inst.handle.clone();
    handle_rt.spawn(async move {
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        let info = RemoteInfo {
            kind: Some(track.kind().await),
            codec: track.codec(ssrc).await,
            ssrc,
            rid: track.rid(ssrc).await.map(|r| r.to_string()),
            stream_id: track.stream_id().await.to_string(),
            track_id: track.track_id().await.to_string(),
        };
        let handle = Arc::new(RemoteTrackHandle {
            id: new_id(),
            pc_id: events.id.clone(),
            track,
            info: Mutex::new(info.clone()),
            events: Arc::downgrade(&events),
            credit: Credit::new(Active::Passive),
            forwards: Mutex::new(Vec::new()),
            sinks: Mutex::new(Vec::new()),
            recording: Mutex::new(Recording {
                prebuffer: Some(std::collections::VecDeque::new()),
                recorders: Vec::new(),
            }),
            announced: Instant::now(),
            last_keyframe_request: Mutex::new(None),
            ended: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forward_ns: AtomicU64::new(0),
        });
        lock(&inst.remote_tracks).insert(handle.id.clone(), Arc::clone(&handle));
        let id = handle.id.clone();
        events.emit(move |env, pc| {
            (atoms::track(), pc, id.as_str(), info_term(env, &info)).encode(env)
        });
        reader(Arc::downgrade(&inst), handle).await;
    });
}

fn kind_atom(kind: Option<RtpCodecKind>) -> Atom {
    match kind {
        Some(RtpCodecKind::Audio) => atoms::audio(),
        Some(RtpCodecKind::Video) => atoms::video(),
        _ => atoms::unspecified(),
    }
}

fn info_term<'a>(env: Env<'a>, info: &RemoteInfo) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let codec = match &info.codec {
        Some(c) => {
            let mut m = rustler::types::map::map_new(env);
            for (k, v) in [
                (atoms::mime_type(), c.mime_type.as_str().encode(env)),
                (atoms::clock_rate(), c.clock_rate.encode(env)),
                (atoms::channels(), c.channels.encode(env)),
                (atoms::sdp_fmtp_line(), c.sdp_fmtp_line.as_str().encode(env)),
            ] {
                m = m.map_put(k.encode(env), v).unwrap_or(m);
            }
            m
        }
        None => nil,
    };
    let mut m = rustler::types::map::map_new(env);
    for (k, v) in [
        (atoms::kind(), kind_atom(info.kind).encode(env)),
        (atoms::codec(), codec),
        (atoms::ssrc(), info.ssrc.encode(env)),
        (
            atoms::rid(),
            info.rid.as_deref().map(|r| r.encode(env)).unwrap_or(nil),
        ),
        (atoms::stream_id(), info.stream_id.as_str().encode(env)),
        (atoms::track_id(), info.track_id.as_str().encode(env)),
    ] {
        m = m.map_put(k.encode(env), v).unwrap_or(m);
    }
    m
}

async fn reader(inst: Weak<Instance>, h: Arc<RemoteTrackHandle>) {
    // Chromium's bandwidth probes resend recent packets over RTX, which webrtc-rs unwraps
    // into the stream: each sequence number is passed on once.
    let mut seen = SeqWindow::new();
    while let Some(event) = h.track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                if !seen.insert(pkt.header.sequence_number) {
                    h.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                h.packets.fetch_add(1, Ordering::Relaxed);
                let targets = h.forward_targets();
                if !targets.is_empty() {
                    let started = Instant::now();
                    let mut n = 0;
                    for entry in targets {
                        for b in entry.live_bindings() {
                            b.forward(&pkt).await;
                            n += 1;
                        }
                    }
                    h.forwarded.fetch_add(n, Ordering::Relaxed);
                    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    h.forward_ns.fetch_add(ns, Ordering::Relaxed);
                }
                let mut wants_keyframe = false;
                {
                    let mut recording = lock(&h.recording);
                    for r in &recording.recorders {
                        wants_keyframe |= r.write(&pkt);
                    }
                    let keep = h.announced.elapsed() < PREBUFFER_TIME;
                    match recording.prebuffer.as_mut() {
                        Some(kept) if keep && kept.len() < PREBUFFER_PACKETS => {
                            kept.push_back(pkt.clone())
                        }
                        Some(_) => recording.prebuffer = None,
                        None => {}
                    }
                }
                if wants_keyframe {
                    // A recording lost a packet and waits for a keyframe.
                    h.request_keyframe_throttled(RECORDER_KEYFRAME_INTERVAL)
                        .await;
                }
                let sinks = lock(&h.sinks).clone();
                let to_owner = h.credit.take();
                if to_owner.is_some() || !sinks.is_empty() {
                    if let Ok(bytes) = rtc::shared::marshal::Marshal::marshal(&pkt) {
                        let bytes: Arc<[u8]> = Arc::from(bytes.as_ref());
                        relay(&h, &sinks, &bytes);
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
            TrackRemoteEvent::OnRtcpPacket(pkts) => {
                let infos: Vec<RtcpInfo> =
                    pkts.iter().filter_map(|p| describe(p.as_ref())).collect();
                if !infos.is_empty() {
                    h.emit(move |env, track| {
                        (atoms::track_rtcp(), track, rtcp_terms(env, &infos)).encode(env)
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
    finish(inst, &h);
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

/// The track ended (or its connection closed): recorders close, the owner is told.
fn finish(inst: Weak<Instance>, h: &Arc<RemoteTrackHandle>) {
    if h.ended.swap(true, Ordering::AcqRel) {
        return;
    }
    let recorders: Vec<Arc<Recorder>> = {
        let mut recording = lock(&h.recording);
        recording.prebuffer = None;
        std::mem::take(&mut recording.recorders)
    };
    if let Some(inst) = inst.upgrade() {
        let mut all = lock(&inst.recorders);
        for r in &recorders {
            all.remove(&r.id);
        }
    }
    for r in recorders {
        r.finish();
    }
    h.emit(|env, track| (atoms::track_ended(), track).encode(env));
    for pid in std::mem::take(&mut *lock(&h.sinks)) {
        let id = h.id.clone();
        mailbox::send(pid, move |env| {
            (atoms::track_ended(), id.as_str()).encode(env)
        });
    }
    if let Some(inst) = inst.upgrade() {
        lock(&inst.remote_tracks).remove(&h.id);
        lock(&inst.closed_remote_tracks).insert(&h.id);
    }
}

pub fn lookup(
    specter: Term<'_>,
    track: Term<'_>,
) -> NifResult<(Arc<Instance>, Arc<RemoteTrackHandle>)> {
    let s = instance(specter)?;
    let id = string_arg(track, "track")?;
    let key = normalize_id(&id).ok_or(Error::NotFound)?;
    let found = lock(&s.inner.remote_tracks).get(&key).cloned();
    match found {
        Some(h) => Ok((Arc::clone(&s.inner), h)),
        None if lock(&s.inner.closed_remote_tracks).contains(&key) => Err(Error::Closed),
        None => Err(Error::NotFound),
    }
}

#[rustler::nif]
fn tr_set_active<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    track: Term<'a>,
    active: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, track)?;
        h.credit.set(Active::decode(active)?);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn tr_info<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>) -> Term<'a> {
    let res = lookup(specter, track).map(|(_, h)| {
        let info = lock(&h.info).clone();
        let mut m = info_term(env, &info);
        for (k, v) in [
            (atoms::peer_connection(), h.pc_id.as_str().encode(env)),
            (
                atoms::packet_count(),
                h.packets.load(Ordering::Relaxed).encode(env),
            ),
            (
                atoms::duplicates(),
                h.duplicates.load(Ordering::Relaxed).encode(env),
            ),
            (
                atoms::forwarded(),
                h.forwarded.load(Ordering::Relaxed).encode(env),
            ),
            (
                atoms::forward_time_us(),
                (h.forward_ns.load(Ordering::Relaxed) / 1_000).encode(env),
            ),
        ] {
            m = m.map_put(k.encode(env), v).unwrap_or(m);
        }
        (atoms::ok(), m)
    });
    encode_result(env, res)
}

/// Sends a PLI (`fir: false`) or FIR to the track's sender.
#[rustler::nif]
fn tr_request_keyframe<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    track: Term<'a>,
    fir: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let fir: bool = fir
            .decode()
            .map_err(|_| Error::InvalidOption("fir".into()))?;
        let (inst, h) = lookup(specter, track)?;
        inst.handle.spawn(async move {
            let _ = h.request_keyframe(fir).await;
        });
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

fn local_entry(inst: &Instance, track: Term<'_>) -> NifResult<Arc<TrackEntry>> {
    let key = track
        .decode::<String>()
        .ok()
        .and_then(|t| normalize_id(&t))
        .ok_or(Error::InvalidTrack)?;
    let found = lock(&inst.tracks).get(&key).cloned();
    found.ok_or(Error::InvalidTrack)
}

/// Starts forwarding the remote track's RTP to a local track (on any number of connections).
#[rustler::nif]
fn tr_forward<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>, local: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup(specter, track)?;
        let entry = local_entry(&inst, local)?;
        let remote_mime = lock(&h.info)
            .codec
            .as_ref()
            .map(|c| c.mime_type.clone())
            .unwrap_or_default();
        if !remote_mime.eq_ignore_ascii_case(&entry.codec.mime_type) {
            return Err(Error::InvalidCodec(format!(
                "the remote track is {remote_mime}, the local track {}",
                entry.codec.mime_type
            )));
        }
        {
            let mut forwards = lock(&h.forwards);
            if !forwards
                .iter()
                .any(|w| w.upgrade().is_some_and(|e| Arc::ptr_eq(&e, &entry)))
            {
                forwards.push(Arc::downgrade(&entry));
            }
        }
        *lock(&entry.source) = Arc::downgrade(&h);
        // Subscribers need a keyframe to start decoding.
        inst.handle.spawn(async move {
            let _ = h.request_keyframe(false).await;
        });
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn tr_unforward<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>, local: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup(specter, track)?;
        let entry = local_entry(&inst, local)?;
        lock(&h.forwards).retain(|w| w.upgrade().is_some_and(|e| !Arc::ptr_eq(&e, &entry)));
        let mut source = lock(&entry.source);
        if source.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &h)) {
            *source = Weak::new();
        }
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// Adds a process that gets every packet of the track as `{:rtp, track, packet}`.
#[rustler::nif]
fn tr_relay<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>, pid: Term<'a>) -> Term<'a> {
    let res = (|| {
        let pid: LocalPid = pid.decode().map_err(|_| Error::InvalidArgument("pid"))?;
        let (_, h) = lookup(specter, track)?;
        let mut sinks = lock(&h.sinks);
        if !sinks.contains(&pid) {
            sinks.push(pid);
        }
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// Removes a relay sink.
#[rustler::nif]
fn tr_unrelay<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>, pid: Term<'a>) -> Term<'a> {
    let res = (|| {
        let pid: LocalPid = pid.decode().map_err(|_| Error::InvalidArgument("pid"))?;
        let (_, h) = lookup(specter, track)?;
        lock(&h.sinks).retain(|p| *p != pid);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn tr_exists(specter: Term<'_>, track: Term<'_>) -> bool {
    lookup(specter, track).is_ok()
}
