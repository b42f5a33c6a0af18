//! One remote track: what it is, who hears about it, where its packets go.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rustler::{Encoder, Env, LocalPid, Term};
use webrtc::media_stream::track_remote::TrackRemote;

use crate::error::{Error, NifResult};
use crate::flow::{Active, Credit};
use crate::mailbox::Owner;
use crate::media_file::recorder::Recorder;
use crate::track_local::{KeyframeSource, TrackEntry};
use specter_core::registry::{lock, new_id};

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
pub const PREBUFFER_TIME: Duration = Duration::from_secs(2);
pub const PREBUFFER_PACKETS: usize = 1024;

/// How often a recording that lost a packet asks for a keyframe.
pub const RECORDER_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// A track's recorders, and its first packets while none has come yet.
pub struct Recording {
    pub prebuffer: Option<std::collections::VecDeque<rtc::rtp::Packet>>,
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
    /// The connection's owner, while the connection lives.
    pub owner: Weak<Owner>,
    pub credit: Credit,
    pub forwards: Mutex<Vec<Weak<TrackEntry>>>,
    /// Processes that get every packet (`relay/3`): relays to other nodes, taps.
    pub sinks: Mutex<Vec<LocalPid>>,
    pub recording: Mutex<Recording>,
    last_keyframe_request: Mutex<Option<Instant>>,
    pub announced: Instant,
    pub ended: AtomicBool,
    pub packets: AtomicU64,
    /// Packets that arrived again (same sequence number) and were passed on only once.
    pub duplicates: AtomicU64,
    pub forwarded: AtomicU64,
    /// Time spent handing packets to subscribers (the forwarding loop), in ns.
    pub forward_ns: AtomicU64,
}

impl RemoteTrackHandle {
    /// A remote track of connection `pc_id`, as announced.
    pub fn new(
        pc_id: &str,
        track: Arc<dyn TrackRemote>,
        info: RemoteInfo,
        owner: &Arc<Owner>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: new_id(),
            pc_id: pc_id.to_owned(),
            track,
            info: Mutex::new(info),
            owner: Arc::downgrade(owner),
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
        })
    }

    /// Sends `{...}` built by `f(env, track_id)` to the connection's owner.
    pub fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let Some(owner) = self.owner.upgrade() else {
            return;
        };
        let id = self.id.clone();
        owner.send(move |env| {
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
                fir: vec![FirEntry { ssrc: media_ssrc, sequence_number: 0 }],
            })
        } else {
            Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })
        };
        self.track.write_rtcp(vec![pkt]).await.map_err(|e| Error::from_webrtc(&e))
    }

    /// A PLI, unless one went out less than `interval` ago (subscribers' requests for the
    /// same publisher are merged).
    pub async fn request_keyframe_throttled(&self, interval: Duration) {
        let recent = lock(&self.last_keyframe_request).is_some_and(|t| t.elapsed() < interval);
        if !recent {
            let _ = self.request_keyframe(false).await;
        }
    }

    pub fn forward_targets(&self) -> Vec<Arc<TrackEntry>> {
        let mut forwards = lock(&self.forwards);
        forwards.retain(|w| w.strong_count() > 0);
        forwards.iter().filter_map(Weak::upgrade).collect()
    }
}

#[async_trait::async_trait]
impl KeyframeSource for RemoteTrackHandle {
    async fn request_keyframe_throttled(&self, interval: Duration) {
        RemoteTrackHandle::request_keyframe_throttled(self, interval).await;
    }
}
