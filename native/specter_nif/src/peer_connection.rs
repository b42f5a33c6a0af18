//! `Specter.PeerConnection`: connection lifecycle, negotiation, ICE, state, stats.
//!
//! Each connection has one worker task that owns it and runs its operations in the order
//! they were called (W3C's operations chain), answering the caller with a message. Events of
//! the connection (states, candidates, negotiation-needed, data channels) go to its owner.
//!
//! Reference graph (no cycles): `Instance.pcs` → `PcHandle` → op queue sender → worker →
//! `Arc<dyn PeerConnection>` → driver → `Handler` → `PcEvents` → `Weak<Instance>`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use rustler::{Atom, Encoder, Env, LocalPid, Monitor, Term};
use serde_json::Value;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::transport::IceTransport;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCBundlePolicy,
    RTCConfiguration, RTCConfigurationBuilder, RTCIceCandidate, RTCIceCandidateInit,
    RTCIceCandidateType, RTCIceConnectionState, RTCIceGatheringState, RTCIceProtocol,
    RTCIceTransportPolicy, RTCPeerConnectionIceErrorEvent, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCRtcpMuxPolicy, RTCSdpType, RTCSessionDescription, RTCSignalingState,
    RTCStatsReportEntry, StatsSelector,
};

use rtc::peer_connection::configuration::{RTCAnswerOptions, RTCOfferOptions};

use crate::atoms;
use crate::config::IceServer;
use crate::data_channel;
use crate::error::{encode_result, Error, NifResult};
use crate::json;
use crate::mailbox;
use crate::specter::{instance, lock, new_id, string_arg, Api, Instance};
use specter_core::runtime::{ConnRuntime, Wake};
use specter_core::signalling::{
    self, applied_description_json, candidate_context, description_json, local_description_json,
};

/// Largest session description or candidate accepted, in bytes of JSON.
pub const MAX_SIGNALLING_JSON: usize = 256 * 1024;

/// A reply built on the runtime: gets the env and the connection id term.
pub type Reply = Box<dyn for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send>;

/// Boxes a reply closure (the function signature makes the closure higher-ranked).
pub fn reply<F>(f: F) -> Reply
where
    F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
{
    Box::new(f)
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One queued operation: how to run it, and how to fail it without running.
pub struct Op {
    run: Box<dyn FnOnce(Arc<dyn PeerConnection>) -> BoxFuture + Send>,
    fail: Box<dyn FnOnce(Error) + Send>,
}

enum Msg {
    Op(Op),
    Close { reply_to: Option<LocalPid> },
}

/// Last state reported by each of the connection's state machines.
struct States {
    connection: &'static str,
    ice_connection: &'static str,
    ice_gathering: &'static str,
}

/// What the event handler needs: who to tell, and what to tell them about.
pub struct PcEvents {
    pub id: String,
    owner: Mutex<LocalPid>,
    pub instance: Weak<Instance>,
    states: Mutex<States>,
    /// `(mid, ufrag)` of the first media section of the local description, stamped on every
    /// emitted candidate so a browser can apply it.
    candidate_context: Mutex<Option<(String, Option<String>)>>,
    /// The connection's driver wake-up (see `specter_core::runtime`).
    pub wake: Arc<Wake>,
    /// The connection itself, once built. Weak: the worker owns it.
    pc: OnceLock<Weak<dyn PeerConnection>>,
    /// UUIDs of the connection's transceivers, senders and receivers.
    pub media: Mutex<crate::rtp_transceiver::PcMedia>,
    /// A DTLS handshake watch is running (see `watch_dtls`).
    dtls_watch: AtomicBool,
    /// Specter failed the connection because its DTLS handshake did not complete: terminal.
    dtls_failed: AtomicBool,
}

impl PcEvents {
    pub fn owner(&self) -> LocalPid {
        *lock(&self.owner)
    }

    fn set_owner(&self, pid: LocalPid) {
        *lock(&self.owner) = pid;
    }

    /// Sends `{...}` built by `f(env, pc_id)` to the owner.
    pub fn emit<F>(&self, f: F)
    where
        F: for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a> + Send + 'static,
    {
        let id = self.id.clone();
        mailbox::send(self.owner(), move |env| {
            let pc = id.encode(env);
            f(env, pc)
        });
    }

    fn emit_state(&self, tag: Atom, state: &'static str) {
        self.emit(move |env, pc| (tag, pc, state_atom(env, state)).encode(env));
    }

    /// webrtc-rs 0.21.1 goes from `new` straight to `complete`; W3C passes through
    /// `gathering` when the first candidate is found. Report it once per gathering round.
    fn begin_gathering(&self) {
        let mut states = lock(&self.states);
        if states.ice_gathering != "gathering" {
            states.ice_gathering = "gathering";
            drop(states);
            self.emit_state(atoms::ice_gathering_state_change(), "gathering");
        }
    }

    /// The connection, while it exists.
    pub fn peer_connection(&self) -> Option<Arc<dyn PeerConnection>> {
        self.pc.get().and_then(Weak::upgrade)
    }

    /// webrtc-rs 0.21.1 only logs a DTLS handshake error (a certificate that does not match
    /// the remote description's `a=fingerprint`, for one) and leaves the connection
    /// `connecting` for ever. Once ICE is connected the handshake gets the instance's
    /// `dtls_handshake_timeout`; a connection still not connected then is `failed`: the
    /// owner gets `{:connection_state_change, pc, :failed}`, and the connection is shut down
    /// so nothing more is exchanged with a peer that could not prove who it is.
    fn watch_dtls(self: &Arc<Self>) {
        let Some(inst) = self.instance.upgrade() else {
            return;
        };
        if self.dtls_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = std::time::Duration::from_millis(inst.config.dtls_handshake_timeout);
        let handle = inst.handle.clone();
        drop(inst);
        // Weak, and polled: a connection that connects (in a few ms), closes or is dropped
        // ends the watch at once instead of holding its events for the whole timeout.
        let events = Arc::downgrade(self);
        handle.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let now = tokio::time::Instant::now();
                let step = std::time::Duration::from_millis(20);
                tokio::time::sleep(step.min(deadline.saturating_duration_since(now))).await;
                let Some(events) = events.upgrade() else {
                    return;
                };
                let failed = {
                    let mut s = lock(&events.states);
                    let ice_up = matches!(s.ice_connection, "connected" | "completed");
                    let stuck = matches!(s.connection, "new" | "connecting");
                    if !(ice_up && stuck) {
                        events.dtls_watch.store(false, Ordering::Release);
                        return;
                    }
                    let expired = tokio::time::Instant::now() >= deadline;
                    if expired {
                        s.connection = "failed";
                        events.dtls_failed.store(true, Ordering::Release);
                        events.dtls_watch.store(false, Ordering::Release);
                    }
                    expired
                };
                if failed {
                    events.emit_state(atoms::connection_state_change(), "failed");
                    if let Some(pc) = events.peer_connection() {
                        let _ = pc.close().await;
                    }
                    return;
                }
            }
        });
    }

    /// webrtc-rs 0.21.1 computes `connected` from "ICE connected and DTLS connected *or
    /// closed*", so a remote that sends a DTLS close_notify before the handshake completes
    /// (one whose certificate did not match, giving up) turns a connection that never
    /// authenticated its peer `connected`. On every `connected`, the DTLS transport's own
    /// state is checked; if the handshake did not complete, the connection is `failed` and
    /// shut down, as in `watch_dtls`.
    fn verify_dtls(self: &Arc<Self>) {
        let Some(inst) = self.instance.upgrade() else {
            return;
        };
        let events = Arc::downgrade(self);
        inst.handle.spawn(async move {
            let Some(events) = events.upgrade() else {
                return;
            };
            let Some(pc) = events.peer_connection() else {
                return;
            };
            let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
            let dtls = report.transport().map(|t| t.dtls_state);
            if dtls == Some(rtc::peer_connection::transport::RTCDtlsTransportState::Connected) {
                return;
            }
            events.fail_unauthenticated(pc).await;
        });
    }

    /// Reports `failed` (once, unless the connection is already closed) and closes the
    /// underlying connection.
    async fn fail_unauthenticated(&self, pc: Arc<dyn PeerConnection>) {
        let report = {
            let mut s = lock(&self.states);
            let report = !matches!(s.connection, "failed" | "closed");
            if report {
                s.connection = "failed";
                self.dtls_failed.store(true, Ordering::Release);
            }
            report
        };
        if report {
            self.emit_state(atoms::connection_state_change(), "failed");
        }
        let _ = pc.close().await;
    }

    fn mark_closed(&self) {
        let mut s = lock(&self.states);
        s.connection = "closed";
        s.ice_connection = "closed";
    }
}

fn state_atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    Atom::from_str(env, name)
        .unwrap_or_else(|_| atoms::unspecified())
        .encode(env)
}

fn connection_state_name(s: RTCPeerConnectionState) -> &'static str {
    match s {
        RTCPeerConnectionState::New => "new",
        RTCPeerConnectionState::Connecting => "connecting",
        RTCPeerConnectionState::Connected => "connected",
        RTCPeerConnectionState::Disconnected => "disconnected",
        RTCPeerConnectionState::Failed => "failed",
        RTCPeerConnectionState::Closed => "closed",
        _ => "unspecified",
    }
}

fn ice_connection_state_name(s: RTCIceConnectionState) -> &'static str {
    match s {
        RTCIceConnectionState::New => "new",
        RTCIceConnectionState::Checking => "checking",
        RTCIceConnectionState::Connected => "connected",
        RTCIceConnectionState::Completed => "completed",
        RTCIceConnectionState::Disconnected => "disconnected",
        RTCIceConnectionState::Failed => "failed",
        RTCIceConnectionState::Closed => "closed",
        _ => "unspecified",
    }
}

fn ice_gathering_state_name(s: RTCIceGatheringState) -> &'static str {
    match s {
        RTCIceGatheringState::New => "new",
        RTCIceGatheringState::Gathering => "gathering",
        RTCIceGatheringState::Complete => "complete",
        _ => "unspecified",
    }
}

fn signaling_state_name(s: RTCSignalingState) -> &'static str {
    match s {
        RTCSignalingState::Stable => "stable",
        RTCSignalingState::HaveLocalOffer => "have_local_offer",
        RTCSignalingState::HaveRemoteOffer => "have_remote_offer",
        RTCSignalingState::HaveLocalPranswer => "have_local_pranswer",
        RTCSignalingState::HaveRemotePranswer => "have_remote_pranswer",
        RTCSignalingState::Closed => "closed",
        _ => "unspecified",
    }
}

/// The connection's event handler, awaited on the driver task: it only formats and sends.
struct Handler {
    events: Arc<PcEvents>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        self.events
            .emit(|env, pc| (atoms::negotiation_needed(), pc).encode(env));
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(mut init) = event.candidate.to_json() else {
            return;
        };
        self.events.begin_gathering();
        if let Some((mid, ufrag)) = lock(&self.events.candidate_context).clone() {
            init.sdp_mid = Some(mid);
            init.sdp_mline_index = Some(0);
            init.username_fragment = ufrag;
        }
        if let Ok(json) = serde_json::to_string(&init) {
            self.events
                .emit(move |env, pc| (atoms::ice_candidate(), pc, json.as_str()).encode(env));
        }
    }

    async fn on_ice_candidate_error(&self, event: RTCPeerConnectionIceErrorEvent) {
        self.events.emit(move |env, pc| {
            let mut map = rustler::types::map::map_new(env);
            let pairs: [(Atom, Term<'_>); 5] = [
                (atoms::address(), event.address.as_str().encode(env)),
                (atoms::port(), event.port.encode(env)),
                (atoms::url(), event.url.as_str().encode(env)),
                (atoms::error_code(), event.error_code.encode(env)),
                (atoms::error_text(), event.error_text.as_str().encode(env)),
            ];
            for (k, v) in pairs {
                map = map.map_put(k.encode(env), v).unwrap_or(map);
            }
            (atoms::ice_candidate_error(), pc, map).encode(env)
        });
    }

    async fn on_signaling_state_change(&self, state: RTCSignalingState) {
        self.events
            .emit_state(atoms::signaling_state_change(), signaling_state_name(state));
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let name = ice_connection_state_name(state);
        lock(&self.events.states).ice_connection = name;
        self.events
            .emit_state(atoms::ice_connection_state_change(), name);
        if matches!(
            state,
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
        ) {
            self.events.watch_dtls();
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Gathering {
            self.events.begin_gathering();
            return;
        }
        if state == RTCIceGatheringState::Complete {
            self.events.begin_gathering();
        }
        let name = ice_gathering_state_name(state);
        lock(&self.events.states).ice_gathering = name;
        self.events
            .emit_state(atoms::ice_gathering_state_change(), name);
        if state == RTCIceGatheringState::Complete {
            // End of candidates, as a browser's `onicecandidate` with `null`.
            self.events
                .emit(|env, pc| (atoms::ice_candidate(), pc, atoms::nil()).encode(env));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let name = connection_state_name(state);
        {
            let mut s = lock(&self.events.states);
            // A connection Specter failed (no DTLS handshake) stays failed until closed.
            if self.events.dtls_failed.load(Ordering::Acquire)
                && state != RTCPeerConnectionState::Closed
            {
                return;
            }
            s.connection = name;
        }
        self.events
            .emit_state(atoms::connection_state_change(), name);
        if state == RTCPeerConnectionState::Connected {
            self.events.verify_dtls();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        data_channel::announce_remote(&self.events, dc);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        crate::track_remote::announce(&self.events, track);
    }
}

/// A connection as the instance sees it.
pub struct PcHandle {
    pub id: String,
    pub events: Arc<PcEvents>,
    tx: mpsc::UnboundedSender<Msg>,
    closed: Arc<AtomicBool>,
    monitor: Mutex<Option<Monitor>>,
}

impl PcHandle {
    /// Queues an operation; a closed connection fails it at once.
    pub fn submit(&self, op: Op) {
        if self.closed.load(Ordering::Acquire) {
            (op.fail)(Error::Closed);
            return;
        }
        if let Err(mpsc::error::SendError(Msg::Op(op))) = self.tx.send(Msg::Op(op)) {
            (op.fail)(Error::Closed);
        }
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

/// Builds an operation whose result is sent to `caller` as `reply(env, pc)`, or as
/// `{:<name>_error, pc, reason}`.
pub fn make_op<F, Fut>(events: &Arc<PcEvents>, caller: LocalPid, name: &'static str, f: F) -> Op
where
    F: FnOnce(Arc<dyn PeerConnection>) -> Fut + Send + 'static,
    Fut: Future<Output = NifResult<Reply>> + Send + 'static,
{
    let id = events.id.clone();
    let id_fail = id.clone();
    Op {
        run: Box::new(move |pc| {
            Box::pin(async move {
                match f(pc).await {
                    Ok(reply) => mailbox::send(caller, move |env| {
                        let pc = id.encode(env);
                        reply(env, pc)
                    }),
                    Err(e) => send_error(caller, id, name, e),
                }
            })
        }),
        fail: Box::new(move |e| send_error(caller, id_fail, name, e)),
    }
}

fn send_error(caller: LocalPid, id: String, name: &'static str, err: Error) {
    mailbox::send(caller, move |env| {
        let tag = Atom::from_str(env, &format!("{name}_error")).unwrap_or_else(|_| atoms::error());
        (tag, id.as_str(), err).encode(env)
    });
}

/// Everything the worker needs to build the connection.
struct BuildSpec {
    api: Arc<Api>,
    instance: Weak<Instance>,
    events: Arc<PcEvents>,
    runtime: ConnRuntime,
}

async fn build(spec: &BuildSpec) -> NifResult<Arc<dyn PeerConnection>> {
    let inst = spec.instance.upgrade().ok_or(Error::Closed)?;
    let config = inst.config.clone();
    let attempts = if config.udp_port_range.is_some() {
        8
    } else {
        1
    };
    let mut last_err = Error::Webrtc("no attempt".into());
    for _ in 0..attempts {
        let (media_engine, registry) = spec.api.build()?;
        let addrs = bind_addrs(&inst)?;
        let first_ip = addrs.first().map(SocketAddr::ip);
        let handler = Arc::new(Handler {
            events: Arc::clone(&spec.events),
        });
        let res = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(config.rtc_ice_servers())
                    .build(),
            )
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(config.setting_engine())
            .with_runtime(Arc::new(spec.runtime.clone()))
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .with_data_channel_send_buffer_limit(config.data_channel_send_buffer_limit)
            .build()
            .await;
        match res {
            Ok(pc) => return Ok(Arc::new(pc)),
            Err(e) => last_err = explain_bind_failure(Error::from_webrtc(&e), first_ip),
        }
    }
    Err(last_err)
}

/// webrtc-rs logs why it could not bind a connection's sockets and answers only "no
/// udp_sockets or tcp_listeners available". Bind one ourselves to report the cause (e.g.
/// "Too many open files" when the VM has reached `ulimit -n`).
fn explain_bind_failure(err: Error, ip: Option<IpAddr>) -> Error {
    match (&err, ip) {
        (Error::Webrtc(msg), Some(ip)) if msg.contains("no udp_sockets") => {
            match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
                Ok(_) => err,
                Err(io) => Error::Webrtc(format!("{msg}: binding a UDP socket on {ip}: {io}")),
            }
        }
        _ => err,
    }
}

/// Addresses to bind: the configured IPs, each with a port from the configured range (probed
/// free) or port 0.
fn bind_addrs(inst: &Instance) -> NifResult<Vec<SocketAddr>> {
    let ips = inst.config.bind_ips();
    let Some((lo, hi)) = inst.config.udp_port_range else {
        return Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect());
    };
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let span = u32::from(hi - lo) + 1;
    let mut out = Vec::new();
    for ip in ips {
        let mut next = lock(&inst.next_port);
        let mut found = None;
        for _ in 0..span {
            let port = if *next < lo || *next > hi { lo } else { *next };
            *next = if port >= hi { lo } else { port + 1 };
            match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(_) => {
                    found = Some(port);
                    break;
                }
                // Taken (or privileged): try the next port.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    ) => {}
                // No port would do (e.g. out of file descriptors): say why.
                Err(e) => return Err(Error::Webrtc(format!("binding a UDP socket on {ip}: {e}"))),
            }
        }
        match found {
            Some(port) => out.push(SocketAddr::new(ip, port)),
            None => return Err(Error::Webrtc("no free UDP port in udp_port_range".into())),
        }
    }
    Ok(out)
}

async fn worker(
    spec: BuildSpec,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    closed: Arc<AtomicBool>,
    creator: LocalPid,
) {
    let id = spec.events.id.clone();
    let pc = match build(&spec).await {
        Ok(pc) => pc,
        Err(err) => {
            closed.store(true, Ordering::Release);
            if let Some(inst) = spec.instance.upgrade() {
                inst.forget_pc(&id);
            }
            let rid = id.clone();
            mailbox::send(creator, move |env| {
                (atoms::peer_connection_error(), rid.as_str(), err).encode(env)
            });
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Op(op) => (op.fail)(Error::Closed),
                    Msg::Close { reply_to } => notify_closed(&spec.events, reply_to),
                }
            }
            return;
        }
    };
    let _ = spec.events.pc.set(Arc::downgrade(&pc));
    let rid = id.clone();
    mailbox::send(creator, move |env| {
        (atoms::peer_connection_ready(), rid.as_str()).encode(env)
    });
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Op(op) => {
                if closed.load(Ordering::Acquire) {
                    (op.fail)(Error::Closed);
                } else {
                    (op.run)(Arc::clone(&pc)).await;
                }
            }
            Msg::Close { reply_to } => {
                let first = !closed.swap(true, Ordering::AcqRel);
                if first {
                    let _ = pc.close().await;
                    spec.events.mark_closed();
                }
                notify_closed(&spec.events, reply_to);
            }
        }
    }
    // Every handle is gone (instance dropped): make sure the connection is closed.
    if !closed.swap(true, Ordering::AcqRel) {
        let _ = pc.close().await;
    }
}

fn notify_closed(events: &PcEvents, reply_to: Option<LocalPid>) {
    let owner = events.owner();
    let mut targets = vec![owner];
    if let Some(pid) = reply_to {
        if pid != owner {
            targets.push(pid);
        }
    }
    for pid in targets {
        let id = events.id.clone();
        mailbox::send(pid, move |env| {
            (atoms::peer_connection_closed(), id.as_str()).encode(env)
        });
    }
}

/// Decodes the specter and connection arguments and finds the connection.
pub fn lookup(
    specter: Term<'_>,
    pc: Term<'_>,
) -> NifResult<(Arc<Instance>, Arc<crate::peer_connection::PcHandle>)> {
    let s = instance(specter)?;
    let id = string_arg(pc, "peer_connection")?;
    let handle = s.inner.pc(&id)?;
    Ok((Arc::clone(&s.inner), handle))
}

#[rustler::nif]
fn pc_new<'a>(env: Env<'a>, specter: Term<'a>, api: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let api_id = string_arg(api, "api")?;
        let api_key = crate::specter::normalize_id(&api_id).ok_or(Error::NotFound)?;
        let api = lock(&s.inner.apis)
            .get(&api_key)
            .cloned()
            .ok_or(Error::NotFound)?;
        let caller = env.pid();
        let id = new_id();
        let runtime = ConnRuntime::new(s.inner.handle.clone(), Arc::clone(&s.inner.policy));
        let events = Arc::new(PcEvents {
            id: id.clone(),
            owner: Mutex::new(caller),
            instance: Arc::downgrade(&s.inner),
            states: Mutex::new(States {
                connection: "new",
                ice_connection: "new",
                ice_gathering: "new",
            }),
            candidate_context: Mutex::new(None),
            wake: runtime.wake(),
            pc: OnceLock::new(),
            media: Mutex::new(Default::default()),
            dtls_watch: AtomicBool::new(false),
            dtls_failed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let monitor = env.monitor(&s, &caller);
        let handle = Arc::new(PcHandle {
            id: id.clone(),
            events: Arc::clone(&events),
            tx,
            closed: Arc::clone(&closed),
            monitor: Mutex::new(monitor),
        });
        lock(&s.inner.pcs).insert(id.clone(), handle);
        let spec = BuildSpec {
            api,
            instance: Arc::downgrade(&s.inner),
            events,
            runtime,
        };
        s.inner.handle.spawn(worker(spec, rx, closed, caller));
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_close<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let id = string_arg(pc, "peer_connection")?;
        let handle = s.inner.pc(&id)?;
        s.inner.forget_pc(&handle.id);
        if let Some(mon) = lock(&handle.monitor).take() {
            env.demonitor(&s, &mon);
        }
        handle.close(Some(env.pid()));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_exists(specter: Term<'_>, pc: Term<'_>) -> bool {
    lookup(specter, pc).is_ok_and(|(_, h)| !h.is_closed())
}

/// Hands the connection's events to `pid`; only the current owner may do so.
#[rustler::nif]
fn pc_controlling_process<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    pid: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let id = string_arg(pc, "peer_connection")?;
        let new_owner: LocalPid = pid.decode().map_err(|_| Error::InvalidArgument("pid"))?;
        let handle = s.inner.pc(&id)?;
        if handle.events.owner() != env.pid() {
            return Err(Error::NotOwner);
        }
        if !env.is_process_alive(new_owner) {
            return Err(Error::InvalidArgument("pid"));
        }
        let mut mon = lock(&handle.monitor);
        if let Some(old) = mon.take() {
            env.demonitor(&s, &old);
        }
        *mon = env.monitor(&s, &new_owner);
        handle.events.set_owner(new_owner);
        data_channel::reassign_owner(&s.inner, &handle.id, env.pid(), new_owner);
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// Options map as decoded from Elixir: `%{ice_restart: bool, voice_activity_detection: bool}`.
fn bool_opt(opts: Term<'_>, key: &str) -> NifResult<bool> {
    let env = opts.get_env();
    let atom = Atom::from_str(env, key).map_err(|_| Error::InvalidOption(key.into()))?;
    match opts.map_get(atom.encode(env)) {
        Ok(v) => v
            .decode::<bool>()
            .map_err(|_| Error::InvalidOption(key.into())),
        Err(_) => Ok(false),
    }
}

#[rustler::nif]
fn pc_create_offer<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, opts: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let ice_restart = bool_opt(opts, "ice_restart")?;
        // Voice activity detection is accepted for API compatibility; webrtc-rs has no VAD.
        bool_opt(opts, "voice_activity_detection")?;
        let options = RTCOfferOptions { ice_restart };
        h.submit(make_op(
            &h.events,
            env.pid(),
            "offer",
            move |pc| async move {
                let desc = pc.create_offer(Some(options)).await?;
                let json = description_json(&desc);
                Ok(reply(move |env, pc| {
                    (atoms::offer(), pc, json.as_str()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_create_answer<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, opts: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let vad = bool_opt(opts, "voice_activity_detection")?;
        let options = RTCAnswerOptions {
            voice_activity_detection: vad,
        };
        h.submit(make_op(
            &h.events,
            env.pid(),
            "answer",
            move |pc| async move {
                let desc = pc.create_answer(Some(options)).await?;
                let json = description_json(&desc);
                Ok(reply(move |env, pc| {
                    (atoms::answer(), pc, json.as_str()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// Parses a session description given as JSON text or as a map with `type` and `sdp`.
pub fn parse_description(term: Term<'_>) -> NifResult<RTCSessionDescription> {
    let value = json::term_to_value(term, MAX_SIGNALLING_JSON)?;
    signalling::parse_description(&value).map_err(Error::from)
}

/// Parses an ICE candidate given as JSON text or a map (see `signalling::parse_candidate`).
pub fn parse_candidate(term: Term<'_>) -> NifResult<RTCIceCandidateInit> {
    let value = json::term_to_value(term, MAX_SIGNALLING_JSON)?;
    signalling::parse_candidate(&value).map_err(Error::from)
}

#[rustler::nif]
fn pc_set_local_description<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    desc: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let desc = parse_description(desc)?;
        let events = Arc::clone(&h.events);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "set_local_description",
            move |pc| async move {
                if desc.sdp_type != RTCSdpType::Rollback {
                    // Before applying: the driver may emit candidates before `set_local_description`
                    // returns.
                    if let Some(ctx) = candidate_context(&desc.sdp) {
                        *lock(&events.candidate_context) = Some(ctx);
                    }
                }
                pc.set_local_description(desc).await?;
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::set_local_description()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_set_remote_description<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    desc: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let desc = parse_description(desc)?;
        let wake = Arc::clone(&h.events.wake);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "set_remote_description",
            move |pc| async move {
                pc.set_remote_description(desc).await?;
                // Checks that arrived before it are answered now (RFC 8445 §7.3).
                wake.remote_description_applied();
                // Candidates inside the description start checks now rather than at the next tick.
                wake.nudge();
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::set_remote_description()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// The connection's ICE transport: through its SCTP transport, or a transceiver's DTLS
/// transport for a connection without data channels. `None` before a transport exists.
pub async fn ice_transport(pc: &Arc<dyn PeerConnection>) -> Option<Arc<dyn IceTransport>> {
    if let Some(sctp) = pc.sctp().await {
        return Some(sctp.transport().ice_transport());
    }
    for sender in pc.get_senders().await {
        if let Ok(Some(dtls)) = sender.transport().await {
            return Some(dtls.ice_transport());
        }
    }
    for receiver in pc.get_receivers().await {
        if let Ok(Some(dtls)) = receiver.transport().await {
            return Some(dtls.ice_transport());
        }
    }
    None
}

/// Whether ICE already knows the candidate's transport address as a peer-reflexive remote
/// candidate: the remote's checks arrived before its trickled candidate did.
///
/// webrtc-rs 0.21.1 would add the candidate as a second remote candidate with the same
/// address; the responses to checks on its pair are attributed to the peer-reflexive pair, so
/// the better-looking pair never succeeds and the selected pair names a candidate the remote
/// never listed. The address is already reachable through the peer-reflexive candidate, so
/// nothing is lost by not adding it again. What ICE learned is read from the agent's own
/// remote candidate list (webrtc-rs creates no stats for peer-reflexive candidates).
async fn learned_as_prflx(pc: &Arc<dyn PeerConnection>, candidate: &RTCIceCandidateInit) -> bool {
    let body = candidate
        .candidate
        .strip_prefix("candidate:")
        .unwrap_or(&candidate.candidate);
    if body.is_empty() {
        return false;
    }
    let Ok(c) = rtc::ice::candidate::unmarshal_candidate(body) else {
        return false;
    };
    let Some(ice) = ice_transport(pc).await else {
        return false;
    };
    let Ok(remotes) = ice.get_remote_candidates().await else {
        return false;
    };
    let tcp = c.network_type().is_tcp();
    remotes.iter().any(|r| {
        r.typ == RTCIceCandidateType::Prflx
            && r.port == c.port()
            && r.address == c.address()
            && (r.protocol == RTCIceProtocol::Tcp) == tcp
    })
}

#[rustler::nif]
fn pc_add_ice_candidate<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    candidate: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let candidate = parse_candidate(candidate)?;
        let wake = Arc::clone(&h.events.wake);
        h.submit(make_op(
            &h.events,
            env.pid(),
            "add_ice_candidate",
            move |pc| async move {
                if !learned_as_prflx(&pc, &candidate).await {
                    pc.add_ice_candidate(candidate)
                        .await
                        .map_err(|e| Error::from_candidate(&e))?;
                }
                wake.nudge();
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::add_ice_candidate()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_description<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    which: Atom,
    include_candidates: bool,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let kind = if which == atoms::local_description() {
            0
        } else if which == atoms::current_local_description() {
            1
        } else if which == atoms::pending_local_description() {
            2
        } else if which == atoms::remote_description() {
            3
        } else if which == atoms::current_remote_description() {
            4
        } else if which == atoms::pending_remote_description() {
            5
        } else {
            return Err(Error::InvalidArgument("which"));
        };
        let name: &'static str = match kind {
            0 => "local_description",
            1 => "current_local_description",
            2 => "pending_local_description",
            3 => "remote_description",
            4 => "current_remote_description",
            _ => "pending_remote_description",
        };
        h.submit(make_op(&h.events, env.pid(), name, move |pc| async move {
            let desc = match kind {
                0 => pc.local_description().await,
                1 => pc.current_local_description().await,
                2 => pc.pending_local_description().await,
                3 => pc.remote_description().await,
                4 => pc.current_remote_description().await,
                _ => pc.pending_remote_description().await,
            };
            let json = desc.as_ref().map(|d| {
                if kind > 2 {
                    description_json(d)
                } else if include_candidates {
                    local_description_json(d)
                } else {
                    applied_description_json(d)
                }
            });
            Ok(reply(move |env, pc| {
                let tag = Atom::from_str(env, name).unwrap_or_else(|_| atoms::error());
                match json {
                    Some(j) => (tag, pc, j.as_str()).encode(env),
                    None => (tag, pc, atoms::nil()).encode(env),
                }
            }))
        }));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// The W3C signaling state, derived from the pending descriptions.
async fn signaling_state(pc: &Arc<dyn PeerConnection>) -> &'static str {
    if let Some(d) = pc.pending_local_description().await {
        return match d.sdp_type {
            RTCSdpType::Pranswer => "have_local_pranswer",
            _ => "have_local_offer",
        };
    }
    if let Some(d) = pc.pending_remote_description().await {
        return match d.sdp_type {
            RTCSdpType::Pranswer => "have_remote_pranswer",
            _ => "have_remote_offer",
        };
    }
    "stable"
}

#[rustler::nif]
fn pc_state<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, which: Atom) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let events = Arc::clone(&h.events);
        let (name, kind): (&'static str, u8) = if which == atoms::connection_state() {
            ("connection_state", 0)
        } else if which == atoms::ice_connection_state() {
            ("ice_connection_state", 1)
        } else if which == atoms::ice_gathering_state() {
            ("ice_gathering_state", 2)
        } else if which == atoms::signaling_state() {
            ("signaling_state", 3)
        } else {
            return Err(Error::InvalidArgument("which"));
        };
        h.submit(make_op(&h.events, env.pid(), name, move |pc| async move {
            let state = match kind {
                0 => lock(&events.states).connection,
                1 => lock(&events.states).ice_connection,
                2 => lock(&events.states).ice_gathering,
                _ => signaling_state(&pc).await,
            };
            Ok(reply(move |env, pc| {
                let tag = Atom::from_str(env, name).unwrap_or_else(|_| atoms::error());
                (tag, pc, state_atom(env, state)).encode(env)
            }))
        }));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

fn stats_entry_value(entry: &RTCStatsReportEntry) -> Option<Value> {
    let v = match entry {
        RTCStatsReportEntry::PeerConnection(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Transport(s) => serde_json::to_value(s),
        RTCStatsReportEntry::IceCandidatePair(s) => serde_json::to_value(s),
        RTCStatsReportEntry::LocalCandidate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteCandidate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Certificate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Codec(s) => serde_json::to_value(s),
        RTCStatsReportEntry::DataChannel(s) => serde_json::to_value(s),
        RTCStatsReportEntry::InboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::OutboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteInboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteOutboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::AudioSource(s) => serde_json::to_value(s),
        RTCStatsReportEntry::VideoSource(s) => serde_json::to_value(s),
        RTCStatsReportEntry::AudioPlayout(s) => serde_json::to_value(s),
        _ => return None,
    };
    v.ok()
}

/// webrtc-rs 0.21.1 names candidate stats `RTCLocalIceCandidate_<id>` /
/// `RTCRemoteIceCandidate_<id>` but has candidate pairs refer to them as `<id>`, so W3C's
/// `localCandidateId`/`remoteCandidateId` dangle. Point them at the entries that exist.
fn repair_candidate_links(obj: &mut serde_json::Map<String, Value>) {
    let ids: std::collections::HashSet<String> = obj.keys().cloned().collect();
    for value in obj.values_mut() {
        if value.get("type").and_then(Value::as_str) != Some("candidate-pair") {
            continue;
        }
        for (key, prefix) in [
            ("localCandidateId", "RTCLocalIceCandidate_"),
            ("remoteCandidateId", "RTCRemoteIceCandidate_"),
        ] {
            let Some(id) = value.get(key).and_then(Value::as_str) else {
                continue;
            };
            let prefixed = format!("{prefix}{id}");
            if !ids.contains(id) && ids.contains(&prefixed) {
                value[key] = Value::String(prefixed);
            }
        }
    }
}

/// webrtc-rs 0.21.1 registers candidate stats only for candidates gathered locally or
/// trickled in with `add_ice_candidate`: candidates from the remote description and
/// peer-reflexive ones (learned from checks, on either side) have none, so the selected
/// pair's `localCandidateId`/`remoteCandidateId` can name nothing. Every candidate the ICE
/// agent knows gets an entry (W3C `RTCIceCandidateStats`), built from the agent's own list.
async fn add_missing_candidate_stats(
    pc: &Arc<dyn PeerConnection>,
    obj: &mut serde_json::Map<String, Value>,
) {
    let Some(ice) = ice_transport(pc).await else {
        return;
    };
    let (timestamp, transport_id) = obj
        .values()
        .find(|v| v.get("type").and_then(Value::as_str) == Some("transport"))
        .map(|t| (t["timestamp"].clone(), t["id"].clone()))
        .unwrap_or((Value::Null, Value::Null));
    let ufrag = |params: Option<webrtc::peer_connection::RTCIceParameters>| {
        params.map(|p| p.username_fragment).unwrap_or_default()
    };
    let sides = [
        (
            ice.get_local_candidates().await.unwrap_or_default(),
            "local-candidate",
            "RTCLocalIceCandidate_",
            ufrag(ice.get_local_parameters().await.ok().flatten()),
        ),
        (
            ice.get_remote_candidates().await.unwrap_or_default(),
            "remote-candidate",
            "RTCRemoteIceCandidate_",
            ufrag(ice.get_remote_parameters().await.ok().flatten()),
        ),
    ];
    for (candidates, typ, prefix, ufrag) in sides {
        for c in candidates {
            let id = format!("{prefix}{}", c.id);
            if obj.contains_key(&c.id) || obj.contains_key(&id) {
                continue;
            }
            obj.insert(
                id.clone(),
                candidate_stats(&c, &id, typ, &timestamp, &transport_id, &ufrag),
            );
        }
    }
}

fn candidate_stats(
    c: &RTCIceCandidate,
    id: &str,
    typ: &str,
    timestamp: &Value,
    transport_id: &Value,
    ufrag: &str,
) -> Value {
    let enc = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    serde_json::json!({
        "id": id,
        "type": typ,
        "timestamp": timestamp,
        "transportId": transport_id,
        "address": c.address,
        "port": c.port,
        "protocol": c.protocol.to_string(),
        "candidateType": enc(serde_json::to_value(c.typ)),
        "priority": c.priority,
        "url": "",
        "relayProtocol": enc(serde_json::to_value(c.relay_protocol)),
        "foundation": c.foundation,
        "relatedAddress": c.related_address,
        "relatedPort": c.related_port,
        "usernameFragment": ufrag,
        "tcpType": enc(serde_json::to_value(c.tcp_type)),
    })
}

#[rustler::nif]
fn pc_get_stats<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>, as_map: bool) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        h.submit(make_op(
            &h.events,
            env.pid(),
            "stats",
            move |pc| async move {
                let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
                let mut obj = serde_json::Map::new();
                for entry in report.iter() {
                    if let Some(v) = stats_entry_value(entry) {
                        obj.insert(entry.id().to_owned(), v);
                    }
                }
                add_missing_candidate_stats(&pc, &mut obj).await;
                repair_candidate_links(&mut obj);
                let value = Value::Object(obj);
                Ok(if as_map {
                    reply(move |env, pc| {
                        (atoms::stats(), pc, json::value_to_term(env, &value)).encode(env)
                    })
                } else {
                    let text = value.to_string();
                    reply(move |env, pc| (atoms::stats(), pc, text.as_str()).encode(env))
                })
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn pc_restart_ice<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        h.submit(make_op(
            &h.events,
            env.pid(),
            "restart_ice",
            |pc| async move {
                pc.restart_ice().await?;
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::restart_ice()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

fn policy_name(p: RTCIceTransportPolicy) -> &'static str {
    match p {
        RTCIceTransportPolicy::Relay => "relay",
        _ => "all",
    }
}

fn bundle_name(p: RTCBundlePolicy) -> &'static str {
    match p {
        RTCBundlePolicy::MaxCompat => "max_compat",
        RTCBundlePolicy::MaxBundle => "max_bundle",
        _ => "balanced",
    }
}

fn rtcp_mux_name(p: RTCRtcpMuxPolicy) -> &'static str {
    match p {
        RTCRtcpMuxPolicy::Negotiate => "negotiate",
        _ => "require",
    }
}

fn configuration_term<'a>(env: Env<'a>, c: &RTCConfiguration) -> Term<'a> {
    let servers: Vec<Term<'a>> = c
        .ice_servers()
        .iter()
        .map(|s| {
            let mut m = rustler::types::map::map_new(env);
            let opt = |v: &str| {
                if v.is_empty() {
                    atoms::nil().encode(env)
                } else {
                    v.encode(env)
                }
            };
            for (k, v) in [
                (atoms::urls(), s.urls.encode(env)),
                (atoms::username(), opt(&s.username)),
                (atoms::credential(), opt(&s.credential)),
            ] {
                m = m.map_put(k.encode(env), v).unwrap_or(m);
            }
            m
        })
        .collect();
    let mut m = rustler::types::map::map_new(env);
    for (k, v) in [
        (atoms::ice_servers(), servers.encode(env)),
        (
            atoms::ice_transport_policy(),
            state_atom(env, policy_name(c.ice_transport_policy())),
        ),
        (
            atoms::bundle_policy(),
            state_atom(env, bundle_name(c.bundle_policy())),
        ),
        (
            atoms::rtcp_mux_policy(),
            state_atom(env, rtcp_mux_name(c.rtcp_mux_policy())),
        ),
        (
            atoms::ice_candidate_pool_size(),
            c.ice_candidate_pool_size().encode(env),
        ),
    ] {
        m = m.map_put(k.encode(env), v).unwrap_or(m);
    }
    m
}

#[rustler::nif]
fn pc_get_configuration<'a>(env: Env<'a>, specter: Term<'a>, pc: Term<'a>) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        h.submit(make_op(
            &h.events,
            env.pid(),
            "configuration",
            |pc| async move {
                let c = pc.get_configuration().await;
                Ok(reply(move |env, pc| {
                    (atoms::configuration(), pc, configuration_term(env, &c)).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

/// `ice_servers` (normalized by Elixir, or nil to keep) and `ice_transport_policy` (`:all`,
/// `:relay`, or nil to keep): the fields W3C lets an application change after construction.
#[rustler::nif]
fn pc_set_configuration<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    pc: Term<'a>,
    ice_servers: Term<'a>,
    policy: Atom,
) -> Term<'a> {
    let res = (|| {
        let (_, h) = lookup(specter, pc)?;
        let servers: Option<Vec<IceServer>> = ice_servers
            .decode()
            .map_err(|_| Error::InvalidOption("ice_servers".into()))?;
        let policy = if policy == atoms::relay() {
            Some(RTCIceTransportPolicy::Relay)
        } else if policy == atoms::all() {
            Some(RTCIceTransportPolicy::All)
        } else if policy == atoms::nil() {
            None
        } else {
            return Err(Error::InvalidOption("ice_transport_policy".into()));
        };
        let servers: Option<Vec<webrtc::peer_connection::RTCIceServer>> = servers.map(|list| {
            list.into_iter()
                .map(|s| webrtc::peer_connection::RTCIceServer {
                    urls: s.urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
                .collect()
        });
        h.submit(make_op(
            &h.events,
            env.pid(),
            "set_configuration",
            move |pc| async move {
                let current = pc.get_configuration().await;
                let next = RTCConfigurationBuilder::new()
                    .with_ice_servers(servers.unwrap_or_else(|| current.ice_servers().to_vec()))
                    .with_ice_transport_policy(policy.unwrap_or(current.ice_transport_policy()))
                    .with_bundle_policy(current.bundle_policy())
                    .with_rtcp_mux_policy(current.rtcp_mux_policy())
                    .with_ice_candidate_pool_size(current.ice_candidate_pool_size())
                    .build();
                pc.set_configuration(next).await?;
                Ok(reply(|env, pc| {
                    (atoms::ok(), pc, atoms::set_configuration()).encode(env)
                }))
            },
        ));
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
