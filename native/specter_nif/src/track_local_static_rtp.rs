//! `Specter.TrackLocalStaticRTP`: a local track fed with RTP packets (from Elixir, or
//! forwarded natively from a remote track). Each connection's binding rewrites SSRC and
//! payload type.

use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use rustler::{Binary, Env, Term};

use crate::atoms;
use crate::error::{encode_result, Error};
use crate::specter::instance;
use crate::track_local::{Flavor, Write};
use crate::track_local_static_sample::{local_track, new_track};

#[rustler::nif]
fn rtp_track_new<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    codec: Term<'a>,
    track_id: Term<'a>,
    stream_id: Term<'a>,
) -> Term<'a> {
    let res =
        new_track(specter, codec, track_id, stream_id, Flavor::Rtp).map(|id| (atoms::ok(), id));
    encode_result(env, res)
}

/// Queues one marshalled RTP packet for every connection the track is on.
#[rustler::nif]
fn rtp_track_write_rtp<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    track: Term<'a>,
    packet: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let entry = local_track(&s.inner, track)?;
        let bin: Binary<'_> = packet
            .decode()
            .map_err(|_| Error::InvalidArgument("packet"))?;
        let mut buf = bin.as_slice();
        let pkt = rtp::Packet::unmarshal(&mut buf).map_err(|_| Error::InvalidArgument("packet"))?;
        entry.submit(&s.inner.handle, Write::Rtp(pkt))?;
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}
