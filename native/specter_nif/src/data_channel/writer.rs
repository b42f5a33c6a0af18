//! A channel's writer: it owns an ordered queue of sends (and the close), so a NIF never
//! waits for the connection's lock. `send` refuses (`:buffer_full`) rather than queue past
//! the instance's `data_channel_send_buffer_limit`; the owner is told when the buffered
//! amount falls to the channel's low threshold.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustler::Encoder;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;

use super::handle::{Outgoing, Shared};
use crate::atoms;
use crate::error::Error;

/// Sends what the NIFs queue, in order, and reports drains and errors.
pub async fn run(
    h: Arc<Shared>,
    channel: Arc<dyn DataChannel>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    loop {
        // Between sends: if the owner waits for a drain, watch the SCTP buffer empty out.
        let next = match rx.try_recv() {
            Ok(out) => Some(out),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                if (h.above_threshold.load(Ordering::Acquire)
                    || h.sctp_buffered.load(Ordering::Acquire) > 0)
                    && !h.shutdown.load(Ordering::Acquire)
                {
                    watch_drain(&h, &channel, &mut rx).await
                } else {
                    tokio::select! {
                        out = rx.recv() => out,
                        _ = h.drain_wanted.notified() => continue,
                    }
                }
            }
        };
        let Some(out) = next else { break };
        let res = match out {
            Outgoing::Binary(data) => {
                let n = data.len();
                let r = send_binary(&channel, data).await;
                h.handed_to_sctp(n, r.is_ok());
                r
            }
            Outgoing::Text(text) => {
                let n = text.len();
                let r = send_text(&channel, &text).await;
                h.handed_to_sctp(n, r.is_ok());
                r
            }
            Outgoing::Close => {
                flush_before_close(&h, &channel).await;
                channel.close().await
            }
        };
        if let Err(e) = res {
            let err = Error::from_webrtc(&e);
            h.emit(move |env, dc| (atoms::data_channel_error(), dc, err).encode(env));
        }
    }
}

/// Hands a message to webrtc-rs. `try_send` takes the connection's lock once (`send` takes
/// it twice when a send-buffer limit is set: once to wait for room, once to send). When the
/// buffer is full, fall back to `send`, which waits for room. (Not `writable` + `try_send`
/// in a loop: `writable` admits a buffer one byte under the limit that `try_send` then
/// refuses, and the two would spin.)
async fn send_binary(channel: &Arc<dyn DataChannel>, data: BytesMut) -> webrtc::error::Result<()> {
    // `try_send` consumes its argument even when it refuses it.
    match channel.try_send(data.clone()).await {
        Err(webrtc::error::Error::ErrSendBufferFull) => channel.send(data).await,
        other => other,
    }
}

async fn send_text(channel: &Arc<dyn DataChannel>, text: &str) -> webrtc::error::Result<()> {
    match channel.try_send_text(text).await {
        Err(webrtc::error::Error::ErrSendBufferFull) => channel.send_text(text).await,
        other => other,
    }
}

/// How long `close/2` waits for messages already handed to SCTP to be acknowledged.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// W3C `close()` sends what was queued before it. webrtc-rs resets the SCTP stream at once,
/// dropping whatever SCTP has not transmitted yet, so wait for the buffer to drain first;
/// but not once the channel or its connection is gone (closed, or its owner exited): the
/// bytes will never be acknowledged, and the wait would keep the writer task and the
/// channel alive for the whole limit.
async fn flush_before_close(h: &Shared, channel: &Arc<dyn DataChannel>) {
    let deadline = tokio::time::Instant::now() + CLOSE_FLUSH_LIMIT;
    let mut pause = Duration::from_millis(1);
    while let Ok(outstanding) = channel.outstanding_bytes().await {
        if outstanding == 0
            || h.shutdown.load(Ordering::Acquire)
            || tokio::time::Instant::now() >= deadline
        {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The writer's queue is empty but the buffered amount is above the low threshold: poll
/// the SCTP buffer until it drains to the threshold (then tell the owner), or until there
/// is something new to send.
async fn watch_drain(
    h: &Shared,
    channel: &Arc<dyn DataChannel>,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> Option<Outgoing> {
    // A sender that keeps the queue busy empties it between every two messages: give it a
    // moment before watching the SCTP buffer, so a steady stream costs no polling.
    tokio::select! {
        out = rx.recv() => return out,
        _ = tokio::time::sleep(Duration::from_millis(1)) => {}
    }
    let mut pause = Duration::from_micros(500);
    loop {
        if h.shutdown.load(Ordering::Acquire) {
            return rx.recv().await;
        }
        let buffered = channel.outstanding_bytes().await.unwrap_or(0);
        h.sctp_buffered.store(buffered, Ordering::Release);
        if h.queued.load(Ordering::Acquire) + buffered <= h.low_threshold.load(Ordering::Acquire)
            && h.above_threshold.swap(false, Ordering::AcqRel)
        {
            h.emit(|env, dc| (atoms::data_channel_buffered_amount_low(), dc).encode(env));
        }
        if buffered == 0 {
            // Everything acknowledged: nothing more to watch until the next send.
            return rx.recv().await;
        }
        tokio::select! {
            out = rx.recv() => return out,
            _ = tokio::time::sleep(pause) => {}
        }
        // A peer that stopped acknowledging is watched ever more lazily.
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
