//! A channel's reader: channel events become messages to the owner. Incoming messages are
//! delivered under `:gen_tcp`-style flow control: `active` is `true`, `false`, `:once` or a
//! count. While the owner grants no credit the reader stops taking messages from webrtc-rs,
//! whose bounded queues then close the SCTP receive window: a slow consumer slows the sender
//! down instead of growing anyone's memory.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::FutureExt;
use rustler::{Encoder, Term};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

use super::handle::{DcHandle, ReadyState};
use crate::atoms;
use crate::error::Error;
use specter_core::registry::lock;

/// What the instance does when the channel is closed: forget it (its id answers `:closed`).
pub type OnClose = Box<dyn FnOnce(&DcHandle) + Send>;

/// **Parked SCTP streams (webrtc-rs 0.21.1).** The SCTP handler hands at most 256 messages at
/// a time to the data-channel layer and parks the rest; a parked stream is resumed only when
/// a datagram arrives, and at the end of a transfer the next datagram is the ICE keepalive,
/// seconds later. When a receiving channel goes `IDLE_AFTER` without a message after
/// receiving some, the reader nudges the driver (a synthetic STUN Binding Indication, see
/// `specter_core::runtime::Wake::nudge`), twice at most per quiet spell.
/// Test: `data_channel_flow_test.exs` (bulk small messages arrive without a stall).
struct IdleNudge {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    seen: u64,
    left: u8,
}

/// How long a receiving channel must go without a message before the reader nudges.
const IDLE_AFTER: Duration = Duration::from_millis(3);

impl IdleNudge {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
            armed: false,
            seen: 0,
            left: 0,
        }
    }

    fn arm(&mut self, after: Duration) {
        self.armed = true;
        self.sleep.as_mut().reset(tokio::time::Instant::now() + after);
    }

    /// Arms the timer on the first message of a spell.
    fn on_message(&mut self, received: u64) {
        if !self.armed {
            self.seen = received;
            self.left = 2;
            self.arm(IDLE_AFTER);
        }
    }

    /// The timer fired: look again later while messages still come, else nudge.
    fn fire(&mut self, received: u64, handle: &DcHandle) {
        if received != self.seen {
            self.seen = received;
            self.left = 2;
            self.arm(IDLE_AFTER);
        } else if self.left > 0 {
            handle.wake.nudge();
            self.left -= 1;
            self.arm(IDLE_AFTER * 4);
        } else {
            self.armed = false;
        }
    }
}

/// The reader's working state.
pub struct Reader {
    handle: Arc<DcHandle>,
    channel: Arc<dyn DataChannel>,
    /// Messages taken from webrtc-rs that the owner has no credit for yet, up to `budget`
    /// bytes (like a socket's receive buffer). Past it the reader stops polling, webrtc-rs's
    /// bounded queues fill and SCTP closes its window. Keeping the window open through short
    /// pauses matters: webrtc-rs sends no window update when it reopens, so a closed window
    /// costs the sender a retransmission timeout. Lifecycle events queue behind held
    /// messages, so `close` never overtakes data.
    held: VecDeque<(bool, BytesMut)>,
    held_bytes: usize,
    budget: usize,
    closing: bool,
    /// An event met while collecting a batch of messages, handled after the batch.
    deferred: Option<DataChannelEvent>,
    received: u64,
    idle: IdleNudge,
}

/// What the loop does next.
enum Step {
    Event(Option<DataChannelEvent>),
    Again,
    Stop,
}

impl Reader {
    pub fn new(handle: Arc<DcHandle>, channel: Arc<dyn DataChannel>, budget: usize) -> Self {
        Self {
            handle,
            channel,
            held: VecDeque::new(),
            held_bytes: 0,
            budget,
            closing: false,
            deferred: None,
            received: 0,
            idle: IdleNudge::new(),
        }
    }

    /// Reads until the channel closes or shuts down, then reports `close`.
    pub async fn run(mut self, on_close: OnClose) {
        loop {
            self.flush();
            if let Some(event) = self.deferred.take() {
                self.handle_event(event).await;
                continue;
            }
            match self.next().await {
                Step::Event(Some(event)) => {
                    if matches!(event, DataChannelEvent::OnMessage(_)) {
                        self.idle.on_message(self.received);
                    }
                    self.handle_event(event).await;
                }
                Step::Event(None) => self.closing = true,
                Step::Again => {}
                Step::Stop => break,
            }
        }
        let handle = self.handle;
        handle.set_state(ReadyState::Closed);
        handle.shut_down();
        handle.emit(|env, dc| (atoms::data_channel_close(), dc).encode(env));
        on_close(&handle);
    }

    /// Waits for the next event, credit, or the idle timer.
    async fn next(&mut self) -> Step {
        if self.handle.shared.shutdown.load(Ordering::Acquire) {
            return Step::Stop;
        }
        if self.closing && self.held.is_empty() {
            self.handle.set_state(ReadyState::Closing);
            self.handle.announce_closing();
            return Step::Stop;
        }
        // Take more from webrtc-rs while under budget. With nothing held the reader always
        // polls, so lifecycle events (`open`) flow even for a passive owner; it then holds at
        // most one message beyond the budget.
        let may_take = !self.closing && (self.held.is_empty() || self.held_bytes < self.budget);
        if !may_take {
            // Wait for credit (or shutdown); the loop's top then hands over what is held.
            return match self.handle.wait_for_credit().await {
                true => Step::Again,
                false => Step::Stop,
            };
        }
        let credit = self.handle.credit.notified();
        let held_any = !self.held.is_empty();
        let armed = self.idle.armed;
        tokio::select! {
            biased;
            event = self.channel.poll() => Step::Event(event),
            _ = credit, if held_any => Step::Again,
            _ = &mut self.idle.sleep, if armed => {
                self.idle.fire(self.received, &self.handle);
                Step::Again
            }
        }
    }

    /// Hands the owner what it has credit for, one message per Erlang message or in batches.
    fn flush(&mut self) {
        while !self.held.is_empty() {
            let batch = self.handle.batch.load(Ordering::Acquire).max(1);
            if batch == 1 {
                let Some(count_ran_out) = self.handle.take_credit() else {
                    return;
                };
                if let Some((text, data)) = self.held.pop_front() {
                    self.held_bytes -= data.len();
                    deliver(&self.handle, text, data, count_ran_out);
                }
                continue;
            }
            let (items, count_ran_out) = self.take_batch(batch);
            if items.is_empty() {
                return;
            }
            deliver_batch(&self.handle, items, count_ran_out);
        }
    }

    /// Up to `batch` held messages the owner has credit for, and whether a count ran out.
    fn take_batch(&mut self, batch: usize) -> (Vec<(bool, BytesMut)>, bool) {
        let mut items = Vec::with_capacity(batch.min(self.held.len()));
        while items.len() < batch && !self.held.is_empty() {
            let Some(ran_out) = self.handle.take_credit() else {
                break;
            };
            if let Some(item) = self.held.pop_front() {
                self.held_bytes -= item.1.len();
                items.push(item);
            }
            if ran_out {
                return (items, true);
            }
        }
        (items, false)
    }

    fn hold(&mut self, text: bool, data: BytesMut) {
        self.received += 1;
        self.held_bytes += data.len();
        self.held.push_back((text, data));
    }

    /// With batching on, takes the messages webrtc-rs already has, without waiting.
    fn collect_ready(&mut self) {
        let batch = self.handle.batch.load(Ordering::Acquire);
        while batch > 1 && self.held.len() < batch && self.held_bytes < self.budget {
            match self.channel.poll().now_or_never() {
                Some(Some(DataChannelEvent::OnMessage(msg))) => self.hold(msg.is_string, msg.data),
                Some(Some(other)) => {
                    self.deferred = Some(other);
                    return;
                }
                Some(None) => {
                    self.closing = true;
                    return;
                }
                None => return,
            }
        }
    }

    async fn handle_event(&mut self, event: DataChannelEvent) {
        match event {
            DataChannelEvent::OnOpen => {
                learn_transport_facts(&self.handle, &self.channel).await;
                self.handle.set_state(ReadyState::Open);
                self.handle.emit(|env, dc| (atoms::data_channel_open(), dc).encode(env));
            }
            DataChannelEvent::OnMessage(msg) => {
                self.hold(msg.is_string, msg.data);
                self.collect_ready();
            }
            DataChannelEvent::OnClosing => {
                self.handle.set_state(ReadyState::Closing);
                self.handle.announce_closing();
            }
            // webrtc-rs 0.21.1 defines OnClosing but never emits it: when the remote peer
            // closes, `closing` is announced once the messages before it are delivered.
            DataChannelEvent::OnClose => self.closing = true,
            DataChannelEvent::OnError => {
                let err = Error::Webrtc("data channel error".into());
                self.handle.emit(move |env, dc| (atoms::data_channel_error(), dc, err).encode(env));
            }
            // The writer reports drains itself (see `writer`): these events share a queue
            // with incoming messages, so they stall whenever the owner stops reading.
            _ => {}
        }
    }
}

/// Learns the channel's SCTP stream id and the negotiated maximum message size.
async fn learn_transport_facts(handle: &DcHandle, channel: &Arc<dyn DataChannel>) {
    let Some(pc) = handle.pc.upgrade().and_then(|e| e.peer_connection()) else {
        return;
    };
    if let Some(sctp) = pc.sctp().await {
        if let Ok(max) = sctp.max_message_size().await {
            if max > 0 {
                handle.max_message_size.store(max as usize, Ordering::Release);
            }
        }
    }
    if lock(&handle.info).stream_id.is_none() {
        if let Some(id) = stream_id(&pc, channel).await {
            lock(&handle.info).stream_id = Some(id);
        }
    }
}

/// webrtc-rs names a channel's stats `RTCDataChannel_<handle>`; they carry the stream id.
async fn stream_id(pc: &Arc<dyn PeerConnection>, channel: &Arc<dyn DataChannel>) -> Option<u16> {
    let key = format!("RTCDataChannel_{}", channel.id());
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    match report.get(&key) {
        Some(RTCStatsReportEntry::DataChannel(s)) => Some(s.data_channel_identifier),
        _ => None,
    }
}

/// Sends several incoming messages as one `{:data_channel_messages, dc, [...]}` (their
/// credit already taken), then `{:data_channel_passive, dc}` if a count ran out.
fn deliver_batch(handle: &DcHandle, items: Vec<(bool, BytesMut)>, count_ran_out: bool) {
    handle.emit(move |env, dc| {
        let list: Vec<Term<'_>> =
            items.iter().map(|(text, data)| message(env, *text, data)).collect();
        (atoms::data_channel_messages(), dc, list).encode(env)
    });
    if count_ran_out {
        handle.emit(|env, dc| (atoms::data_channel_passive(), dc).encode(env));
    }
}

/// Sends one incoming message to the owner (its credit already taken), then
/// `{:data_channel_passive, dc}` if that was the last of a count.
fn deliver(handle: &DcHandle, text: bool, data: BytesMut, count_ran_out: bool) {
    handle.emit(move |env, dc| {
        (atoms::data_channel_message(), dc, message(env, text, &data)).encode(env)
    });
    if count_ran_out {
        handle.emit(|env, dc| (atoms::data_channel_passive(), dc).encode(env));
    }
}

/// `{:text | :binary, data}`.
fn message<'a>(env: rustler::Env<'a>, text: bool, data: &[u8]) -> Term<'a> {
    let bin = rustler::OwnedBinary::from_slice(data);
    let kind = if text { atoms::text() } else { atoms::binary() };
    (kind, bin.release(env)).encode(env)
}
