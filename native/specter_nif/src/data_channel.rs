//! `Specter.DataChannel`: channels created locally or announced by the remote peer.
//!
//! Every channel gets a UUID handle, a reader task and a writer task:
//!
//! * The **reader** turns channel events into messages to the owner. Incoming messages are
//!   delivered under `:gen_tcp`-style flow control: `active` is `true`, `false`, `:once` or a
//!   count. While the owner grants no credit the reader stops taking messages from
//!   webrtc-rs, whose bounded queues then close the SCTP receive window: a slow consumer
//!   slows the sender down instead of growing anyone's memory.
//! * The **writer** owns an ordered queue of sends (and the close), so a NIF never waits for
//!   the connection's lock. `send` refuses (`:buffer_full`) rather than queue past the
//!   instance's `data_channel_send_buffer_limit`; the owner is told when the buffered amount
//!   falls to the channel's low threshold.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use rustler::{Binary, Encoder, Env, LocalPid, Term};
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

use specter_core::runtime::Wake;

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::flow::{Active, Credit};
use crate::mailbox;
use crate::peer_connection::{make_op, reply, PcEvents};
use crate::specter::{instance, lock, new_id, normalize_id, string_arg, Instance};

const CONNECTING: u8 = 0;
const OPEN: u8 = 1;
const CLOSING: u8 = 2;
const CLOSED: u8 = 3;

/// The SCTP maximum message size assumed until the transport reports the negotiated one
/// (RFC 8841's default when the remote does not say).
const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;

/// How long a receiving channel must go without a message, after receiving some, before the
/// reader nudges the driver to resume streams webrtc-rs parked at its read backlog limit.
const IDLE_NUDGE_AFTER: Duration = Duration::from_millis(3);

fn state_name(s: u8) -> &'static str {
    match s {
        CONNECTING => "connecting",
        OPEN => "open",
        CLOSING => "closing",
        _ => "closed",
    }
}

/// What a channel was created with; fixed for its lifetime (the stream id and maximum
/// message size are learned when it opens).
#[derive(Debug, Clone, Default)]
pub struct DcInfo {
    pub label: String,
    pub protocol: String,
    pub ordered: bool,
    pub negotiated: bool,
    pub stream_id: Option<u16>,
    pub max_retransmits: Option<u16>,
    pub max_packet_life_time: Option<u16>,
}

enum Outgoing {
    Binary(BytesMut),
    Text(String),
    Close,
}

/// What the writer task shares with the handle. Kept apart from the handle because the
/// handle owns the writer's queue sender: a writer holding the handle would never see its
/// queue close.
struct Shared {
    id: String,
    owner: Mutex<LocalPid>,
    /// Bytes in the writer's queue, not yet handed to webrtc-rs.
    queued: AtomicUsize,
    /// Bytes webrtc-rs holds for the channel (sent, not yet acknowledged), as last read.
    sctp_buffered: AtomicUsize,
    low_threshold: AtomicUsize,
    /// The buffered amount went above the low threshold since the last low event.
    above_threshold: AtomicBool,
    /// Wakes the writer to report a drain (a send was refused, or the threshold moved).
    drain_wanted: Notify,
    /// The channel or its connection is gone.
    shutdown: AtomicBool,
}

impl Shared {
    fn owner(&self) -> LocalPid {
        *lock(&self.owner)
    }

    fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let id = self.id.clone();
        mailbox::send(self.owner(), move |env| {
            let dc = id.encode(env);
            f(env, dc)
        });
    }

    fn buffered_amount(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.sctp_buffered.load(Ordering::Acquire)
    }

    /// A message left the queue for webrtc-rs: count it as unacknowledged until the next
    /// reading of SCTP's buffer says otherwise.
    fn handed_to_sctp(&self, bytes: usize, accepted: bool) {
        if accepted {
            self.sctp_buffered.fetch_add(bytes, Ordering::AcqRel);
        }
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

pub struct DcHandle {
    pub id: String,
    pub pc_id: String,
    info: Mutex<DcInfo>,
    shared: Arc<Shared>,
    state: AtomicU8,
    channel: OnceLock<Arc<dyn DataChannel>>,
    tx: mpsc::UnboundedSender<Outgoing>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    max_message_size: AtomicUsize,
    active: Credit,
    credit: Notify,
    /// Up to how many waiting messages go to the owner in one Erlang message (1 = one each).
    batch: AtomicUsize,
    /// The owner called `close/2` (W3C: no `closing` event then), or `closing` was sent.
    closing_done: AtomicBool,
    wake: Arc<Wake>,
    pc: Weak<PcEvents>,
}

impl DcHandle {
    fn new(events: &Arc<PcEvents>, info: DcInfo, active: Active) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = new_id();
        Arc::new(Self {
            id: id.clone(),
            pc_id: events.id.clone(),
            info: Mutex::new(info),
            shared: Arc::new(Shared {
                id,
                owner: Mutex::new(events.owner()),
                queued: AtomicUsize::new(0),
                sctp_buffered: AtomicUsize::new(0),
                low_threshold: AtomicUsize::new(0),
                above_threshold: AtomicBool::new(false),
                drain_wanted: Notify::new(),
                shutdown: AtomicBool::new(false),
            }),
            state: AtomicU8::new(CONNECTING),
            channel: OnceLock::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            max_message_size: AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE),
            active: Credit::new(active),
            credit: Notify::new(),
            batch: AtomicUsize::new(1),
            closing_done: AtomicBool::new(false),
            wake: Arc::clone(&events.wake),
            pc: Arc::downgrade(events),
        })
    }

    fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        self.shared.emit(f);
    }

    /// Stops a reader that waits for credit and a writer that waits for a drain (the
    /// connection is closing).
    pub fn shut_down(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.credit.notify_one();
        self.shared.drain_wanted.notify_one();
    }

    /// `{:data_channel_closing, dc}`, once, unless the owner closed the channel itself.
    fn announce_closing(&self) {
        if !self.closing_done.swap(true, Ordering::AcqRel) {
            self.emit(|env, dc| (atoms::data_channel_closing(), dc).encode(env));
        }
    }

    /// Takes one message's worth of credit, if there is any. `Some(true)` means a count ran
    /// out with it (the owner is told after the message). Taken before the message is sent,
    /// so credit granted meanwhile is never spent on it.
    fn take_credit(&self) -> Option<bool> {
        self.active.take()
    }

    async fn wait_for_credit(&self) -> bool {
        loop {
            let notified = self.credit.notified();
            if self.shared.shutdown.load(Ordering::Acquire) {
                return false;
            }
            if self.active.has() {
                return true;
            }
            notified.await;
        }
    }
}

/// Starts the reader and writer of a channel that now exists in webrtc-rs.
fn attach(inst: &Arc<Instance>, handle: &Arc<DcHandle>, channel: Arc<dyn DataChannel>) {
    if handle.channel.set(Arc::clone(&channel)).is_err() {
        return;
    }
    let rx = lock(&handle.rx).take();
    if let Some(rx) = rx {
        // A weak reference: the handle owns the queue's sender, so a strong one would keep
        // the writer (and the connection) alive forever.
        inst.handle
            .spawn(writer(Arc::clone(&handle.shared), Arc::clone(&channel), rx));
    }
    let budget = inst.config.data_channel_receive_buffer;
    inst.handle.spawn(reader(
        Arc::downgrade(inst),
        Arc::clone(handle),
        channel,
        budget,
    ));
}

/// Learns the channel's SCTP stream id and the negotiated maximum message size.
async fn learn_transport_facts(handle: &DcHandle, channel: &Arc<dyn DataChannel>) {
    let Some(pc) = handle.pc.upgrade().and_then(|e| e.peer_connection()) else {
        return;
    };
    if let Some(sctp) = pc.sctp().await {
        if let Ok(max) = sctp.max_message_size().await {
            if max > 0 {
                handle
                    .max_message_size
                    .store(max as usize, Ordering::Release);
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
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    let id = match report.get(&key) {
        Some(RTCStatsReportEntry::DataChannel(s)) => Some(s.data_channel_identifier),
        _ => None,
    };
    id
}

/// The reader's working state (see `reader`).
struct Reader {
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
}

impl Reader {
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
            let mut items = Vec::with_capacity(batch.min(self.held.len()));
            let mut count_ran_out = false;
            while items.len() < batch && !self.held.is_empty() {
                let Some(ran_out) = self.handle.take_credit() else {
                    break;
                };
                if let Some(item) = self.held.pop_front() {
                    self.held_bytes -= item.1.len();
                    items.push(item);
                }
                if ran_out {
                    count_ran_out = true;
                    break;
                }
            }
            if items.is_empty() {
                return;
            }
            deliver_batch(&self.handle, items, count_ran_out);
        }
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
                self.handle.state.store(OPEN, Ordering::Release);
                self.handle
                    .emit(|env, dc| (atoms::data_channel_open(), dc).encode(env));
            }
            DataChannelEvent::OnMessage(msg) => {
                self.hold(msg.is_string, msg.data);
                self.collect_ready();
            }
            DataChannelEvent::OnClosing => {
                self.handle.state.store(CLOSING, Ordering::Release);
                self.handle.announce_closing();
            }
            // webrtc-rs 0.21.1 defines OnClosing but never emits it: when the remote peer
            // closes, `closing` is announced once the messages before it are delivered.
            DataChannelEvent::OnClose => self.closing = true,
            DataChannelEvent::OnError => {
                self.handle.emit(|env, dc| {
                    (
                        atoms::data_channel_error(),
                        dc,
                        Error::Webrtc("data channel error".into()),
                    )
                        .encode(env)
                });
            }
            // The writer reports drains itself (see `writer`): these events share a queue
            // with incoming messages, so they stall whenever the owner stops reading.
            _ => {}
        }
    }
}

async fn reader(
    inst: Weak<Instance>,
    handle: Arc<DcHandle>,
    channel: Arc<dyn DataChannel>,
    budget: usize,
) {
    let idle = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(idle);
    let mut armed = false;
    let mut seen: u64 = 0;
    let mut nudges_left = 0u8;
    let mut r = Reader {
        handle,
        channel,
        held: VecDeque::new(),
        held_bytes: 0,
        budget,
        closing: false,
        deferred: None,
        received: 0,
    };
    loop {
        r.flush();
        if let Some(event) = r.deferred.take() {
            r.handle_event(event).await;
            continue;
        }
        if r.handle.shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        if r.closing && r.held.is_empty() {
            r.handle.state.store(CLOSING, Ordering::Release);
            r.handle.announce_closing();
            break;
        }
        // Take more from webrtc-rs while under budget. With nothing held the reader always
        // polls, so lifecycle events (`open`) flow even for a passive owner; it then holds at
        // most one message beyond the budget.
        let may_take = !r.closing && (r.held.is_empty() || r.held_bytes < r.budget);
        if !may_take {
            // Wait for credit (or shutdown); the loop's top then hands over what is held.
            if !r.handle.wait_for_credit().await {
                break;
            }
            continue;
        }
        let credit = r.handle.credit.notified();
        let held_any = !r.held.is_empty();
        let event = tokio::select! {
            biased;
            event = r.channel.poll() => event,
            _ = credit, if held_any => continue,
            _ = &mut idle, if armed => {
                if r.received != seen {
                    // Still busy: look again later.
                    seen = r.received;
                    nudges_left = 2;
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_NUDGE_AFTER);
                } else if nudges_left > 0 {
                    // Messages stopped arriving: webrtc-rs may hold some it parked at its
                    // read backlog limit, which it only resumes when a datagram arrives.
                    r.handle.wake.nudge();
                    nudges_left -= 1;
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_NUDGE_AFTER * 4);
                } else {
                    armed = false;
                }
                continue;
            }
        };
        let Some(event) = event else {
            r.closing = true;
            continue;
        };
        if !armed && matches!(event, DataChannelEvent::OnMessage(_)) {
            armed = true;
            seen = r.received;
            nudges_left = 2;
            idle.as_mut()
                .reset(tokio::time::Instant::now() + IDLE_NUDGE_AFTER);
        }
        r.handle_event(event).await;
    }
    let handle = r.handle;
    handle.state.store(CLOSED, Ordering::Release);
    handle.shut_down();
    handle.emit(|env, dc| (atoms::data_channel_close(), dc).encode(env));
    if let Some(inst) = inst.upgrade() {
        lock(&inst.data_channels).remove(&handle.id);
        lock(&inst.closed_dcs).insert(&handle.id);
    }
}

/// Sends several incoming messages as one `{:data_channel_messages, dc, [...]}` (their
/// credit already taken), then `{:data_channel_passive, dc}` if a count ran out.
fn deliver_batch(handle: &DcHandle, items: Vec<(bool, BytesMut)>, count_ran_out: bool) {
    handle.emit(move |env, dc| {
        let list: Vec<Term<'_>> = items
            .iter()
            .map(|(text, data)| {
                let bin = rustler::OwnedBinary::from_slice(data);
                let kind = if *text {
                    atoms::text()
                } else {
                    atoms::binary()
                };
                (kind, bin.release(env)).encode(env)
            })
            .collect();
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
        let bin = rustler::OwnedBinary::from_slice(&data);
        let kind = if text { atoms::text() } else { atoms::binary() };
        (atoms::data_channel_message(), dc, (kind, bin.release(env))).encode(env)
    });
    if count_ran_out {
        handle.emit(|env, dc| (atoms::data_channel_passive(), dc).encode(env));
    }
}

async fn writer(
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

/// A channel the remote peer opened: register it and tell the owner.
pub fn announce_remote(events: &Arc<PcEvents>, channel: Arc<dyn DataChannel>) {
    let Some(inst) = events.instance.upgrade() else {
        return;
    };
    let handle = DcHandle::new(events, DcInfo::default(), inst.default_active());
    lock(&inst.data_channels).insert(handle.id.clone(), Arc::clone(&handle));
    let dc_id = handle.id.clone();
    let inst2 = Arc::clone(&inst);
    let events = Arc::clone(events);
    // The channel's parameters are read from the connection, so do it off the driver task.
    inst.handle.spawn(async move {
        let info = DcInfo {
            label: channel.label().await.unwrap_or_default(),
            protocol: channel.protocol().await.unwrap_or_default(),
            ordered: channel.ordered().await.unwrap_or(true),
            negotiated: channel.negotiated().await.unwrap_or(false),
            stream_id: None,
            max_retransmits: channel.max_retransmits().await.unwrap_or(None),
            max_packet_life_time: channel.max_packet_life_time().await.unwrap_or(None),
        };
        *lock(&handle.info) = info;
        events.emit(move |env, pc| (atoms::data_channel(), pc, dc_id.as_str()).encode(env));
        attach(&inst2, &handle, channel);
    });
}

/// Points the channels of a connection at its new owner.
pub fn reassign_owner(inst: &Instance, pc_id: &str, old: LocalPid, new: LocalPid) {
    for dc in lock(&inst.data_channels).values() {
        if dc.pc_id == pc_id {
            let mut owner = lock(&dc.shared.owner);
            if *owner == old {
                *owner = new;
            }
        }
    }
}

fn opt_u16(opts: Term<'_>, key: &str) -> NifResult<Option<u16>> {
    let env = opts.get_env();
    let atom = rustler::Atom::from_str(env, key).map_err(|_| Error::InvalidOption(key.into()))?;
    match opts.map_get(atom.encode(env)) {
        Ok(v) if v == atoms::nil().encode(env) => Ok(None),
        Ok(v) => crate::specter::int_arg::<u16>(v)
            .map(Some)
            .ok_or_else(|| Error::InvalidOption(key.into())),
        Err(_) => Ok(None),
    }
}

/// Decodes the options map Elixir normalized from `RTCDataChannelInit` (+ `active`).
fn channel_init(opts: Term<'_>) -> NifResult<(RTCDataChannelInit, DcInfo, Option<Active>)> {
    let env = opts.get_env();
    let get = |key: &str| -> Option<Term<'_>> {
        let atom = rustler::Atom::from_str(env, key).ok()?;
        opts.map_get(atom.encode(env)).ok()
    };
    let ordered = match get("ordered") {
        Some(v) => v
            .decode::<bool>()
            .map_err(|_| Error::InvalidOption("ordered".into()))?,
        None => true,
    };
    let protocol = match get("protocol") {
        Some(v) => v
            .decode::<String>()
            .map_err(|_| Error::InvalidOption("protocol".into()))?,
        None => String::new(),
    };
    let max_retransmits = opt_u16(opts, "max_retransmits")?;
    let max_packet_life_time = opt_u16(opts, "max_packet_life_time")?;
    if max_retransmits.is_some() && max_packet_life_time.is_some() {
        return Err(Error::InvalidOption("max_retransmits".into()));
    }
    let negotiated = match get("negotiated") {
        Some(v) => v
            .decode::<bool>()
            .map_err(|_| Error::InvalidOption("negotiated".into()))?,
        None => false,
    };
    let id = opt_u16(opts, "id")?;
    let negotiated_id = match (negotiated, id) {
        (true, Some(id)) if id < u16::MAX => Some(id),
        (true, _) => return Err(Error::InvalidOption("id".into())),
        (false, _) => None,
    };
    let active = get("active").map(Active::decode).transpose()?;
    let init = RTCDataChannelInit {
        ordered,
        max_packet_life_time,
        max_retransmits,
        protocol: protocol.clone(),
        negotiated: negotiated_id,
    };
    let info = DcInfo {
        label: String::new(),
        protocol,
        ordered,
        negotiated,
        stream_id: negotiated_id,
        max_retransmits,
        max_packet_life_time,
    };
    Ok((init, info, active))
}

/// Creates a channel on a connection. `seed_reply` answers `{:data_channel_created, pc}`
/// (Specter 0.5); otherwise `{:data_channel_created, pc, dc}`.
#[rustler::nif]
fn dc_create<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    label: Term<'a>,
    opts: Term<'a>,
    seed_reply: bool,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let pc_id = string_arg(pc, "peer_connection")?;
        let label = string_arg(label, "label")?;
        if label.len() > u16::MAX as usize {
            return Err(Error::TooLarge);
        }
        let (init, mut info, active) = channel_init(opts)?;
        info.label = label.clone();
        let h = s.inner.pc(&pc_id)?;
        let handle = DcHandle::new(
            &h.events,
            info,
            active.unwrap_or_else(|| s.inner.default_active()),
        );
        lock(&s.inner.data_channels).insert(handle.id.clone(), Arc::clone(&handle));
        let inst = Arc::clone(&s.inner);
        let dc_id = handle.id.clone();
        let reply_id = dc_id.clone();
        let returned_id = dc_id.clone();
        h.submit(make_op(
            &h.events,
            env.pid(),
            "create_data_channel",
            move |pc| async move {
                match pc.create_data_channel(&label, Some(init)).await {
                    Ok(channel) => attach(&inst, &handle, channel),
                    Err(e) => {
                        lock(&inst.data_channels).remove(&dc_id);
                        return Err(Error::from_webrtc(&e));
                    }
                }
                Ok(if seed_reply {
                    reply(|env, pc| (atoms::data_channel_created(), pc).encode(env))
                } else {
                    reply(move |env, pc| {
                        (atoms::data_channel_created(), pc, reply_id.as_str()).encode(env)
                    })
                })
            },
        ));
        Ok((atoms::ok(), returned_id))
    })();
    encode_result(env, res)
}

fn lookup(specter: Term<'_>, dc: Term<'_>) -> NifResult<Arc<DcHandle>> {
    lookup_with(specter, dc).map(|(_, h)| h)
}

fn lookup_with(specter: Term<'_>, dc: Term<'_>) -> NifResult<(Arc<Instance>, Arc<DcHandle>)> {
    let s = instance(specter)?;
    let id = string_arg(dc, "data_channel")?;
    let key = normalize_id(&id).ok_or(Error::NotFound)?;
    let found = lock(&s.inner.data_channels).get(&key).cloned();
    match found {
        Some(h) => Ok((Arc::clone(&s.inner), h)),
        None if lock(&s.inner.closed_dcs).contains(&key) => Err(Error::Closed),
        None => Err(Error::NotFound),
    }
}

/// Queues a message. `text` marks a UTF-8 text message.
#[rustler::nif]
fn dc_send<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    dc: Term<'a>,
    data: Term<'a>,
    text: bool,
) -> Term<'a> {
    let res = (|| {
        let (inst, h) = lookup_with(specter, dc)?;
        let bin: Binary<'_> = data.decode().map_err(|_| Error::InvalidArgument("data"))?;
        let state = h.state.load(Ordering::Acquire);
        if state != OPEN {
            return Err(if state == CLOSED {
                Error::Closed
            } else {
                Error::InvalidState(state_name(state).into())
            });
        }
        let len = bin.len();
        if len > h.max_message_size.load(Ordering::Acquire) {
            return Err(Error::TooLarge);
        }
        let limit = inst.config.data_channel_send_buffer_limit;
        let sh = &h.shared;
        let queued = sh.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > limit {
            sh.above_threshold.store(true, Ordering::Release);
            sh.drain_wanted.notify_one();
            return Err(Error::BufferFull);
        }
        let out = if text {
            let s =
                std::str::from_utf8(bin.as_slice()).map_err(|_| Error::InvalidArgument("data"))?;
            Outgoing::Text(s.to_owned())
        } else {
            Outgoing::Binary(BytesMut::from(bin.as_slice()))
        };
        sh.queued.fetch_add(len, Ordering::AcqRel);
        if sh.buffered_amount() > sh.low_threshold.load(Ordering::Acquire) {
            sh.above_threshold.store(true, Ordering::Release);
        }
        if h.tx.send(out).is_err() {
            sh.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Error::Closed);
        }
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_close<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let h = lookup(specter, dc)?;
        let state = h.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Err(Error::Closed);
        }
        h.state.store(CLOSING.max(state), Ordering::Release);
        h.closing_done.store(true, Ordering::Release);
        h.tx.send(Outgoing::Close).map_err(|_| Error::Closed)?;
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_ready_state<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>) -> Term<'a> {
    let res = lookup(specter, dc).map(|h| {
        let name = state_name(h.state.load(Ordering::Acquire));
        (
            atoms::ok(),
            rustler::Atom::from_str(env, name).unwrap_or_else(|_| atoms::error()),
        )
    });
    encode_result(env, res)
}

#[rustler::nif]
fn dc_set_active<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>, active: Term<'a>) -> Term<'a> {
    let res = (|| {
        let h = lookup(specter, dc)?;
        let next = Active::decode(active)?;
        h.active.set(next);
        h.credit.notify_one();
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_set_batch<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>, batch: Term<'a>) -> Term<'a> {
    let res = (|| {
        let h = lookup(specter, dc)?;
        let n: usize = batch
            .decode()
            .ok()
            .filter(|n| (1..=65_536).contains(n))
            .ok_or_else(|| Error::InvalidOption("batch".into()))?;
        h.batch.store(n, Ordering::Release);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_buffered_amount<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>) -> Term<'a> {
    let res = lookup(specter, dc).map(|h| (atoms::ok(), h.shared.buffered_amount()));
    encode_result(env, res)
}

#[rustler::nif]
fn dc_set_buffered_amount_low_threshold<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    dc: Term<'a>,
    threshold: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let h = lookup(specter, dc)?;
        let threshold: usize = threshold
            .decode()
            .map_err(|_| Error::InvalidArgument("threshold"))?;
        h.shared.low_threshold.store(threshold, Ordering::Release);
        h.shared.drain_wanted.notify_one();
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_info<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>) -> Term<'a> {
    let res = lookup(specter, dc).map(|h| {
        let info = lock(&h.info).clone();
        let nil = atoms::nil().encode(env);
        let opt = |v: Option<u16>| v.map(|n| n.encode(env)).unwrap_or(nil);
        let mut map = rustler::types::map::map_new(env);
        for (k, v) in [
            (atoms::label(), info.label.as_str().encode(env)),
            (atoms::protocol(), info.protocol.as_str().encode(env)),
            (atoms::ordered(), info.ordered.encode(env)),
            (atoms::negotiated(), info.negotiated.encode(env)),
            (atoms::id(), opt(info.stream_id)),
            (atoms::max_retransmits(), opt(info.max_retransmits)),
            (
                atoms::max_packet_life_time(),
                opt(info.max_packet_life_time),
            ),
            (
                atoms::max_message_size(),
                h.max_message_size.load(Ordering::Acquire).encode(env),
            ),
            (
                atoms::buffered_amount_low_threshold(),
                h.shared.low_threshold.load(Ordering::Acquire).encode(env),
            ),
            (atoms::peer_connection(), h.pc_id.as_str().encode(env)),
        ] {
            map = map.map_put(k.encode(env), v).unwrap_or(map);
        }
        (atoms::ok(), map)
    });
    encode_result(env, res)
}
