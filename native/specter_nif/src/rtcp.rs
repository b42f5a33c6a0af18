//! RTCP packets as Elixir terms: `%{type: :pli, sender_ssrc: ..., media_ssrc: ...}`, ...
//! (the shapes `Specter.TrackLocalStaticRTP` and `Specter.TrackRemote` document).

use rustler::{Atom, Encoder, Env, Term};

use crate::atoms;
use specter_core::rtcp::{Report, RtcpInfo};

/// A map with atom keys.
pub fn map<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> Term<'a> {
    let mut m = rustler::types::map::map_new(env);
    for (k, v) in pairs {
        m = m.map_put(k.encode(env), *v).unwrap_or(m);
    }
    m
}

/// Every packet of a compound RTCP packet, as a list of maps.
pub fn terms<'a>(env: Env<'a>, infos: &[RtcpInfo]) -> Term<'a> {
    infos.iter().map(|info| term(env, info)).collect::<Vec<_>>().encode(env)
}

fn term<'a>(env: Env<'a>, info: &RtcpInfo) -> Term<'a> {
    let e = |v: &dyn Encoder| v.encode(env);
    match info {
        RtcpInfo::Pli { sender_ssrc, media_ssrc } => {
            feedback(env, atoms::pli(), *sender_ssrc, *media_ssrc, &[])
        }
        RtcpInfo::Fir { sender_ssrc, media_ssrc } => {
            feedback(env, atoms::fir(), *sender_ssrc, *media_ssrc, &[])
        }
        RtcpInfo::Nack { sender_ssrc, media_ssrc, lost } => {
            feedback(env, atoms::nack(), *sender_ssrc, *media_ssrc, &[(atoms::lost(), e(lost))])
        }
        RtcpInfo::ReceiverReport { ssrc, reports: rs } => map(
            env,
            &[
                (atoms::type_(), e(&atoms::receiver_report())),
                (atoms::ssrc(), e(ssrc)),
                (atoms::reports(), reports(env, rs)),
            ],
        ),
        RtcpInfo::SenderReport {
            ssrc,
            ntp_time,
            rtp_time,
            packet_count,
            octet_count,
            reports: rs,
        } => map(
            env,
            &[
                (atoms::type_(), e(&atoms::sender_report())),
                (atoms::ssrc(), e(ssrc)),
                (atoms::ntp_time(), e(ntp_time)),
                (atoms::rtp_time(), e(rtp_time)),
                (atoms::packet_count(), e(packet_count)),
                (atoms::octet_count(), e(octet_count)),
                (atoms::reports(), reports(env, rs)),
            ],
        ),
        RtcpInfo::Remb { bitrate, ssrcs } => map(
            env,
            &[
                (atoms::type_(), e(&atoms::remb())),
                (atoms::bitrate(), e(&(*bitrate as f64))),
                (atoms::ssrcs(), e(ssrcs)),
            ],
        ),
    }
}

/// A feedback message (PLI, FIR, NACK): its type, both SSRCs and `extra` fields.
fn feedback<'a>(
    env: Env<'a>,
    typ: Atom,
    sender_ssrc: u32,
    media_ssrc: u32,
    extra: &[(Atom, Term<'a>)],
) -> Term<'a> {
    let mut pairs = vec![
        (atoms::type_(), typ.encode(env)),
        (atoms::sender_ssrc(), sender_ssrc.encode(env)),
        (atoms::media_ssrc(), media_ssrc.encode(env)),
    ];
    pairs.extend_from_slice(extra);
    map(env, &pairs)
}

fn reports<'a>(env: Env<'a>, rs: &[Report]) -> Term<'a> {
    rs.iter()
        .map(|r| {
            map(
                env,
                &[
                    (atoms::ssrc(), r.ssrc.encode(env)),
                    (atoms::fraction_lost(), r.fraction_lost.encode(env)),
                    (atoms::total_lost(), r.total_lost.encode(env)),
                    (atoms::last_sequence_number(), r.last_sequence_number.encode(env)),
                    (atoms::jitter(), r.jitter.encode(env)),
                ],
            )
        })
        .collect::<Vec<_>>()
        .encode(env)
}
