//! What a connection's handle, worker, event handler and objects share: who its owner is,
//! the states it last reported, the ids of its media objects, and the operation queue.
//!
//! Reference graph (no cycles): `Instance.pcs` → `PcHandle` → op queue sender → worker →
//! `Arc<dyn PeerConnection>` → driver → `Handler` → `PcEvents`. Nothing here holds the
//! instance.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverId};
use rustler::{Atom, Encoder, Env, LocalPid, Monitor, NifUnitEnum, Term};
use tokio::sync::mpsc;
use webrtc::peer_connection::{
    PeerConnection, RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSignalingState,
};

use crate::atoms;
use crate::error::{Error, NifResult};
use crate::mailbox::{self, Owner};
use crate::track_local::Binding;
use specter_core::registry::{lock, new_id};
use specter_core::runtime::Wake;

/// Declares a W3C enum, encoded as its snake_case atom, and its conversion from
/// webrtc-rs's own; a value webrtc-rs adds later is `Unspecified`.
macro_rules! w3c_enum {
    ($(#[$doc:meta])* $name:ident from $from:ident { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
        pub enum $name { $($variant,)* Unspecified }

        impl From<$from> for $name {
            fn from(s: $from) -> Self {
                #[allow(unreachable_patterns)]
                match s { $($from::$variant => Self::$variant,)* _ => Self::Unspecified }
            }
        }
    };
}
pub(crate) use w3c_enum;

w3c_enum!(
    /// W3C `RTCPeerConnectionState`.
    ConnectionState from RTCPeerConnectionState {
        New, Connecting, Connected, Disconnected, Failed, Closed,
    }
);

w3c_enum!(
    /// W3C `RTCIceConnectionState`.
    IceConnectionState from RTCIceConnectionState {
        New, Checking, Connected, Completed, Disconnected, Failed, Closed,
    }
);

w3c_enum!(
    /// W3C `RTCIceGatheringState`.
    GatheringState from RTCIceGatheringState { New, Gathering, Complete }
);

w3c_enum!(
    /// W3C `RTCSignalingState`.
    SignalingState from RTCSignalingState {
        Stable, HaveLocalOffer, HaveRemoteOffer, HaveLocalPranswer, HaveRemotePranswer, Closed,
    }
);

/// Last state reported by each of the connection's state machines.
pub struct States {
    pub connection: ConnectionState,
    pub ice_connection: IceConnectionState,
    pub ice_gathering: GatheringState,
}

/// UUIDs of a connection's transceivers, senders and receivers (webrtc-rs numbers them per
/// connection or gives opaque ids).
#[derive(Default)]
pub struct PcMedia {
    transceivers: HashMap<RTCRtpTransceiverId, String>,
    senders: HashMap<RTCRtpSenderId, String>,
    receivers: HashMap<RTCRtpReceiverId, String>,
    /// The Specter track binding behind each sender (by sender UUID).
    pub bindings: HashMap<String, Arc<Binding>>,
    /// Kinds of the transceivers Specter created (webrtc-rs does not expose a kind before
    /// a sender or receiver exists).
    pub kinds: HashMap<RTCRtpTransceiverId, RtpCodecKind>,
}

impl PcMedia {
    pub fn transceiver(&mut self, id: RTCRtpTransceiverId) -> String {
        self.transceivers.entry(id).or_insert_with(new_id).clone()
    }

    pub fn sender(&mut self, id: RTCRtpSenderId) -> String {
        self.senders.entry(id).or_insert_with(new_id).clone()
    }

    pub fn receiver(&mut self, id: RTCRtpReceiverId) -> String {
        self.receivers.entry(id).or_insert_with(new_id).clone()
    }
}

/// What the event handler and the connection's objects need: who to tell, and what to tell
/// them about.
pub struct PcEvents {
    pub id: String,
    pub owner: Arc<Owner>,
    pub states: Mutex<States>,
    /// `(mid, ufrag)` of the first media section of the local description, stamped on every
    /// emitted candidate so a browser can apply it.
    pub candidate_context: Mutex<Option<(String, Option<String>)>>,
    /// The connection's driver wake-up (see `specter_core::runtime`).
    pub wake: Arc<Wake>,
    /// The connection itself, once built. Weak: the worker owns it.
    pub pc: OnceLock<Weak<dyn PeerConnection>>,
    /// UUIDs of the connection's transceivers, senders and receivers.
    pub media: Mutex<PcMedia>,
    /// The runtime the connection's own tasks run on.
    pub handle: tokio::runtime::Handle,
    /// `dtls_handshake_timeout` (see `quirks::watch_dtls`).
    pub dtls_timeout: Duration,
    /// A DTLS handshake watch is running (see `quirks::watch_dtls`).
    pub dtls_watch: AtomicBool,
    /// Specter failed the connection because its DTLS handshake did not complete: terminal.
    pub dtls_failed: AtomicBool,
}

impl PcEvents {
    pub fn new(
        owner: LocalPid,
        wake: Arc<Wake>,
        handle: tokio::runtime::Handle,
        dtls_timeout: Duration,
    ) -> Self {
        Self {
            id: new_id(),
            owner: Owner::new(owner),
            states: Mutex::new(States {
                connection: ConnectionState::New,
                ice_connection: IceConnectionState::New,
                ice_gathering: GatheringState::New,
            }),
            candidate_context: Mutex::new(None),
            wake,
            pc: OnceLock::new(),
            media: Mutex::new(PcMedia::default()),
            handle,
            dtls_timeout,
            dtls_watch: AtomicBool::new(false),
            dtls_failed: AtomicBool::new(false),
        }
    }

    /// Sends `{...}` built by `f(env, pc_id)` to the owner.
    pub fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let id = self.id.clone();
        self.owner.send(move |env| {
            let pc = id.encode(env);
            f(env, pc)
        });
    }

    /// `{tag, pc, state}` to the owner.
    pub fn emit_state<S: Encoder + Send + 'static>(&self, tag: Atom, state: S) {
        self.emit(move |env, pc| (tag, pc, state).encode(env));
    }

    /// The connection, while it exists.
    pub fn peer_connection(&self) -> Option<Arc<dyn PeerConnection>> {
        self.pc.get().and_then(Weak::upgrade)
    }

    pub fn mark_closed(&self) {
        let mut s = lock(&self.states);
        s.connection = ConnectionState::Closed;
        s.ice_connection = IceConnectionState::Closed;
    }
}

/// A reply built on the runtime: gets the env and the connection id term.
pub type Reply = Box<dyn for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send>;

/// Boxes a reply closure (the function signature makes the closure higher-ranked).
pub fn reply<F>(f: F) -> Reply
where
    F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
{
    Box::new(f)
}

/// The reply `{:ok, pc, what}`.
pub fn done(what: Atom) -> Reply {
    reply(move |env, pc| (atoms::ok(), pc, what).encode(env))
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One queued operation: how to run it, and how to fail it without running.
pub struct Op {
    pub run: Box<dyn FnOnce(Arc<dyn PeerConnection>) -> BoxFuture + Send>,
    pub fail: Box<dyn FnOnce(Error) + Send>,
}

pub enum Msg {
    Op(Op),
    Close { reply_to: Option<LocalPid> },
}

/// A connection as the instance sees it.
pub struct PcHandle {
    pub id: String,
    pub events: Arc<PcEvents>,
    pub tx: mpsc::UnboundedSender<Msg>,
    pub closed: Arc<AtomicBool>,
    pub monitor: Mutex<Option<Monitor>>,
}

impl PcHandle {
    /// Queues `f` on the connection's worker, which runs operations in call order (W3C's
    /// operations chain). Its result goes to `caller` as the reply it builds, or as
    /// `{tag, pc, reason}`; a closed connection fails it at once. Answers `:ok`.
    pub fn run<F, Fut>(&self, caller: LocalPid, tag: Atom, f: F) -> NifResult<Atom>
    where
        F: FnOnce(Arc<dyn PeerConnection>) -> Fut + Send + 'static,
        Fut: Future<Output = NifResult<Reply>> + Send + 'static,
    {
        let op = make_op(&self.id, caller, tag, f);
        if self.closed.load(Ordering::Acquire) {
            (op.fail)(Error::Closed);
        } else if let Err(mpsc::error::SendError(Msg::Op(op))) = self.tx.send(Msg::Op(op)) {
            (op.fail)(Error::Closed);
        }
        Ok(atoms::ok())
    }

    /// Closes the connection; `reply_to` (and the owner, if different) get
    /// `{:peer_connection_closed, pc}` once it is closed.
    pub fn close(&self, reply_to: Option<LocalPid>) {
        let _ = self.tx.send(Msg::Close { reply_to });
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// An operation whose result is sent to `caller` as `reply(env, pc)`, or as
/// `{tag, pc, reason}`.
fn make_op<F, Fut>(id: &str, caller: LocalPid, tag: Atom, f: F) -> Op
where
    F: FnOnce(Arc<dyn PeerConnection>) -> Fut + Send + 'static,
    Fut: Future<Output = NifResult<Reply>> + Send + 'static,
{
    let (id, id_fail) = (id.to_owned(), id.to_owned());
    Op {
        run: Box::new(move |pc| {
            Box::pin(async move {
                match f(pc).await {
                    Ok(reply) => mailbox::send(caller, move |env| {
                        let pc = id.encode(env);
                        reply(env, pc)
                    }),
                    Err(e) => send_error(caller, id, tag, e),
                }
            })
        }),
        fail: Box::new(move |e| send_error(caller, id_fail, tag, e)),
    }
}

fn send_error(caller: LocalPid, id: String, tag: Atom, err: Error) {
    mailbox::send(caller, move |env| (tag, id.as_str(), err).encode(env));
}
