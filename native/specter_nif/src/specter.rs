//! The NIFs of `Specter`: instances, media engines, interceptor registries, APIs, and what
//! an instance and the runtime hold.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use rustler::{Atom, NifMap, ResourceArc, Term};
use webrtc::peer_connection::MediaEngine;

use crate::atoms;
use crate::codec;
use crate::config::Config;
use crate::error::{Error, NifResult};
use crate::instance::{Api, Instance, RegistrySpec, Specter, SpecterResource};
use crate::nif::{answer, int_arg, Answer, Arg, FromArg, MediaEngineId, RegistryId};
use specter_core::registry::{lock, new_id};
use specter_core::runtime;

impl FromArg for Config {
    const NAME: &'static str = "config";
    fn from_term(term: Term<'_>) -> Option<Self> {
        term.decode().ok()
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn init(config: Arg<Config>) -> Answer<(Atom, ResourceArc<SpecterResource>)> {
    answer(|| {
        let config = config.get()?;
        let rt = runtime::global().map_err(Error::RuntimeUnavailable)?;
        let inner = Arc::new(Instance::new(config, rt.handle().clone()));
        Ok((atoms::ok(), ResourceArc::new(SpecterResource { inner })))
    })
}

#[rustler::nif]
fn config(specter: Arg<Specter>) -> Answer<(Atom, Config)> {
    answer(|| Ok((atoms::ok(), specter.get()?.0.inner.config.clone())))
}

#[rustler::nif]
fn new_media_engine(specter: Arg<Specter>, default_codecs: bool) -> Answer<(Atom, String)> {
    answer(|| {
        let s = specter.get()?.0;
        let mut media_engine = MediaEngine::default();
        if default_codecs {
            media_engine.register_default_codecs()?;
        }
        let id = new_id();
        let engine = Arc::new(Mutex::new(media_engine));
        s.inner.media_engines.insert(id.clone(), engine);
        Ok((atoms::ok(), id))
    })
}

/// Registers a codec (an `RTCRtpCodecCapability` and its payload type) with a media engine
/// that no API has taken yet.
#[rustler::nif]
fn media_engine_register_codec(
    specter: Arg<Specter>,
    media_engine: Arg<MediaEngineId>,
    codec: Term<'_>,
    payload_type: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let s = specter.get()?.0;
        let engine = s.inner.media_engines.get(&media_engine.get()?.0)?;
        let (codec, kind) = codec::decode(codec)?;
        let payload_type = int_arg::<u8>(payload_type)
            .filter(|pt| (1..=127).contains(pt))
            .ok_or(Error::InvalidArgument("payload_type"))?;
        let parameters = rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters {
            rtp_codec: codec,
            payload_type,
        };
        lock(&engine).register_codec(parameters, kind)?;
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn new_registry(specter: Arg<Specter>, media_engine: Arg<MediaEngineId>) -> Answer<(Atom, String)> {
    answer(|| {
        let s = specter.get()?.0;
        let me = media_engine.get()?.0;
        s.inner.media_engines.get(&me)?;
        let media_engine = specter_core::registry::normalize_id(&me).ok_or(Error::NotFound)?;
        let id = new_id();
        s.inner.registries.insert(id.clone(), RegistrySpec { media_engine });
        Ok((atoms::ok(), id))
    })
}

#[rustler::nif]
fn new_api(
    specter: Arg<Specter>,
    media_engine: Arg<MediaEngineId>,
    registry: Arg<RegistryId>,
) -> Answer<(Atom, String)> {
    answer(|| {
        let s = specter.get()?.0;
        let (me, reg) = (media_engine.get()?.0, registry.get()?.0);
        // Check both before consuming either.
        let engine = s.inner.media_engines.get(&me)?;
        let spec = s.inner.registries.get(&reg)?;
        let me = specter_core::registry::normalize_id(&me).ok_or(Error::NotFound)?;
        if spec.media_engine != me {
            return Err(Error::InvalidArgument("registry"));
        }
        let reg = specter_core::registry::normalize_id(&reg).ok_or(Error::NotFound)?;
        s.inner.media_engines.remove(&me).ok_or(Error::NotFound)?;
        s.inner.registries.remove(&reg);
        let media_engine = lock(&engine).clone();
        let id = new_id();
        s.inner.apis.insert(id.clone(), Arc::new(Api { media_engine }));
        Ok((atoms::ok(), id))
    })
}

/// Whether `id` names a live object of `specter` in the registry `pick` chooses.
fn exists(specter: Arg<Specter>, id: Term<'_>, pick: fn(&Instance, &str) -> bool) -> bool {
    match (specter.get(), id.decode::<String>()) {
        (Ok(s), Ok(id)) => pick(&s.0.inner, id.as_str()),
        _ => false,
    }
}

#[rustler::nif]
fn media_engine_exists(specter: Arg<Specter>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| i.media_engines.contains(k))
}

#[rustler::nif]
fn registry_exists(specter: Arg<Specter>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| i.registries.contains(k))
}

#[rustler::nif]
fn api_exists(specter: Arg<Specter>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| i.apis.contains(k))
}

/// Counts of what an instance hosts (for leak checks and IEx inspection).
#[derive(NifMap)]
struct InstanceInfo {
    media_engines: usize,
    registries: usize,
    apis: usize,
    peer_connections: usize,
    data_channels: usize,
    tracks: usize,
    remote_tracks: usize,
    recorders: usize,
    players: usize,
}

#[rustler::nif]
fn instance_info(specter: Arg<Specter>) -> Answer<(Atom, InstanceInfo)> {
    answer(|| {
        let i = &specter.get()?.0.inner;
        let info = InstanceInfo {
            media_engines: i.media_engines.len(),
            registries: i.registries.len(),
            apis: i.apis.len(),
            peer_connections: i.pcs.len(),
            data_channels: i.data_channels.len(),
            tracks: i.tracks.len(),
            remote_tracks: i.remote_tracks.len(),
            recorders: i.recorders.len(),
            players: i.players.len(),
        };
        Ok((atoms::ok(), info))
    })
}

/// Process-wide runtime figures (see `Specter.runtime_info/0`).
#[derive(NifMap)]
struct RuntimeInfo {
    workers: usize,
    alive_tasks: usize,
    effective_socket_buffer: usize,
    refused_sends: u64,
    refused_resolutions: u64,
    nudges: u64,
    replayed_checks: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
    driver_sleeps_fired_10ms: u64,
    driver_sleeps_fired_100ms: u64,
    driver_sleeps_fired_1s: u64,
    driver_sleep_fired_ms: u64,
}

#[rustler::nif]
fn runtime_info() -> Answer<(Atom, RuntimeInfo)> {
    answer(|| -> NifResult<_> {
        let m = runtime::global().map_err(Error::RuntimeUnavailable)?.metrics();
        let info = RuntimeInfo {
            workers: m.num_workers(),
            alive_tasks: m.num_alive_tasks(),
            effective_socket_buffer: runtime::LAST_EFFECTIVE_RCVBUF.load(Relaxed),
            refused_sends: runtime::REFUSED_SENDS.load(Relaxed),
            refused_resolutions: runtime::REFUSED_RESOLUTIONS.load(Relaxed),
            nudges: runtime::NUDGES.load(Relaxed),
            replayed_checks: runtime::REPLAYED_CHECKS.load(Relaxed),
            datagrams_sent: runtime::DATAGRAMS_SENT.load(Relaxed),
            datagrams_received: runtime::DATAGRAMS_RECEIVED.load(Relaxed),
            driver_sleeps_fired_10ms: runtime::SLEEPS_FIRED[0].load(Relaxed),
            driver_sleeps_fired_100ms: runtime::SLEEPS_FIRED[1].load(Relaxed),
            driver_sleeps_fired_1s: runtime::SLEEPS_FIRED[2].load(Relaxed),
            driver_sleep_fired_ms: runtime::SLEEPS_FIRED_MS.load(Relaxed),
        };
        Ok((atoms::ok(), info))
    })
}
