//! `Specter.MediaFile`: play IVF (VP8/VP9/AV1), Ogg Opus and H.264 Annex-B files into local
//! tracks paced in real time, and record remote tracks to IVF, Ogg or H.264.

use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rtc::media::io::h26x_writer::H26xWriter;
use rtc::media::io::ivf_reader::IVFFileHeader;
use rtc::media::io::ivf_writer::IVFWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::media::io::Writer;
use rtc::media::Sample;
use rtc::rtp;
use rustler::{Encoder, Env, LocalPid, Term};

use specter_core::media::{parse, vp8_keyframe_size, MediaError};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::mailbox;
use crate::specter::{instance, lock, new_id, normalize_id, string_arg};
use crate::track_local::TrackEntry;
use crate::track_remote;

/// Largest file `play` loads.
const MAX_PLAY_FILE: u64 = 512 * 1024 * 1024;

pub struct Recorder {
    pub id: String,
    path: String,
    writer: Mutex<Option<Box<dyn Writer + Send>>>,
    packets: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    caller: LocalPid,
    /// VP8 in IVF: the frame size, read from the first keyframe, goes into the file header.
    vp8: bool,
    size: Mutex<Option<(u16, u16)>>,
}

impl Recorder {
    /// Writes one RTP packet (the writer depacketizes).
    pub fn write(&self, pkt: &rtp::Packet) {
        if self.vp8 {
            let mut size = lock(&self.size);
            if size.is_none() {
                *size = vp8_keyframe_size(&pkt.payload);
            }
        }
        let mut writer = lock(&self.writer);
        if let Some(w) = writer.as_mut() {
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
        }
    }

    /// Closes the file and tells the caller of `record`:
    /// `{:record_finished, recorder, %{path, packets, bytes}}`.
    pub fn finish(&self) {
        let Some(mut writer) = lock(&self.writer).take() else {
            return;
        };
        let mut closed = writer.close().map_err(|e| e.to_string());
        drop(writer);
        if let (Ok(()), Some((w, h))) = (&closed, *lock(&self.size)) {
            closed = patch_ivf_size(&self.path, w, h).map_err(|e| e.to_string());
        }
        let id = self.id.clone();
        let path = self.path.clone();
        let packets = self.packets.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        mailbox::send(self.caller, move |env| match closed {
            Ok(()) => {
                let mut m = rustler::types::map::map_new(env);
                for (k, v) in [
                    (atoms::path(), path.as_str().encode(env)),
                    (atoms::packet_count(), packets.encode(env)),
                    (atoms::bytes(), bytes.encode(env)),
                ] {
                    m = m.map_put(k.encode(env), v).unwrap_or(m);
                }
                (atoms::record_finished(), id.as_str(), m).encode(env)
            }
            Err(e) => (atoms::record_error(), id.as_str(), Error::Webrtc(e)).encode(env),
        });
    }
}

/// Writes a frame size into an IVF file's header (bytes 12..16).
fn patch_ivf_size(path: &str, width: u16, height: u16) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.seek(SeekFrom::Start(12))?;
    let mut size = [0u8; 4];
    size[..2].copy_from_slice(&width.to_le_bytes());
    size[2..].copy_from_slice(&height.to_le_bytes());
    file.write_all(&size)
}

fn writer_for(
    mime: &str,
    clock_rate: u32,
    channels: u16,
    path: &str,
) -> NifResult<Box<dyn Writer + Send>> {
    let file = File::create(path).map_err(|_| Error::InvalidArgument("path"))?;
    let lower = mime.to_ascii_lowercase();
    let fourcc = match lower.as_str() {
        "video/vp8" => Some(*b"VP80"),
        "video/vp9" => Some(*b"VP90"),
        "video/av1" => Some(*b"AV01"),
        _ => None,
    };
    if let Some(four_cc) = fourcc {
        let header = IVFFileHeader {
            signature: *b"DKIF",
            version: 0,
            header_size: 32,
            four_cc,
            width: 640,
            height: 480,
            timebase_denominator: clock_rate.max(1),
            timebase_numerator: 1,
            num_frames: 0,
            unused: 0,
        };
        let w = IVFWriter::new(BufWriter::new(file), &header)
            .map_err(|e| Error::Webrtc(e.to_string()))?;
        return Ok(Box::new(w));
    }
    match lower.as_str() {
        "audio/opus" => {
            let w = OggWriter::new(
                BufWriter::new(file),
                clock_rate.max(1),
                channels.clamp(1, 2) as u8,
            )
            .map_err(|e| Error::Webrtc(e.to_string()))?;
            Ok(Box::new(w))
        }
        "video/h264" => Ok(Box::new(H26xWriter::new(BufWriter::new(file), false))),
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
            vp8: codec.mime_type.eq_ignore_ascii_case("video/vp8"),
            size: Mutex::new(None),
        });
        lock(&inst.recorders).insert(recorder.id.clone(), Arc::clone(&recorder));
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
        lock(&s.inner.players).insert(id.clone(), Arc::clone(&stop));
        let caller = env.pid();
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
            .cloned()
            .ok_or(Error::NotFound)?;
        stop.store(true, Ordering::Release);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
