//! `Specter.DataChannel`: channels created locally or announced by the remote peer.
//!
//! Every channel gets a UUID handle, a reader task (channel events → owner messages) and a
//! writer task (an ordered queue of sends and the close, so the NIF never waits for the
//! connection's lock). The owner is the connection's owner.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use rustler::{Binary, Encoder, Env, LocalPid, Term};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};

use crate::atoms;
use crate::error::{encode_result, Error, NifResult};
use crate::mailbox;
use crate::peer_connection::{make_op, reply, PcEvents};
use crate::specter::{instance, lock, new_id, normalize_id, string_arg, Instance};

const CONNECTING: u8 = 0;
const OPEN: u8 = 1;
const CLOSING: u8 = 2;
const CLOSED: u8 = 3;

fn state_name(s: u8) -> &'static str {
    match s {
        CONNECTING => "connecting",
        OPEN => "open",
        CLOSING => "closing",
        _ => "closed",
    }
}

/// What a channel was created with; fixed for its lifetime.
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

pub struct DcHandle {
    pub id: String,
    pub pc_id: String,
    info: Mutex<DcInfo>,
    owner: Mutex<LocalPid>,
    state: AtomicU8,
    channel: OnceLock<Arc<dyn DataChannel>>,
    tx: mpsc::UnboundedSender<Outgoing>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    /// Bytes queued in the writer, not yet handed to webrtc-rs.
    queued: AtomicUsize,
}

impl DcHandle {
    fn new(pc_id: &str, owner: LocalPid, info: DcInfo) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            id: new_id(),
            pc_id: pc_id.to_owned(),
            info: Mutex::new(info),
            owner: Mutex::new(owner),
            state: AtomicU8::new(CONNECTING),
            channel: OnceLock::new(),
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
        })
    }

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
            .spawn(writer(Arc::downgrade(handle), Arc::clone(&channel), rx));
    }
    inst.handle
        .spawn(reader(Arc::downgrade(inst), Arc::clone(handle), channel));
}

async fn reader(
    inst: std::sync::Weak<Instance>,
    handle: Arc<DcHandle>,
    channel: Arc<dyn DataChannel>,
) {
    while let Some(event) = channel.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                handle.state.store(OPEN, Ordering::Release);
                handle.emit(|env, dc| (atoms::data_channel_open(), dc).encode(env));
            }
            DataChannelEvent::OnMessage(msg) => {
                let text = msg.is_string;
                let data = msg.data;
                handle.emit(move |env, dc| {
                    let bin = rustler::OwnedBinary::from_slice(&data);
                    let kind = if text { atoms::text() } else { atoms::binary() };
                    (atoms::data_channel_message(), dc, (kind, bin.release(env))).encode(env)
                });
            }
            DataChannelEvent::OnClosing => {
                handle.state.store(CLOSING, Ordering::Release);
                handle.emit(|env, dc| (atoms::data_channel_closing(), dc).encode(env));
            }
            DataChannelEvent::OnClose => {
                break;
            }
            DataChannelEvent::OnError => {
                handle.emit(|env, dc| {
                    (
                        atoms::data_channel_error(),
                        dc,
                        Error::Webrtc("channel error".into()),
                    )
                        .encode(env)
                });
            }
            DataChannelEvent::OnBufferedAmountLow => {
                handle.emit(|env, dc| (atoms::data_channel_buffered_amount_low(), dc).encode(env));
            }
            _ => {}
        }
    }
    handle.state.store(CLOSED, Ordering::Release);
    handle.emit(|env, dc| (atoms::data_channel_close(), dc).encode(env));
    if let Some(inst) = inst.upgrade() {
        lock(&inst.data_channels).remove(&handle.id);
        lock(&inst.closed_dcs).insert(&handle.id);
    }
}

async fn writer(
    handle: std::sync::Weak<DcHandle>,
    channel: Arc<dyn DataChannel>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        let dequeued = |n: usize| {
            if let Some(h) = handle.upgrade() {
                h.queued.fetch_sub(n, Ordering::AcqRel);
            }
        };
        let res = match out {
            Outgoing::Binary(data) => {
                dequeued(data.len());
                channel.send(data).await
            }
            Outgoing::Text(text) => {
                dequeued(text.len());
                channel.send_text(&text).await
            }
            Outgoing::Close => channel.close().await,
        };
        if let (Err(e), Some(h)) = (res, handle.upgrade()) {
            let err = Error::from_webrtc(&e);
            h.emit(move |env, dc| (atoms::data_channel_error(), dc, err).encode(env));
        }
    }
}

/// A channel the remote peer opened: register it and tell the owner.
pub fn announce_remote(events: &Arc<PcEvents>, channel: Arc<dyn DataChannel>) {
    let Some(inst) = events.instance.upgrade() else {
        return;
    };
    let handle = DcHandle::new(&events.id, events.owner(), DcInfo::default());
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
            let mut owner = lock(&dc.owner);
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
        Ok(v) => v
            .decode::<u16>()
            .map(Some)
            .map_err(|_| Error::InvalidOption(key.into())),
        Err(_) => Ok(None),
    }
}

/// Decodes the options map Elixir normalized from `RTCDataChannelInit`.
fn channel_init(opts: Term<'_>) -> NifResult<(RTCDataChannelInit, DcInfo)> {
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
        (true, Some(id)) => Some(id),
        (true, None) => return Err(Error::InvalidOption("id".into())),
        (false, _) => None,
    };
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
    Ok((init, info))
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
        let (init, mut info) = channel_init(opts)?;
        info.label = label.clone();
        let h = s.inner.pc(&pc_id)?;
        let handle = DcHandle::new(&h.id, h.events.owner(), info);
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
            return Err(Error::InvalidState(state_name(state).into()));
        }
        let out = if text {
            let s =
                std::str::from_utf8(bin.as_slice()).map_err(|_| Error::InvalidArgument("data"))?;
            Outgoing::Text(s.to_owned())
        } else {
            Outgoing::Binary(BytesMut::from(bin.as_slice()))
        };
        let limit = inst.config.data_channel_send_buffer_limit;
        let before = h.queued.fetch_add(bin.len(), Ordering::AcqRel);
        if before > 0 && before.saturating_add(bin.len()) > limit {
            h.queued.fetch_sub(bin.len(), Ordering::AcqRel);
            return Err(Error::BufferFull);
        }
        if h.tx.send(out).is_err() {
            h.queued.fetch_sub(bin.len(), Ordering::AcqRel);
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
        h.tx.send(Outgoing::Close).map_err(|_| Error::Closed)?;
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn dc_ready_state<'a>(env: Env<'a>, specter: Term<'a>, dc: Term<'a>) -> Term<'a> {
    let res = lookup(specter, dc).map(|h| {
        let name = state_name(h.state.load(Ordering::Acquire));
        rustler::Atom::from_str(env, name).unwrap_or_else(|_| atoms::error())
    });
    match res {
        Ok(a) => (atoms::ok(), a).encode(env),
        Err(e) => crate::error::error_tuple(env, &e),
    }
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
            (atoms::peer_connection(), h.pc_id.as_str().encode(env)),
        ] {
            map = map.map_put(k.encode(env), v).unwrap_or(map);
        }
        (atoms::ok(), map)
    });
    encode_result(env, res)
}
