//! A file player: frames written to a local track's bindings, paced by their durations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rtc::media::Sample;
use rustler::{Encoder, LocalPid};

use crate::atoms;
use crate::mailbox;
use crate::rtcp::map;
use crate::track_local::TrackEntry;

/// A running file player.
pub struct Player {
    pub stop: Arc<AtomicBool>,
    pub caller: LocalPid,
}

/// What a player task needs besides its frames.
pub struct Playing {
    pub id: String,
    pub stop: Arc<AtomicBool>,
    pub caller: LocalPid,
    pub entry: Weak<TrackEntry>,
    pub repeat: bool,
    /// Whether the track is still open (Elixir may close it while the task holds it).
    pub is_open: Box<dyn Fn() -> bool + Send>,
    /// Called once at the end (the instance forgets the player).
    pub on_done: Box<dyn FnOnce() + Send>,
}

/// Plays `frames` until they end (or for ever with `repeat`), the player is stopped, or the
/// track closes; then `{:play_finished, player, %{frames: n}}` to the caller.
pub async fn run(p: Playing, frames: Vec<(Bytes, Duration)>) {
    let mut played: u64 = 0;
    let mut next = tokio::time::Instant::now();
    'outer: loop {
        for (data, duration) in &frames {
            if p.stop.load(Ordering::Acquire) {
                break 'outer;
            }
            tokio::time::sleep_until(next).await;
            // The track was closed (or the instance dropped): nothing to play into.
            let Some(entry) = p.entry.upgrade().filter(|_| (p.is_open)()) else {
                break 'outer;
            };
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
        if !p.repeat {
            break;
        }
    }
    (p.on_done)();
    let id = p.id;
    mailbox::send(p.caller, move |env| {
        let info = map(env, &[(atoms::frames(), played.encode(env))]);
        (atoms::play_finished(), id.as_str(), info).encode(env)
    });
}
