//! The NIFs of `Specter.RtpTransceiver`: changing a transceiver's direction and stopping
//! it. Transceivers are added and listed by `Specter.PeerConnection` (`peer_connection::media`).

use std::sync::Arc;

use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rustler::{Atom, Encoder, Env, Term};

use crate::atoms;
use crate::instance::Specter;
use crate::nif::{answer, Answer, Arg, PcId, TransceiverId};
use crate::peer_connection::lookup;
use crate::peer_connection::media::{find_transceiver, media_id, Direction};
use crate::peer_connection::shared::done;

/// `set_direction`: `{:ok, pc, :set_direction}`.
#[rustler::nif]
fn transceiver_set_direction(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    transceiver: Arg<TransceiverId>,
    dir: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let id = media_id(transceiver.get()?.0)?;
        let direction = Direction::decode(dir)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::set_direction_error(), move |pc| async move {
            let t = find_transceiver(&pc, &events, &id).await?;
            t.set_direction(direction).await?;
            Ok(done(atoms::set_direction()))
        })
    })
}

/// `stop`: `{:ok, pc, :stop_transceiver}`.
#[rustler::nif]
fn transceiver_stop(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    transceiver: Arg<TransceiverId>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let id = media_id(transceiver.get()?.0)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::stop_transceiver_error(), move |pc| async move {
            let t = find_transceiver(&pc, &events, &id).await?;
            let was = t.current_direction().await.ok();
            t.stop().await?;
            // W3C: stopping updates the negotiation-needed flag; webrtc-rs 0.21.1 does not,
            // so the owner is told here (once negotiated: the next offer changes).
            if was.is_some_and(|d| d != RTCRtpTransceiverDirection::Unspecified) {
                events.emit(|env, pc| (atoms::negotiation_needed(), pc).encode(env));
            }
            Ok(done(atoms::stop_transceiver()))
        })
    })
}
