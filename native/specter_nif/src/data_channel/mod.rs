//! `Specter.DataChannel`: channels created locally or announced by the remote peer. Every
//! channel gets a UUID handle (`handle`), a `reader` task and a `writer` task.

pub mod handle;
pub mod options;
pub mod reader;
pub mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use rustler::{Atom, Binary, Encoder, Env, LocalPid, NifMap, NifUnitEnum, Term};
use webrtc::data_channel::DataChannel;

use crate::atoms;
use crate::error::{Error, NifResult};
use crate::instance::{Instance, Specter};
use crate::nif::{answer, Answer, Arg, DcId, Label, PcId};
use crate::peer_connection::shared::{reply, PcEvents};
use handle::{DcHandle, DcInfo, Outgoing, ReadyState};
use specter_core::registry::lock;

/// Starts the reader and writer of a channel that now exists in webrtc-rs.
fn attach(inst: &Arc<Instance>, handle: &Arc<DcHandle>, channel: Arc<dyn DataChannel>) {
    if handle.channel.set(Arc::clone(&channel)).is_err() {
        return;
    }
    let rx = lock(&handle.rx).take();
    if let Some(rx) = rx {
        // The writer holds what it shares with the handle, not the handle: the handle owns
        // the queue's sender, so holding it would keep the writer (and the connection)
        // alive for ever.
        let shared = Arc::clone(&handle.shared);
        inst.handle.spawn(writer::run(shared, Arc::clone(&channel), rx));
    }
    let budget = inst.config.data_channel_receive_buffer;
    let reader = reader::Reader::new(Arc::clone(handle), channel, budget);
    inst.handle.spawn(reader.run(forget(Arc::downgrade(inst))));
}

/// What the instance does when a channel closes: it forgets it (its id answers `:closed`).
fn forget(inst: Weak<Instance>) -> reader::OnClose {
    Box::new(move |h| {
        if let Some(inst) = inst.upgrade() {
            inst.data_channels.remove(&h.id);
        }
    })
}

/// A channel the remote peer opened: register it and tell the owner.
pub fn announce_remote(
    inst: &Arc<Instance>,
    events: &Arc<PcEvents>,
    channel: Arc<dyn DataChannel>,
) {
    let handle = DcHandle::new(events, DcInfo::default(), inst.default_active());
    inst.data_channels.insert(handle.id.clone(), Arc::clone(&handle));
    let dc_id = handle.id.clone();
    let inst2 = Arc::clone(inst);
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

/// Points the channels of a connection that `old` owned at `new`.
pub fn reassign_owner(inst: &Instance, pc_id: &str, old: LocalPid, new: LocalPid) {
    for dc in inst.data_channels.values() {
        if dc.pc_id == pc_id && dc.shared.owner.pid() == old {
            dc.shared.owner.set(new);
        }
    }
}

/// What `create_data_channel` answers: Specter 0.5's `{:data_channel_created, pc}`
/// (`Specter.PeerConnection.create_data_channel/3`) or `{:data_channel_created, pc, dc}`
/// (`Specter.DataChannel.create/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
enum Created {
    Pc,
    PcAndChannel,
}

/// Creates a channel on a connection; answers `{:ok, dc}` at once and `{:data_channel_created,
/// ...}` once webrtc-rs has it.
#[rustler::nif]
fn dc_create(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    label: Arg<Label>,
    opts: Term<'_>,
    created: Term<'_>,
) -> Answer<(Atom, String)> {
    answer(|| {
        let inst = specter.instance()?;
        let pc_id = pc.get()?.0;
        let label = label.get()?.0;
        if label.len() > u16::MAX as usize {
            return Err(Error::TooLarge);
        }
        let created: Created = created.decode().map_err(|_| Error::InvalidArgument("created"))?;
        let (init, mut info, active) = options::decode(opts)?;
        info.label = label.clone();
        let h = inst.pcs.get(&pc_id)?;
        let active = active.unwrap_or_else(|| inst.default_active());
        let handle = DcHandle::new(&h.events, info, active);
        let dc_id = handle.id.clone();
        inst.data_channels.insert(dc_id.clone(), Arc::clone(&handle));
        let reply_id = dc_id.clone();
        h.run(env.pid(), atoms::create_data_channel_error(), move |pc| async move {
            match pc.create_data_channel(&label, Some(init)).await {
                Ok(channel) => attach(&inst, &handle, channel),
                Err(e) => {
                    inst.data_channels.entries().remove(&handle.id);
                    return Err(Error::from_webrtc(&e));
                }
            }
            Ok(match created {
                Created::Pc => reply(|env, pc| (atoms::data_channel_created(), pc).encode(env)),
                Created::PcAndChannel => reply(move |env, pc| {
                    (atoms::data_channel_created(), pc, reply_id.as_str()).encode(env)
                }),
            })
        })?;
        Ok((atoms::ok(), dc_id))
    })
}

/// The instance and the channel named by the arguments.
fn lookup(specter: Arg<Specter>, dc: Arg<DcId>) -> NifResult<(Arc<Instance>, Arc<DcHandle>)> {
    let inst = specter.instance()?;
    let h = inst.data_channels.get(&dc.get()?.0)?;
    Ok((inst, h))
}

/// Queues a message. `text` marks a UTF-8 text message.
#[rustler::nif]
fn dc_send(specter: Arg<Specter>, dc: Arg<DcId>, data: Term<'_>, text: bool) -> Answer<Atom> {
    answer(|| {
        let (inst, h) = lookup(specter, dc)?;
        let bin: Binary<'_> = data.decode().map_err(|_| Error::InvalidArgument("data"))?;
        match h.state() {
            ReadyState::Open => {}
            ReadyState::Closed => return Err(Error::Closed),
            other => return Err(Error::InvalidState(other.name().into())),
        }
        let len = bin.len();
        if len > h.max_message_size.load(Ordering::Acquire) {
            return Err(Error::TooLarge);
        }
        let sh = &h.shared;
        let queued = sh.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > inst.config.data_channel_send_buffer_limit {
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
    })
}

#[rustler::nif]
fn dc_close(specter: Arg<Specter>, dc: Arg<DcId>) -> Answer<Atom> {
    answer(|| {
        let (_, h) = lookup(specter, dc)?;
        let state = h.state();
        if state == ReadyState::Closed {
            return Err(Error::Closed);
        }
        h.set_state(state.max(ReadyState::Closing));
        h.closing_done.store(true, Ordering::Release);
        h.tx.send(Outgoing::Close).map_err(|_| Error::Closed)?;
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn dc_ready_state(specter: Arg<Specter>, dc: Arg<DcId>) -> Answer<(Atom, ReadyState)> {
    answer(|| Ok((atoms::ok(), lookup(specter, dc)?.1.state())))
}

#[rustler::nif]
fn dc_set_active(specter: Arg<Specter>, dc: Arg<DcId>, active: Term<'_>) -> Answer<Atom> {
    answer(|| {
        let (_, h) = lookup(specter, dc)?;
        h.active.set(crate::flow::Active::decode(active)?);
        h.credit.notify_one();
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn dc_set_batch(specter: Arg<Specter>, dc: Arg<DcId>, batch: Term<'_>) -> Answer<Atom> {
    answer(|| {
        let (_, h) = lookup(specter, dc)?;
        let n: usize = batch
            .decode()
            .ok()
            .filter(|n| (1..=65_536).contains(n))
            .ok_or_else(|| Error::InvalidOption("batch".into()))?;
        h.batch.store(n, Ordering::Release);
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn dc_buffered_amount(specter: Arg<Specter>, dc: Arg<DcId>) -> Answer<(Atom, usize)> {
    answer(|| Ok((atoms::ok(), lookup(specter, dc)?.1.shared.buffered_amount())))
}

#[rustler::nif]
fn dc_set_buffered_amount_low_threshold(
    specter: Arg<Specter>,
    dc: Arg<DcId>,
    threshold: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let (_, h) = lookup(specter, dc)?;
        let threshold: usize =
            threshold.decode().map_err(|_| Error::InvalidArgument("threshold"))?;
        h.shared.low_threshold.store(threshold, Ordering::Release);
        h.shared.drain_wanted.notify_one();
        Ok(atoms::ok())
    })
}

/// `Specter.DataChannel.info/2`'s map.
#[derive(NifMap)]
struct Info {
    label: String,
    protocol: String,
    ordered: bool,
    negotiated: bool,
    id: Option<u16>,
    max_retransmits: Option<u16>,
    max_packet_life_time: Option<u16>,
    max_message_size: usize,
    buffered_amount_low_threshold: usize,
    peer_connection: String,
}

#[rustler::nif]
fn dc_info(specter: Arg<Specter>, dc: Arg<DcId>) -> Answer<(Atom, Info)> {
    answer(|| {
        let (_, h) = lookup(specter, dc)?;
        let info = lock(&h.info).clone();
        Ok((
            atoms::ok(),
            Info {
                label: info.label,
                protocol: info.protocol,
                ordered: info.ordered,
                negotiated: info.negotiated,
                id: info.stream_id,
                max_retransmits: info.max_retransmits,
                max_packet_life_time: info.max_packet_life_time,
                max_message_size: h.max_message_size.load(Ordering::Acquire),
                buffered_amount_low_threshold: h.shared.low_threshold.load(Ordering::Acquire),
                peer_connection: h.pc_id.clone(),
            },
        ))
    })
}
