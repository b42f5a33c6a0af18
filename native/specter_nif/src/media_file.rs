//! `Specter.MediaFile`: play IVF (VP8/VP9/AV1), Ogg Opus and H.264 Annex-B files into local
//! tracks paced in real time, and record remote tracks to IVF, Ogg or H.264.

use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rtc::media::io::h26x_writer::H26xWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::media::io::Writer;
use rtc::media::Sample;
use rtc::rtp;
use rustler::{Encoder, Env, LocalPid, Term};

use specter_core::media::{parse, MediaError};
use specter_core::recording::{guard_parser, repair_ogg_tail, IvfCodec, IvfRecorder};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::mailbox;
use crate::specter::{instance, lock, new_id, normalize_id, string_arg};
use crate::track_local::TrackEntry;
use crate::track_remote;

/// Largest file `play` loads.
const MAX_PLAY_FILE: u64 = 512 * 1024 * 1024;

/// A running file player.
pub struct Player {
    pub stop: Arc<AtomicBool>,
    pub caller: LocalPid,
}

/// Where a recorder's packets go: VP8/VP9/AV1 into Specter's IVF writer (RTP timing,
/// whole frames only), Opus and H.264 into webrtc-rs's writers.
enum RecordWriter {
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
                self.bytes
                    .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
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

fn writer_for(mime: &str, clock_rate: u32, channels: u16, path: &str) -> NifResult<RecordWriter> {
    let file = File::create(path).map_err(|_| Error::InvalidArgument("path"))?;
    if let Some(codec) = IvfCodec::from_mime(mime) {
        let w = IvfRecorder::new(BufWriter::new(file), codec)
            .map_err(|e| Error::Webrtc(e.to_string()))?;
        return Ok(RecordWriter::Ivf(w));
    }
    match mime.to_ascii_lowercase().as_str() {
        "audio/opus" => {
            let w = OggWriter::new(
                BufWriter::new(file),
                clock_rate.max(1),
                channels.clamp(1, 2) as u8,
            )
            .map_err(|e| Error::Webrtc(e.to_string()))?;
            Ok(RecordWriter::Ogg(Box::new(w)))
        }
        "video/h264" => Ok(RecordWriter::Other(Box::new(H26xWriter::new(
            BufWriter::new(file),
            false,
        )))),
        other => Err(Error::InvalidCodec(format!("cannot record {other}"))),
    }
}

/// Starts recording a remote track to `path` (format from the track's codec).
#[rustler::nif(schedule = "DirtyIo")]
fn mf_record<'a>(env: Env<'a>, specter: Term<'a>, track: Term<'a>, path: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (inst, h) = track_remote::lookup(specter, track)?;
        let path = string_arg(path, "path")?;
        let codec = lock(&h.info)
            .codec
            .clone()
            .ok_or_else(|| Error::InvalidCodec("the track's codec is not known yet".into()))?;
        let writer = writer_for(&codec.mime_type, codec.clock_rate, codec.channels, &path)?;
        let recorder = Arc::new(Recorder {
            id: new_id(),
            path,
            writer: Mutex::new(Some(writer)),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            caller: env.pid(),
        });
        lock(&inst.recorders).insert(recorder.id.clone(), Arc::clone(&recorder));
        // A recording stops when its caller exits (see `Instance::owner_down`).
        let s = instance(specter)?;
        let _ = env.monitor(&s, &recorder.caller);
        lock(&h.recording).attach(Arc::clone(&recorder));
        if h.ended.load(Ordering::Acquire) {
            lock(&h.recording).recorders.clear();
            lock(&inst.recorders).remove(&recorder.id);
            recorder.finish();
        } else if codec.mime_type.to_ascii_lowercase().starts_with("video") {
            // A recording starts cleanly on a keyframe.
            inst.handle.spawn(async move {
                let _ = h.request_keyframe(false).await;
            });
        }
        Ok((atoms::ok(), recorder.id.clone()))
    })();
    encode_result(env, res)
}

/// Stops a recording; the caller of `record` gets `{:record_finished, recorder, info}`.
#[rustler::nif(schedule = "DirtyIo")]
fn mf_stop_record<'a>(env: Env<'a>, specter: Term<'a>, recorder: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let id = string_arg(recorder, "recorder")?;
        let key = normalize_id(&id).ok_or(Error::NotFound)?;
        let found = lock(&s.inner.recorders).remove(&key);
        let recorder = found.ok_or(Error::NotFound)?;
        for h in lock(&s.inner.remote_tracks).values() {
            lock(&h.recording)
                .recorders
                .retain(|r| !Arc::ptr_eq(r, &recorder));
        }
        recorder.finish();
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

fn media_error(e: MediaError) -> Error {
    match e {
        MediaError::UnknownFormat => {
            Error::InvalidCodec("not IVF, Ogg Opus or H.264 Annex-B".into())
        }
        MediaError::Malformed(d) => Error::InvalidCodec(format!("malformed file: {d}")),
        MediaError::UnsupportedCodec(c) => Error::InvalidCodec(format!("unsupported codec {c}")),
    }
}

/// Plays a file into a local sample track, paced by the frames' durations. The caller gets
/// `{:play_finished, player, %{frames: n}}` at the end (or after `stop_play`), or
/// `{:play_error, player, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn mf_play<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    track: Term<'a>,
    path: Term<'a>,
    fps: Term<'a>,
    repeat: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let fps: u32 = crate::specter::int_arg(fps)
            .filter(|f| (1..=240).contains(f))
            .ok_or_else(|| Error::InvalidOption("fps".into()))?;
        let repeat: bool = repeat
            .decode()
            .map_err(|_| Error::InvalidOption("repeat".into()))?;
        let s = instance(specter)?;
        let key = track
            .decode::<String>()
            .ok()
            .and_then(|t| normalize_id(&t))
            .ok_or(Error::InvalidTrack)?;
        let entry: Arc<TrackEntry> = lock(&s.inner.tracks)
            .get(&key)
            .cloned()
            .ok_or(Error::InvalidTrack)?;
        let path = string_arg(path, "path")?;
        let meta = std::fs::metadata(&path).map_err(|_| Error::InvalidArgument("path"))?;
        if meta.len() > MAX_PLAY_FILE {
            return Err(Error::TooLarge);
        }
        let bytes = std::fs::read(&path).map_err(|_| Error::InvalidArgument("path"))?;
        let media = parse(&bytes, fps).map_err(media_error)?;
        if !media.mime_type.eq_ignore_ascii_case(&entry.codec.mime_type) {
            return Err(Error::InvalidCodec(format!(
                "the file is {}, the track {}",
                media.mime_type, entry.codec.mime_type
            )));
        }
        let id = new_id();
        let stop = Arc::new(AtomicBool::new(false));
        let caller = env.pid();
        lock(&s.inner.players).insert(
            id.clone(),
            Player {
                stop: Arc::clone(&stop),
                caller,
            },
        );
        // A player stops when its caller exits (see `Instance::owner_down`).
        let _ = env.monitor(&s, &caller);
        let track_id = entry.id.clone();
        let entry = Arc::downgrade(&entry);
        let inst = Arc::downgrade(&s.inner);
        let player_id = id.clone();
        s.inner.handle.spawn(async move {
            let frames: Vec<(Bytes, Duration)> = media
                .frames
                .into_iter()
                .map(|f| (Bytes::from(f.data), f.duration))
                .collect();
            let mut played: u64 = 0;
            let mut next = tokio::time::Instant::now();
            'outer: loop {
                for (data, duration) in &frames {
                    if stop.load(Ordering::Acquire) {
                        break 'outer;
                    }
                    tokio::time::sleep_until(next).await;
                    // The track was closed (or the instance dropped): nothing to play into.
                    let Some(entry) = entry.upgrade() else {
                        break 'outer;
                    };
                    let open = inst
                        .upgrade()
                        .is_some_and(|i| lock(&i.tracks).contains_key(&track_id));
                    if !open {
                        break 'outer;
                    }
                    let sample = Sample {
                        data: data.clone(),
                        timestamp: std::time::Instant::now(),
                        duration: *duration,
                        packet_timestamp: 0,
                        prev_dropped_packets: 0,
                        prev_padding_packets: 0,
                    };
                    for b in entry.live_bindings() {
                        let _ = b.write_sample(&sample).await;
                    }
                    played += 1;
                    next += *duration;
                }
                if !repeat {
                    break;
                }
            }
            if let Some(inst) = inst.upgrade() {
                lock(&inst.players).remove(&player_id);
            }
            mailbox::send(caller, move |env| {
                let mut m = rustler::types::map::map_new(env);
                m = m
                    .map_put(atoms::frames().encode(env), played.encode(env))
                    .unwrap_or(m);
                (atoms::play_finished(), player_id.as_str(), m).encode(env)
            });
        });
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn mf_stop_play<'a>(env: Env<'a>, specter: Term<'a>, player: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let id = string_arg(player, "player")?;
        let key = normalize_id(&id).ok_or(Error::NotFound)?;
        let stop = lock(&s.inner.players)
            .get(&key)
            .map(|p| Arc::clone(&p.stop))
            .ok_or(Error::NotFound)?;
        stop.store(true, Ordering::Release);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
