//! The options map Elixir normalized from `RTCDataChannelInit` (plus `active`).

use rustler::{Encoder, Term};
use webrtc::data_channel::RTCDataChannelInit;

use super::handle::DcInfo;
use crate::atoms;
use crate::error::{Error, NifResult};
use crate::flow::Active;
use crate::nif::int_arg;

fn opt_u16(opts: Term<'_>, key: &str) -> NifResult<Option<u16>> {
    let env = opts.get_env();
    let atom = rustler::Atom::from_str(env, key).map_err(|_| Error::InvalidOption(key.into()))?;
    match opts.map_get(atom.encode(env)) {
        Ok(v) if v == atoms::nil().encode(env) => Ok(None),
        Ok(v) => int_arg::<u16>(v).map(Some).ok_or_else(|| Error::InvalidOption(key.into())),
        Err(_) => Ok(None),
    }
}

/// `(init for webrtc-rs, what `info/2` reports, the receive mode if given)`.
pub fn decode(opts: Term<'_>) -> NifResult<(RTCDataChannelInit, DcInfo, Option<Active>)> {
    let env = opts.get_env();
    let get = |key: &str| -> Option<Term<'_>> {
        let atom = rustler::Atom::from_str(env, key).ok()?;
        opts.map_get(atom.encode(env)).ok()
    };
    let ordered = match get("ordered") {
        Some(v) => v.decode::<bool>().map_err(|_| Error::InvalidOption("ordered".into()))?,
        None => true,
    };
    let protocol = match get("protocol") {
        Some(v) => v.decode::<String>().map_err(|_| Error::InvalidOption("protocol".into()))?,
        None => String::new(),
    };
    let max_retransmits = opt_u16(opts, "max_retransmits")?;
    let max_packet_life_time = opt_u16(opts, "max_packet_life_time")?;
    if max_retransmits.is_some() && max_packet_life_time.is_some() {
        return Err(Error::InvalidOption("max_retransmits".into()));
    }
    let negotiated = match get("negotiated") {
        Some(v) => v.decode::<bool>().map_err(|_| Error::InvalidOption("negotiated".into()))?,
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
