//! One data channel: what it was created with, its state, its owner, and what its reader
//! and writer tasks share with the NIFs.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::BytesMut;
use rustler::{Encoder, Env, NifUnitEnum, Term};
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::DataChannel;

use crate::atoms;
use crate::flow::{Active, Credit};
use crate::mailbox::Owner;
use crate::peer_connection::shared::PcEvents;
use specter_core::registry::new_id;
use specter_core::runtime::Wake;

/// W3C `RTCDataChannelState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, NifUnitEnum)]
#[repr(u8)]
pub enum ReadyState {
    Connecting = 0,
    Open = 1,
    Closing = 2,
    Closed = 3,
}

impl ReadyState {
    fn from_u8(n: u8) -> Self {
        match n {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }

    /// Its name, as `{:invalid_state, name}` reports it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Closed => "closed",
        }
    }
}

/// The SCTP maximum message size assumed until the transport reports the negotiated one
/// (RFC 8841's default when the remote does not say).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;

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

pub enum Outgoing {
    Binary(BytesMut),
    Text(String),
    Close,
}

/// What the writer task shares with the handle. Kept apart from the handle because the
/// handle owns the writer's queue sender: a writer holding the handle would never see its
/// queue close.
pub struct Shared {
    pub id: String,
    /// The channel's owner (the connection's when it was created; `controlling_process/3`
    /// on the connection moves the channels it owned too).
    pub owner: Arc<Owner>,
    /// Bytes in the writer's queue, not yet handed to webrtc-rs.
    pub queued: AtomicUsize,
    /// Bytes webrtc-rs holds for the channel (sent, not yet acknowledged), as last read.
    pub sctp_buffered: AtomicUsize,
    pub low_threshold: AtomicUsize,
    /// The buffered amount went above the low threshold since the last low event.
    pub above_threshold: AtomicBool,
    /// Wakes the writer to report a drain (a send was refused, or the threshold moved).
    pub drain_wanted: Notify,
    /// The channel or its connection is gone.
    pub shutdown: AtomicBool,
}

impl Shared {
    pub fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let id = self.id.clone();
        self.owner.send(move |env| {
            let dc = id.encode(env);
            f(env, dc)
        });
    }

    pub fn buffered_amount(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.sctp_buffered.load(Ordering::Acquire)
    }

    /// A message left the queue for webrtc-rs: count it as unacknowledged until the next
    /// reading of SCTP's buffer says otherwise.
    pub fn handed_to_sctp(&self, bytes: usize, accepted: bool) {
        if accepted {
            self.sctp_buffered.fetch_add(bytes, Ordering::AcqRel);
        }
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

pub struct DcHandle {
    pub id: String,
    pub pc_id: String,
    pub info: Mutex<DcInfo>,
    pub shared: Arc<Shared>,
    state: AtomicU8,
    pub channel: OnceLock<Arc<dyn DataChannel>>,
    pub tx: mpsc::UnboundedSender<Outgoing>,
    pub rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    pub max_message_size: AtomicUsize,
    pub active: Credit,
    pub credit: Notify,
    /// Up to how many waiting messages go to the owner in one Erlang message (1 = one each).
    pub batch: AtomicUsize,
    /// The owner called `close/2` (W3C: no `closing` event then), or `closing` was sent.
    pub closing_done: AtomicBool,
    pub wake: Arc<Wake>,
    pub pc: Weak<PcEvents>,
}

impl DcHandle {
    pub fn new(events: &Arc<PcEvents>, info: DcInfo, active: Active) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = new_id();
        Arc::new(Self {
            id: id.clone(),
            pc_id: events.id.clone(),
            info: Mutex::new(info),
            shared: Arc::new(Shared {
                id,
                owner: Owner::new(events.owner.pid()),
                queued: AtomicUsize::new(0),
                sctp_buffered: AtomicUsize::new(0),
                low_threshold: AtomicUsize::new(0),
                above_threshold: AtomicBool::new(false),
                drain_wanted: Notify::new(),
                shutdown: AtomicBool::new(false),
            }),
            state: AtomicU8::new(ReadyState::Connecting as u8),
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

    pub fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        self.shared.emit(f);
    }

    pub fn state(&self) -> ReadyState {
        ReadyState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, state: ReadyState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Stops a reader that waits for credit and a writer that waits for a drain (the
    /// connection is closing).
    pub fn shut_down(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.credit.notify_one();
        self.shared.drain_wanted.notify_one();
    }

    /// `{:data_channel_closing, dc}`, once, unless the owner closed the channel itself.
    pub fn announce_closing(&self) {
        if !self.closing_done.swap(true, Ordering::AcqRel) {
            self.emit(|env, dc| (atoms::data_channel_closing(), dc).encode(env));
        }
    }

    /// Takes one message's worth of credit, if there is any. `Some(true)` means a count ran
    /// out with it (the owner is told after the message). Taken before the message is sent,
    /// so credit granted meanwhile is never spent on it.
    pub fn take_credit(&self) -> Option<bool> {
        self.active.take()
    }

    pub async fn wait_for_credit(&self) -> bool {
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
