//! Local tracks: what `Specter.TrackLocalStaticSample` and `Specter.TrackLocalStaticRTP`
//! share.
//!
//! A Specter track is a description (codec, track id, stream id). Adding it to a connection
//! creates a *binding*: the connection's own webrtc-rs local track and RTP sender, with its
//! own SSRC. Writes to the Specter track go to every binding; a binding can be moved to
//! another Specter track (`replace_track`) without renegotiation. Each binding also has a
//! task (`rtcp_task`) that turns the RTCP its sender receives (PLI, FIR, NACK, receiver
//! reports) into messages to the connection's owner, and relays keyframe requests to the
//! remote track a forwarded track comes from.

pub mod rtcp_task;
pub mod static_rtp;
pub mod static_sample;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::rtp_transceiver::RtpSender;

use crate::error::{Error, NifResult};
use crate::mailbox::Owner;
use specter_core::registry::lock;

/// Where a forwarded track's keyframe requests go: the remote track it forwards
/// (`track_remote::RemoteTrackHandle`).
#[async_trait::async_trait]
pub trait KeyframeSource: Send + Sync {
    /// A PLI to the publisher, unless one went out less than `interval` ago.
    async fn request_keyframe_throttled(&self, interval: Duration);
}

/// Samples or RTP packets waiting to be written to a track's bindings.
pub const WRITE_QUEUE: usize = 512;

/// What a Specter track accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Sample,
    Rtp,
}

/// The webrtc-rs local track of one binding.
#[derive(Clone)]
pub enum LocalTrack {
    Sample(Arc<TrackLocalStaticSample>),
    Rtp(Arc<TrackLocalStaticRTP>),
}

impl LocalTrack {
    pub fn as_track_local(&self) -> Arc<dyn TrackLocal> {
        match self {
            LocalTrack::Sample(t) => Arc::clone(t) as Arc<dyn TrackLocal>,
            LocalTrack::Rtp(t) => Arc::clone(t) as Arc<dyn TrackLocal>,
        }
    }

    pub(crate) async fn poll(&self) -> Option<TrackLocalEvent> {
        match self {
            LocalTrack::Sample(t) => t.poll().await,
            LocalTrack::Rtp(t) => t.poll().await,
        }
    }

    fn write_rtp_now(&self, pkt: rtp::Packet) -> Option<webrtc::error::Result<()>> {
        match self {
            LocalTrack::Sample(t) => t.write_rtp(pkt).now_or_never(),
            LocalTrack::Rtp(t) => t.write_rtp(pkt).now_or_never(),
        }
    }
}

/// One connection's sender of a Specter track.
pub struct Binding {
    pub pc_id: String,
    pub sender_id: String,
    pub sender: Arc<dyn RtpSender>,
    pub local: LocalTrack,
    pub ssrc: u32,
    /// The codec the binding's packetizer (or RTP rewriting) was made for.
    mime_type: String,
    /// Negotiated payload type, once known.
    payload_type: Mutex<Option<u8>>,
    /// The Specter track currently writing into this binding.
    pub entry: Mutex<Weak<TrackEntry>>,
    /// Who hears the sender's RTCP: the connection's owner, while the connection lives.
    pub owner: Weak<Owner>,
    /// Packets a full sender queue made us drop (forwarding never waits for a subscriber).
    pub dropped: AtomicU64,
    pub stopped: AtomicBool,
}

impl Binding {
    /// The codec this binding sends.
    pub fn mime_type(&self) -> &str {
        &self.mime_type
    }

    /// The payload type negotiated for the binding's codec on its sender.
    async fn payload_type(&self) -> Option<u8> {
        if let Some(pt) = *lock(&self.payload_type) {
            return Some(pt);
        }
        let params = self.sender.get_parameters().await.ok()?;
        let pt = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&self.mime_type))
            .or_else(|| params.rtp_parameters.codecs.first())
            .map(|c| c.payload_type)?;
        *lock(&self.payload_type) = Some(pt);
        Some(pt)
    }

    pub async fn write_sample(&self, sample: &Sample) -> webrtc::error::Result<()> {
        let LocalTrack::Sample(track) = &self.local else {
            return Ok(());
        };
        let Some(pt) = self.payload_type().await else {
            // Not negotiated yet: media written before the connection is up is dropped.
            return Ok(());
        };
        track.write_sample(self.ssrc, pt, sample, &[]).await
    }

    /// Writes a packet as this binding's stream: its SSRC, its negotiated payload type, no
    /// header extensions (their ids are per connection). Never waits: a full sender queue
    /// drops the packet for this binding only.
    pub async fn forward(&self, pkt: &rtp::Packet) {
        let Some(pt) = self.payload_type().await else {
            return;
        };
        let mut out = pkt.clone();
        out.header.ssrc = self.ssrc;
        out.header.payload_type = pt;
        out.header.extension = false;
        out.header.extensions.clear();
        out.header.extension_profile = 0;
        match self.local.write_rtp_now(out) {
            Some(Ok(())) => {}
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Something to write to a track's bindings.
pub enum Write {
    Sample(Bytes, Duration),
    Rtp(rtp::Packet),
}

pub struct TrackEntry {
    pub id: String,
    pub flavor: Flavor,
    pub codec: RTCRtpCodec,
    pub kind: RtpCodecKind,
    pub track_id: String,
    pub stream_id: String,
    pub bindings: Mutex<Vec<Arc<Binding>>>,
    writer: Mutex<Option<mpsc::Sender<Write>>>,
    /// The remote track this track forwards, if any (keyframe requests go there).
    pub source: Mutex<Option<Weak<dyn KeyframeSource>>>,
}

impl TrackEntry {
    pub fn new(
        id: String,
        flavor: Flavor,
        codec: RTCRtpCodec,
        kind: RtpCodecKind,
        track_id: String,
        stream_id: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            flavor,
            codec,
            kind,
            track_id,
            stream_id,
            bindings: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            source: Mutex::new(None),
        })
    }

    /// A fresh webrtc-rs local track for one connection, with its own SSRC.
    pub fn local_track(&self) -> NifResult<(LocalTrack, u32)> {
        let ssrc = rand_ssrc();
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
        // Whatever the Specter track's flavor, a binding packetizes when its codec can be, so
        // `replace_track` may hand it a track of either flavor; RTP passes through both.
        let local = match TrackLocalStaticSample::new(Instant::now(), track.clone()) {
            Ok(t) => LocalTrack::Sample(Arc::new(t)),
            Err(_) => LocalTrack::Rtp(Arc::new(TrackLocalStaticRTP::new(track))),
        };
        Ok((local, ssrc))
    }

    /// Registers a binding of connection `pc_id` (whose owner is `owner`) and starts its
    /// RTCP task.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        pc_id: &str,
        owner: &Arc<Owner>,
        sender_id: String,
        sender: Arc<dyn RtpSender>,
        local: LocalTrack,
        ssrc: u32,
    ) -> Arc<Binding> {
        let binding = Arc::new(Binding {
            pc_id: pc_id.to_owned(),
            sender_id,
            sender,
            local,
            ssrc,
            mime_type: self.codec.mime_type.clone(),
            payload_type: Mutex::new(None),
            entry: Mutex::new(Arc::downgrade(self)),
            owner: Arc::downgrade(owner),
            dropped: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        lock(&self.bindings).push(Arc::clone(&binding));
        handle.spawn(rtcp_task::run(Arc::downgrade(&binding), binding.local.clone()));
        binding
    }

    /// Queues a write for every binding. `:buffer_full` when the writer is behind.
    pub fn submit(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        write: Write,
    ) -> NifResult<()> {
        let mut writer = lock(&self.writer);
        let tx = writer.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            handle.spawn(write_task(Arc::downgrade(self), rx));
            tx
        });
        tx.try_send(write).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::BufferFull,
            mpsc::error::TrySendError::Closed(_) => Error::Closed,
        })
    }

    /// The bindings to write to now.
    pub fn live_bindings(&self) -> Vec<Arc<Binding>> {
        lock(&self.bindings)
            .iter()
            .filter(|b| !b.stopped.load(Ordering::Acquire))
            .cloned()
            .collect()
    }
}

pub fn rand_ssrc() -> u32 {
    let b = uuid::Uuid::new_v4();
    let bytes = b.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes queued samples and packets to the track's bindings, in order. Holds the track
/// weakly: when Elixir forgets it, the queue closes and the task ends.
async fn write_task(entry: Weak<TrackEntry>, mut rx: mpsc::Receiver<Write>) {
    while let Some(write) = rx.recv().await {
        let Some(entry) = entry.upgrade() else { break };
        let bindings = entry.live_bindings();
        drop(entry);
        match write {
            Write::Sample(data, duration) => {
                let sample = Sample {
                    data,
                    timestamp: Instant::now(),
                    duration,
                    packet_timestamp: 0,
                    prev_dropped_packets: 0,
                    prev_padding_packets: 0,
                };
                for b in bindings {
                    let _ = b.write_sample(&sample).await;
                }
            }
            Write::Rtp(pkt) => {
                for b in bindings {
                    b.forward(&pkt).await;
                }
            }
        }
    }
}
