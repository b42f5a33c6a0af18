//! `Specter.MediaFile`: play IVF (VP8/VP9/AV1), Ogg Opus and H.264 Annex-B files into local
//! tracks paced in real time, and record remote tracks to IVF, Ogg or H.264.

pub mod player;
pub mod recorder;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustler::{Atom, Env, Term};

use specter_core::media::{parse, MediaError};

use crate::atoms;
use crate::error::{Error, NifResult};
use crate::instance::{Instance, Specter};
use crate::nif::{answer, int_arg, Answer, Arg, Path, PlayerId, RecorderId, TrackId};
use player::{Player, Playing};
use recorder::{writer_for, Recorder};
use specter_core::registry::{lock, new_id};

/// Largest file `play` loads.
const MAX_PLAY_FILE: u64 = 512 * 1024 * 1024;

/// Starts recording a remote track to `path` (format from the track's codec).
#[rustler::nif(schedule = "DirtyIo")]
fn media_file_record(
    env: Env<'_>,
    specter: Arg<Specter>,
    track: Arg<TrackId>,
    path: Arg<Path>,
) -> Answer<(Atom, String)> {
    answer(|| {
        let resource = specter.get()?.0;
        let inst = Arc::clone(&resource.inner);
        let h = inst.remote_tracks.get(&track.get()?.0)?;
        let path = path.get()?.0;
        let codec = lock(&h.info)
            .codec
            .clone()
            .ok_or_else(|| Error::InvalidCodec("the track's codec is not known yet".into()))?;
        let writer = writer_for(&codec.mime_type, codec.clock_rate, codec.channels, &path)?;
        let recorder = Recorder::new(path, writer, env.pid());
        inst.recorders.insert(recorder.id.clone(), Arc::clone(&recorder));
        // A recording stops when its caller exits (see `Instance::owner_down`).
        let _ = env.monitor(&resource, &recorder.caller);
        lock(&h.recording).attach(Arc::clone(&recorder));
        if h.ended.load(Ordering::Acquire) {
            lock(&h.recording).recorders.clear();
            inst.recorders.remove(&recorder.id);
            recorder.finish();
        } else if codec.mime_type.to_ascii_lowercase().starts_with("video") {
            // A recording starts cleanly on a keyframe.
            inst.handle.spawn(async move {
                let _ = h.request_keyframe(false).await;
            });
        }
        Ok((atoms::ok(), recorder.id.clone()))
    })
}

/// Stops a recording; the caller of `record` gets `{:record_finished, recorder, info}`.
#[rustler::nif(schedule = "DirtyIo")]
fn media_file_stop_record(specter: Arg<Specter>, recorder: Arg<RecorderId>) -> Answer<Atom> {
    answer(|| {
        let inst = specter.instance()?;
        let id = recorder.get()?.0;
        let recorder = inst.recorders.get(&id)?;
        inst.recorders.remove(&recorder.id);
        for h in inst.remote_tracks.values() {
            lock(&h.recording).recorders.retain(|r| !Arc::ptr_eq(r, &recorder));
        }
        recorder.finish();
        Ok(atoms::ok())
    })
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

/// The file's frames, checked against the track's codec.
fn load(path: &str, fps: u32, mime_type: &str) -> NifResult<Vec<(Bytes, Duration)>> {
    let meta = std::fs::metadata(path).map_err(|_| Error::InvalidArgument("path"))?;
    if meta.len() > MAX_PLAY_FILE {
        return Err(Error::TooLarge);
    }
    let bytes = std::fs::read(path).map_err(|_| Error::InvalidArgument("path"))?;
    let media = parse(&bytes, fps).map_err(media_error)?;
    if !media.mime_type.eq_ignore_ascii_case(mime_type) {
        return Err(Error::InvalidCodec(format!(
            "the file is {}, the track {mime_type}",
            media.mime_type
        )));
    }
    Ok(media.frames.into_iter().map(|f| (Bytes::from(f.data), f.duration)).collect())
}

/// Plays a file into a local sample track, paced by the frames' durations. The caller gets
/// `{:play_finished, player, %{frames: n}}` at the end (or after `stop_play`), or
/// `{:play_error, player, reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn media_file_play(
    env: Env<'_>,
    specter: Arg<Specter>,
    track: Term<'_>,
    path: Arg<Path>,
    fps: Term<'_>,
    repeat: Term<'_>,
) -> Answer<(Atom, String)> {
    answer(|| {
        let fps: u32 = int_arg(fps)
            .filter(|f| (1..=240).contains(f))
            .ok_or_else(|| Error::InvalidOption("fps".into()))?;
        let repeat: bool = repeat.decode().map_err(|_| Error::InvalidOption("repeat".into()))?;
        let resource = specter.get()?.0;
        let inst = Arc::clone(&resource.inner);
        let entry = inst.local_track(track)?;
        let frames = load(&path.get()?.0, fps, &entry.codec.mime_type)?;
        let id = new_id();
        let stop = Arc::new(AtomicBool::new(false));
        let caller = env.pid();
        let player = Player { stop: Arc::clone(&stop), caller };
        inst.players.insert(id.clone(), Arc::new(player));
        // A player stops when its caller exits (see `Instance::owner_down`).
        let _ = env.monitor(&resource, &caller);
        let playing = Playing {
            id: id.clone(),
            stop,
            caller,
            entry: Arc::downgrade(&entry),
            repeat,
            is_open: track_open(&inst, &entry.id),
            on_done: forget_player(&inst, &id),
        };
        inst.handle.spawn(player::run(playing, frames));
        Ok((atoms::ok(), id))
    })
}

fn track_open(inst: &Arc<Instance>, track_id: &str) -> Box<dyn Fn() -> bool + Send> {
    let (inst, track_id) = (Arc::downgrade(inst), track_id.to_owned());
    Box::new(move || inst.upgrade().is_some_and(|i| i.tracks.contains(&track_id)))
}

fn forget_player(inst: &Arc<Instance>, id: &str) -> Box<dyn FnOnce() + Send> {
    let (inst, id) = (Arc::downgrade(inst), id.to_owned());
    Box::new(move || {
        if let Some(inst) = inst.upgrade() {
            inst.players.remove(&id);
        }
    })
}

#[rustler::nif]
fn media_file_stop_play(specter: Arg<Specter>, player: Arg<PlayerId>) -> Answer<Atom> {
    answer(|| {
        let inst = specter.instance()?;
        let player = inst.players.get(&player.get()?.0)?;
        player.stop.store(true, Ordering::Release);
        Ok(atoms::ok())
    })
}
