//! `Specter.PeerConnection`: connection lifecycle, negotiation, ICE, state, stats.
//!
//! Each connection has one worker task (`worker`) that owns it and runs its operations in
//! the order they were called, answering the caller with a message. Events of the
//! connection (states, candidates, negotiation-needed, data channels, tracks) go to its
//! owner (`handler`). `shared` holds what they share, `quirks` the webrtc-rs workarounds.

pub mod config;
pub mod handler;
pub mod media;
pub mod quirks;
pub mod shared;
pub mod stats;
pub mod worker;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustler::{Atom, Encoder, Env, NifUnitEnum, NifUntaggedEnum, Term};
use tokio::sync::mpsc;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCSdpType, RTCSessionDescription};

use rtc::peer_connection::configuration::{RTCAnswerOptions, RTCOfferOptions};

use crate::atoms;
use crate::config::IceServer;
use crate::data_channel;
use crate::error::{Error, NifResult};
use crate::instance::Specter;
use crate::json;
use crate::nif::{answer, Answer, ApiId, Arg, PcId, Pid};
use shared::{
    done, reply, ConnectionState, GatheringState, IceConnectionState, PcEvents, PcHandle,
    SignalingState,
};
use specter_core::registry::lock;
use specter_core::runtime::ConnRuntime;
use specter_core::signalling::{
    self, applied_description_json, candidate_context, description_json, local_description_json,
};

/// Largest session description or candidate accepted, in bytes of JSON.
pub const MAX_SIGNALLING_JSON: usize = 256 * 1024;

/// The connection named by the arguments.
pub fn lookup(specter: Arg<Specter>, pc: Arg<PcId>) -> NifResult<Arc<PcHandle>> {
    let inst = specter.instance()?;
    Ok(inst.pcs.get(&pc.get()?.0)?)
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
fn pc_new(env: Env<'_>, specter: Arg<Specter>, api: Arg<ApiId>) -> Answer<(Atom, String)> {
    answer(|| {
        let resource = specter.get()?.0;
        let inst = Arc::clone(&resource.inner);
        let api = inst.apis.get(&api.get()?.0)?;
        let caller = env.pid();
        let runtime = ConnRuntime::new(inst.handle.clone(), Arc::clone(&inst.policy));
        let timeout = Duration::from_millis(inst.config.dtls_handshake_timeout);
        let events = Arc::new(PcEvents::new(caller, runtime.wake(), inst.handle.clone(), timeout));
        let id = events.id.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(PcHandle {
            id: id.clone(),
            events: Arc::clone(&events),
            tx,
            closed: Arc::clone(&closed),
            monitor: Mutex::new(env.monitor(&resource, &caller)),
        });
        inst.pcs.insert(id.clone(), handle);
        let spec = worker::BuildSpec { api, instance: Arc::downgrade(&inst), events, runtime };
        inst.handle.spawn(worker::worker(spec, rx, closed, caller));
        Ok((atoms::ok(), id))
    })
}

#[rustler::nif]
fn pc_close(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let resource = specter.get()?.0;
        let handle = resource.inner.pcs.get(&pc.get()?.0)?;
        resource.inner.forget_pc(&handle.id);
        if let Some(mon) = lock(&handle.monitor).take() {
            env.demonitor(&resource, &mon);
        }
        handle.close(Some(env.pid()));
        Ok(atoms::ok())
    })
}

#[rustler::nif]
fn pc_exists(specter: Arg<Specter>, pc: Arg<PcId>) -> bool {
    lookup(specter, pc).is_ok_and(|h| !h.is_closed())
}

/// Hands the connection's events to `pid`; only the current owner may do so.
#[rustler::nif]
fn pc_controlling_process(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    pid: Arg<Pid>,
) -> Answer<Atom> {
    answer(|| {
        let resource = specter.get()?.0;
        let id = pc.get()?.0;
        let new_owner = pid.get()?.0;
        let handle = resource.inner.pcs.get(&id)?;
        let old_owner = handle.events.owner.pid();
        if old_owner != env.pid() {
            return Err(Error::NotOwner);
        }
        if !env.is_process_alive(new_owner) {
            return Err(Error::InvalidArgument("pid"));
        }
        let mut mon = lock(&handle.monitor);
        if let Some(old) = mon.take() {
            env.demonitor(&resource, &old);
        }
        *mon = env.monitor(&resource, &new_owner);
        handle.events.owner.set(new_owner);
        data_channel::reassign_owner(&resource.inner, &handle.id, old_owner, new_owner);
        Ok(atoms::ok())
    })
}

/// A boolean from an options map (`%{ice_restart: bool, voice_activity_detection: bool}`),
/// `false` when absent.
fn bool_opt(opts: Term<'_>, key: Atom, name: &str) -> NifResult<bool> {
    match opts.map_get(key) {
        Ok(v) => v.decode::<bool>().map_err(|_| Error::InvalidOption(name.into())),
        Err(_) => Ok(false),
    }
}

#[rustler::nif]
fn pc_create_offer(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    opts: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let ice_restart = bool_opt(opts, atoms::ice_restart(), "ice_restart")?;
        // Voice activity detection is accepted for API compatibility; webrtc-rs has no VAD.
        bool_opt(opts, atoms::voice_activity_detection(), "voice_activity_detection")?;
        let options = RTCOfferOptions { ice_restart };
        h.run(env.pid(), atoms::offer_error(), move |pc| async move {
            let json = description_json(&pc.create_offer(Some(options)).await?);
            Ok(reply(move |env, pc| (atoms::offer(), pc, json.as_str()).encode(env)))
        })
    })
}

#[rustler::nif]
fn pc_create_answer(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    opts: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let voice_activity_detection =
            bool_opt(opts, atoms::voice_activity_detection(), "voice_activity_detection")?;
        let options = RTCAnswerOptions { voice_activity_detection };
        h.run(env.pid(), atoms::answer_error(), move |pc| async move {
            let json = description_json(&pc.create_answer(Some(options)).await?);
            Ok(reply(move |env, pc| (atoms::answer(), pc, json.as_str()).encode(env)))
        })
    })
}

#[rustler::nif]
fn pc_set_local_description(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    desc: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let desc = parse_description(desc)?;
        let events = Arc::clone(&h.events);
        h.run(env.pid(), atoms::set_local_description_error(), move |pc| async move {
            if desc.sdp_type != RTCSdpType::Rollback {
                // Before applying: the driver may emit candidates before
                // `set_local_description` returns.
                if let Some(ctx) = candidate_context(&desc.sdp) {
                    *lock(&events.candidate_context) = Some(ctx);
                }
            }
            pc.set_local_description(desc).await?;
            Ok(done(atoms::set_local_description()))
        })
    })
}

#[rustler::nif]
fn pc_set_remote_description(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    desc: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let desc = parse_description(desc)?;
        let wake = Arc::clone(&h.events.wake);
        h.run(env.pid(), atoms::set_remote_description_error(), move |pc| async move {
            pc.set_remote_description(desc).await?;
            // Checks that arrived before it are answered now (RFC 8445 §7.3).
            wake.remote_description_applied();
            // Candidates inside the description start checks now rather than at the next tick.
            wake.nudge();
            Ok(done(atoms::set_remote_description()))
        })
    })
}

#[rustler::nif]
fn pc_add_ice_candidate(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    candidate: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let candidate = parse_candidate(candidate)?;
        let wake = Arc::clone(&h.events.wake);
        h.run(env.pid(), atoms::add_ice_candidate_error(), move |pc| async move {
            if quirks::belongs_to_transport(&pc, &candidate).await
                && !quirks::learned_as_prflx(&pc, &candidate).await
            {
                pc.add_ice_candidate(candidate).await.map_err(|e| Error::from_candidate(&e))?;
            }
            wake.nudge();
            Ok(done(atoms::add_ice_candidate()))
        })
    })
}

/// Which description `pc_description` answers with (the atoms are the function names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
#[allow(clippy::enum_variant_names)]
enum Which {
    LocalDescription,
    CurrentLocalDescription,
    PendingLocalDescription,
    RemoteDescription,
    CurrentRemoteDescription,
    PendingRemoteDescription,
}

impl Which {
    fn error_tag(self) -> Atom {
        match self {
            Which::LocalDescription => atoms::local_description_error(),
            Which::CurrentLocalDescription => atoms::current_local_description_error(),
            Which::PendingLocalDescription => atoms::pending_local_description_error(),
            Which::RemoteDescription => atoms::remote_description_error(),
            Which::CurrentRemoteDescription => atoms::current_remote_description_error(),
            Which::PendingRemoteDescription => atoms::pending_remote_description_error(),
        }
    }

    fn is_local(self) -> bool {
        matches!(
            self,
            Which::LocalDescription
                | Which::CurrentLocalDescription
                | Which::PendingLocalDescription
        )
    }
}

/// One of the six descriptions, as `{which, pc, json | nil}`. Local ones carry their
/// candidates unless `include_candidates` is false (see `local_description_json`).
#[rustler::nif]
fn pc_description(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    which: Term<'_>,
    include_candidates: bool,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let which: Which = which.decode().map_err(|_| Error::InvalidArgument("which"))?;
        h.run(env.pid(), which.error_tag(), move |pc| async move {
            let desc = match which {
                Which::LocalDescription => pc.local_description().await,
                Which::CurrentLocalDescription => pc.current_local_description().await,
                Which::PendingLocalDescription => pc.pending_local_description().await,
                Which::RemoteDescription => pc.remote_description().await,
                Which::CurrentRemoteDescription => pc.current_remote_description().await,
                Which::PendingRemoteDescription => pc.pending_remote_description().await,
            };
            let json = desc.as_ref().map(|d| match (which.is_local(), include_candidates) {
                (false, _) => description_json(d),
                (true, true) => local_description_json(d),
                (true, false) => applied_description_json(d),
            });
            Ok(reply(move |env, pc| (which, pc, json).encode(env)))
        })
    })
}

/// The W3C signaling state, derived from the pending descriptions.
async fn signaling_state(pc: &Arc<dyn webrtc::peer_connection::PeerConnection>) -> SignalingState {
    if let Some(d) = pc.pending_local_description().await {
        return match d.sdp_type {
            RTCSdpType::Pranswer => SignalingState::HaveLocalPranswer,
            _ => SignalingState::HaveLocalOffer,
        };
    }
    if let Some(d) = pc.pending_remote_description().await {
        return match d.sdp_type {
            RTCSdpType::Pranswer => SignalingState::HaveRemotePranswer,
            _ => SignalingState::HaveRemoteOffer,
        };
    }
    SignalingState::Stable
}

/// Which state `pc_state` answers with (the atoms are the function names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
#[allow(clippy::enum_variant_names)]
enum StateKind {
    ConnectionState,
    IceConnectionState,
    IceGatheringState,
    SignalingState,
}

#[rustler::nif]
fn pc_state(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>, which: Term<'_>) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let which: StateKind = which.decode().map_err(|_| Error::InvalidArgument("which"))?;
        let error_tag = match which {
            StateKind::ConnectionState => atoms::connection_state_error(),
            StateKind::IceConnectionState => atoms::ice_connection_state_error(),
            StateKind::IceGatheringState => atoms::ice_gathering_state_error(),
            StateKind::SignalingState => atoms::signaling_state_error(),
        };
        let events = Arc::clone(&h.events);
        h.run(env.pid(), error_tag, move |pc| async move {
            let state = match which {
                StateKind::ConnectionState => AnyState::Connection(lock(&events.states).connection),
                StateKind::IceConnectionState => AnyState::Ice(lock(&events.states).ice_connection),
                StateKind::IceGatheringState => {
                    AnyState::Gathering(lock(&events.states).ice_gathering)
                }
                StateKind::SignalingState => AnyState::Signaling(signaling_state(&pc).await),
            };
            Ok(reply(move |env, pc| (which, pc, state).encode(env)))
        })
    })
}

/// Whichever state was asked for, encoded as its atom.
#[derive(Clone, Copy, NifUntaggedEnum)]
enum AnyState {
    Connection(ConnectionState),
    Ice(IceConnectionState),
    Gathering(GatheringState),
    Signaling(SignalingState),
}

#[rustler::nif]
fn pc_get_stats(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>, as_map: bool) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        h.run(env.pid(), atoms::stats_error(), move |pc| async move {
            let value = stats::report(&pc).await;
            Ok(if as_map {
                reply(move |env, pc| {
                    (atoms::stats(), pc, json::value_to_term(env, &value)).encode(env)
                })
            } else {
                let text = value.to_string();
                reply(move |env, pc| (atoms::stats(), pc, text.as_str()).encode(env))
            })
        })
    })
}

#[rustler::nif]
fn pc_restart_ice(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        h.run(env.pid(), atoms::restart_ice_error(), |pc| async move {
            pc.restart_ice().await?;
            Ok(done(atoms::restart_ice()))
        })
    })
}

#[rustler::nif]
fn pc_get_configuration(env: Env<'_>, specter: Arg<Specter>, pc: Arg<PcId>) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        h.run(env.pid(), atoms::configuration_error(), |pc| async move {
            let c = config::Configuration::from(&pc.get_configuration().await);
            Ok(reply(move |env, pc| (atoms::configuration(), pc, c).encode(env)))
        })
    })
}

/// `ice_servers` (normalized by Elixir, or nil to keep) and `ice_transport_policy` (`:all`,
/// `:relay`, or nil to keep): the fields W3C lets an application change after construction.
#[rustler::nif]
fn pc_set_configuration(
    env: Env<'_>,
    specter: Arg<Specter>,
    pc: Arg<PcId>,
    ice_servers: Term<'_>,
    policy: Term<'_>,
) -> Answer<Atom> {
    answer(|| {
        let h = lookup(specter, pc)?;
        let servers: Option<Vec<IceServer>> =
            ice_servers.decode().map_err(|_| Error::InvalidOption("ice_servers".into()))?;
        let policy: Option<config::TransportPolicy> =
            policy.decode().map_err(|_| Error::InvalidOption("ice_transport_policy".into()))?;
        h.run(env.pid(), atoms::set_configuration_error(), move |pc| async move {
            let next = config::changed(&pc.get_configuration().await, servers, policy);
            pc.set_configuration(next).await?;
            Ok(done(atoms::set_configuration()))
        })
    })
}
