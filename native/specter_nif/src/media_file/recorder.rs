//! A recording of one remote track: VP8/VP9/AV1 into Specter's IVF writer (RTP timing, whole
//! frames only), Opus into Ogg and H.264 into Annex-B through webrtc-rs's writers.

use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtc::media::io::h26x_writer::H26xWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::media::io::Writer;
use rtc::rtp;
use rustler::{Encoder, LocalPid};

use specter_core::recording::{guard_parser, repair_ogg_tail, IvfCodec, IvfRecorder};

use crate::atoms;
use crate::error::{Error, NifResult};
use crate::mailbox;
use specter_core::registry::lock;

/// Where a recorder's packets go: VP8/VP9/AV1 into Specter's IVF writer (RTP timing,
/// whole frames only), Opus and H.264 into webrtc-rs's writers.
pub enum RecordWriter {
    Ivf(IvfRecorder<BufWriter<File>>),
    Ogg(Box<dyn Writer + Send>),
    Other(Box<dyn Writer + Send>),
}

impl RecordWriter {
    fn write_rtp(&mut self, pkt: &rtp::Packet) -> rtc::shared::error::Result<()> {
        match self {
            RecordWriter::Ivf(w) => w.write_rtp(pkt),
            // webrtc-rs's depacketizers may panic on a malformed packet from the remote: that
            // must cost the packet, not the track's reader task (and the recorder's lock).
            RecordWriter::Ogg(w) | RecordWriter::Other(w) => guard_parser(|| w.write_rtp(pkt)),
        }
    }

    fn wants_keyframe(&self) -> bool {
        matches!(self, RecordWriter::Ivf(w) if w.wants_keyframe())
    }

    /// Closes the file: `(frames, frames dropped)` for IVF.
    fn close(&mut self, path: &str) -> Result<Option<(u32, u64)>, String> {
        match self {
            RecordWriter::Ivf(w) => {
                w.close().map_err(|e| e.to_string())?;
                Ok(Some((w.frames(), w.dropped())))
            }
            RecordWriter::Ogg(w) => {
                w.close().map_err(|e| e.to_string())?;
                // webrtc-rs writes the last page twice (see `repair_ogg_tail`).
                let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                if repair_ogg_tail(&mut bytes) {
                    std::fs::write(path, bytes).map_err(|e| e.to_string())?;
                }
                Ok(None)
            }
            RecordWriter::Other(w) => w.close().map(|_| None).map_err(|e| e.to_string()),
        }
    }
}

pub struct Recorder {
    pub id: String,
    path: String,
    writer: Mutex<Option<RecordWriter>>,
    packets: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    pub caller: LocalPid,
}

impl Recorder {
    /// A recorder writing to `path` through `writer`, for `caller`.
    pub fn new(path: String, writer: RecordWriter, caller: LocalPid) -> Arc<Self> {
        Arc::new(Self {
            id: specter_core::registry::new_id(),
            path,
            writer: Mutex::new(Some(writer)),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            caller,
        })
    }

    /// Writes one RTP packet (the writer depacketizes). True when the recording waits for
    /// a keyframe (at its start, or after a lost packet), so the caller can ask for one.
    pub fn write(&self, pkt: &rtp::Packet) -> bool {
        let mut writer = lock(&self.writer);
        let Some(w) = writer.as_mut() else {
            return false;
        };
        match w.write_rtp(pkt) {
            Ok(()) => {
                self.packets.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        w.wants_keyframe()
    }

    /// Closes the file and tells the caller of `record`:
    /// `{:record_finished, recorder, %{path, packet_count, bytes}}` (plus `frames` and
    /// `frames_dropped` for IVF).
    pub fn finish(&self) {
        let Some(mut writer) = lock(&self.writer).take() else {
            return;
        };
        let closed = writer.close(&self.path);
        drop(writer);
        let id = self.id.clone();
        let path = self.path.clone();
        let packets = self.packets.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        mailbox::send(self.caller, move |env| match closed {
            Ok(frames) => {
                let mut m = rustler::types::map::map_new(env);
                let mut pairs = vec![
                    (atoms::path(), path.as_str().encode(env)),
                    (atoms::packet_count(), packets.encode(env)),
                    (atoms::bytes(), bytes.encode(env)),
                ];
                if let Some((frames, dropped)) = frames {
                    pairs.push((atoms::frames(), frames.encode(env)));
                    pairs.push((atoms::frames_dropped(), dropped.encode(env)));
                }
                for (k, v) in pairs {
                    m = m.map_put(k.encode(env), v).unwrap_or(m);
                }
                (atoms::record_finished(), id.as_str(), m).encode(env)
            }
            Err(e) => (atoms::record_error(), id.as_str(), Error::Webrtc(e)).encode(env),
        });
    }
}

pub fn writer_for(
    mime: &str,
    clock_rate: u32,
    channels: u16,
    path: &str,
) -> NifResult<RecordWriter> {
    let file = File::create(path).map_err(|_| Error::InvalidArgument("path"))?;
    if let Some(codec) = IvfCodec::from_mime(mime) {
        let w = IvfRecorder::new(BufWriter::new(file), codec)
            .map_err(|e| Error::Webrtc(e.to_string()))?;
        return Ok(RecordWriter::Ivf(w));
    }
    match mime.to_ascii_lowercase().as_str() {
        "audio/opus" => {
            let w =
                OggWriter::new(BufWriter::new(file), clock_rate.max(1), channels.clamp(1, 2) as u8)
                    .map_err(|e| Error::Webrtc(e.to_string()))?;
            Ok(RecordWriter::Ogg(Box::new(w)))
        }
        "video/h264" => {
            Ok(RecordWriter::Other(Box::new(H26xWriter::new(BufWriter::new(file), false))))
        }
        other => Err(Error::InvalidCodec(format!("cannot record {other}"))),
    }
}
