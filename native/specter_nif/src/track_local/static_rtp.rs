//! The NIFs of `Specter.TrackLocalStaticRTP`: a local track fed with RTP packets (from
//! Elixir, or forwarded natively from a remote track). Each connection's binding rewrites
//! SSRC and payload type.

use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use rustler::{Atom, Binary, Term};

use super::{static_sample, Flavor, Write};
use crate::atoms;
use crate::error::Error;
use crate::instance::Specter;
use crate::nif::{answer, Answer, Arg, Name, StreamId};

#[rustler::nif]
fn track_local_rtp_new(
    specter: Arg<Specter>,
    codec: Term<'_>,
    track_id: Arg<Name>,
    stream_id: Arg<StreamId>,
) -> Answer<(Atom, String)> {
    answer(|| static_sample::new(specter, codec, track_id, stream_id, Flavor::Rtp))
}

/// Queues one marshalled RTP packet for every connection the track is on.
#[rustler::nif]
fn track_local_rtp_write_rtp(
    specter: Arg<Specter>,
    track: Term<'_>,
    packet: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let inst = specter.instance()?;
        let entry = inst.local_track(track)?;
        let bad = |_| Error::InvalidArgument("packet");
        let bin: Binary<'_> = packet.decode().map_err(bad)?;
        let mut buf = bin.as_slice();
        let pkt = rtp::Packet::unmarshal(&mut buf).map_err(|_| Error::InvalidArgument("packet"))?;
        entry.submit(&inst.handle, Write::Rtp(pkt))?;
        Ok(atoms::ok())
    })
}
