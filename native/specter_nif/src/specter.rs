//! `Specter`: one NIF resource per `Specter.init/1`, hosting media engines, registries, APIs,
//! peer connections, data channels and tracks keyed by UUID.
//!
//! Ownership: the resource owns an `Arc<Instance>`; nothing the runtime runs holds a strong
//! reference back to it (tasks keep a `Weak`), so when the last Elixir term referring to the
//! resource is garbage collected the instance drops and closes every connection it hosts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rustler::{Encoder, Env, LocalPid, Monitor, Resource, ResourceArc, Term};
use webrtc::peer_connection::{register_default_interceptors, MediaEngine, Registry};

use crate::atoms;
use crate::config::Config;
use crate::data_channel::DcHandle;
use crate::error::{encode_result, Error, NifResult};
use crate::media_file::Recorder;
use crate::peer_connection::PcHandle;
use crate::track_local::TrackEntry;
use crate::track_remote::RemoteTrackHandle;
use specter_core::runtime::{self, NetPolicy};

/// Locks a mutex, recovering the data if a panic elsewhere poisoned it: every structure
/// guarded here stays consistent between statements, so the data is still valid.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many closed ids are remembered (per kind) to answer `:closed` rather than `:not_found`.
const TOMBSTONES: usize = 65_536;

/// Recently closed ids, bounded.
#[derive(Default)]
pub struct Tombstones {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Tombstones {
    pub fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > TOMBSTONES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
}

/// The interceptors an API installs on each connection it builds. webrtc-rs registries are
/// consumed by a connection, so an API keeps this recipe and builds a registry per connection.
#[derive(Debug, Clone)]
pub struct RegistrySpec {
    /// The media engine the registry was created for; `new_api/3` requires the same one.
    pub media_engine: String,
}

/// What `new_api/3` produced: a template every connection of the API is built from.
pub struct Api {
    pub media_engine: MediaEngine,
}

impl Api {
    /// A fresh media engine and interceptor registry for one connection.
    pub fn build(&self) -> NifResult<(MediaEngine, Registry)> {
        let mut media_engine = self.media_engine.clone();
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)
            .map_err(|e| Error::from_webrtc(&e))?
            .with(
                rtc::interceptor::Slot::Custom(specter_core::rtcp::SLOT),
                specter_core::rtcp::RtcpTap::default(),
            );
        Ok((media_engine, registry))
    }
}

pub struct Instance {
    pub config: Config,
    pub policy: Arc<NetPolicy>,
    pub handle: tokio::runtime::Handle,
    pub media_engines: Mutex<HashMap<String, MediaEngine>>,
    pub registries: Mutex<HashMap<String, RegistrySpec>>,
    pub apis: Mutex<HashMap<String, Arc<Api>>>,
    pub pcs: Mutex<HashMap<String, Arc<PcHandle>>>,
    pub closed_pcs: Mutex<Tombstones>,
    pub data_channels: Mutex<HashMap<String, Arc<DcHandle>>>,
    pub closed_dcs: Mutex<Tombstones>,
    pub tracks: Mutex<HashMap<String, Arc<TrackEntry>>>,
    pub remote_tracks: Mutex<HashMap<String, Arc<RemoteTrackHandle>>>,
    pub closed_remote_tracks: Mutex<Tombstones>,
    pub recorders: Mutex<HashMap<String, Arc<Recorder>>>,
    /// Running file players.
    pub players: Mutex<HashMap<String, crate::media_file::Player>>,
    /// Next port to try when a UDP port range is configured.
    pub next_port: Mutex<u16>,
}

impl Instance {
    /// Looks up a connection, telling a closed one from an unknown one.
    pub fn pc(&self, id: &str) -> NifResult<Arc<PcHandle>> {
        let key = normalize_id(id).ok_or(Error::NotFound)?;
        if let Some(pc) = lock(&self.pcs).get(&key) {
            return Ok(Arc::clone(pc));
        }
        if lock(&self.closed_pcs).contains(&key) {
            Err(Error::Closed)
        } else {
            Err(Error::NotFound)
        }
    }

    /// Removes a connection from the instance, remembering that it was closed.
    pub fn forget_pc(&self, id: &str) -> Option<Arc<PcHandle>> {
        let removed = lock(&self.pcs).remove(id);
        lock(&self.closed_pcs).insert(id);
        if removed.is_some() {
            let mut closed = lock(&self.closed_dcs);
            lock(&self.data_channels).retain(|dc_id, dc| {
                let keep = dc.pc_id != id;
                if !keep {
                    closed.insert(dc_id);
                    dc.shut_down();
                }
                keep
            });
            drop(closed);
            for track in lock(&self.tracks).values() {
                lock(&track.bindings).retain(|b| {
                    let keep = b.pc_id != id;
                    if !keep {
                        b.stopped.store(true, std::sync::atomic::Ordering::Release);
                    }
                    keep
                });
            }
            // Remote tracks of the connection end (their readers finish when it closes);
            // forget them now so their ids answer `:closed`.
            let mut closed = lock(&self.closed_remote_tracks);
            lock(&self.remote_tracks).retain(|track_id, t| {
                let keep = t.pc_id != id;
                if !keep {
                    closed.insert(track_id);
                }
                keep
            });
        }
        removed
    }

    /// The receive mode of a new data channel, from `data_channel_active`.
    pub fn default_active(&self) -> crate::flow::Active {
        crate::flow::Active::from_setting(&self.config.data_channel_active)
    }

    /// Closes every connection owned by `pid` (its owner exited).
    pub fn owner_down(&self, pid: LocalPid) {
        let owned: Vec<Arc<PcHandle>> = lock(&self.pcs)
            .values()
            .filter(|pc| pc.events.owner() == pid)
            .cloned()
            .collect();
        for pc in owned {
            self.forget_pc(&pc.id);
            pc.close(None);
        }
        for player in lock(&self.players).values() {
            if player.caller == pid {
                player
                    .stop
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let recorders: Vec<Arc<Recorder>> = {
            let mut all = lock(&self.recorders);
            let mine: Vec<String> = all
                .iter()
                .filter(|(_, r)| r.caller == pid)
                .map(|(id, _)| id.clone())
                .collect();
            mine.iter().filter_map(|id| all.remove(id)).collect()
        };
        if !recorders.is_empty() {
            for track in lock(&self.remote_tracks).values() {
                lock(&track.recording)
                    .recorders
                    .retain(|r| !recorders.iter().any(|x| Arc::ptr_eq(r, x)));
            }
            for r in recorders {
                r.finish();
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let pcs: Vec<Arc<PcHandle>> = lock(&self.pcs).drain().map(|(_, pc)| pc).collect();
        for pc in pcs {
            pc.close(None);
        }
        for (_, dc) in lock(&self.data_channels).drain() {
            dc.shut_down();
        }
    }
}

/// The resource behind `%Specter{native: ref}`.
pub struct SpecterResource {
    pub inner: Arc<Instance>,
}

#[rustler::resource_impl]
impl Resource for SpecterResource {
    fn down<'a>(&'a self, _env: Env<'a>, pid: LocalPid, _monitor: Monitor) {
        self.inner.owner_down(pid);
    }
}

/// Canonical (lowercase, hyphenated) form of a UUID string, or `None` if it is not one.
pub fn normalize_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Decodes the `%Specter{}` resource argument.
pub fn instance(term: Term<'_>) -> NifResult<ResourceArc<SpecterResource>> {
    term.decode::<ResourceArc<SpecterResource>>()
        .map_err(|_| Error::InvalidArgument("specter"))
}

/// Decodes an integer that must fit `T` (rustler's own narrow decoders truncate).
pub fn int_arg<T: TryFrom<i64>>(term: Term<'_>) -> Option<T> {
    term.decode::<i64>().ok().and_then(|n| T::try_from(n).ok())
}

/// Decodes a string argument (binary) or reports it by name.
pub fn string_arg(term: Term<'_>, name: &'static str) -> NifResult<String> {
    term.decode::<String>()
        .map_err(|_| Error::InvalidArgument(name))
}

#[rustler::nif(schedule = "DirtyIo")]
fn init<'a>(env: Env<'a>, config: Term<'a>) -> Term<'a> {
    let res = (|| {
        let config: Config = config
            .decode()
            .map_err(|_| Error::InvalidArgument("config"))?;
        let rt = runtime::global().map_err(Error::RuntimeUnavailable)?;
        let start_port = config.udp_port_range.map(|(lo, _)| lo).unwrap_or(0);
        let instance = Instance {
            policy: config.net_policy(),
            config,
            handle: rt.handle().clone(),
            media_engines: Mutex::default(),
            registries: Mutex::default(),
            apis: Mutex::default(),
            pcs: Mutex::default(),
            closed_pcs: Mutex::default(),
            data_channels: Mutex::default(),
            closed_dcs: Mutex::default(),
            tracks: Mutex::default(),
            remote_tracks: Mutex::default(),
            closed_remote_tracks: Mutex::default(),
            recorders: Mutex::default(),
            players: Mutex::default(),
            next_port: Mutex::new(start_port),
        };
        Ok((
            atoms::ok(),
            ResourceArc::new(SpecterResource {
                inner: Arc::new(instance),
            }),
        ))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn config<'a>(env: Env<'a>, specter: Term<'a>) -> Term<'a> {
    let res = instance(specter).map(|s| (atoms::ok(), s.inner.config.clone()));
    encode_result(env, res)
}

#[rustler::nif]
fn new_media_engine<'a>(env: Env<'a>, specter: Term<'a>, default_codecs: bool) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let mut media_engine = MediaEngine::default();
        if default_codecs {
            media_engine
                .register_default_codecs()
                .map_err(|e| Error::from_webrtc(&e))?;
        }
        let id = new_id();
        lock(&s.inner.media_engines).insert(id.clone(), media_engine);
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

/// Registers a codec (an `RTCRtpCodecCapability` and its payload type) with a media engine
/// that no API has taken yet.
#[rustler::nif]
fn media_engine_register_codec<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    media_engine: Term<'a>,
    codec: Term<'a>,
    payload_type: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let me = string_arg(media_engine, "media_engine")?;
        let me = normalize_id(&me).ok_or(Error::NotFound)?;
        let (codec, kind) = crate::track_local_static_sample::decode_codec(codec)?;
        let payload_type = int_arg::<u8>(payload_type)
            .filter(|pt| (1..=127).contains(pt))
            .ok_or(Error::InvalidArgument("payload_type"))?;
        let mut engines = lock(&s.inner.media_engines);
        let engine = engines.get_mut(&me).ok_or(Error::NotFound)?;
        engine
            .register_codec(
                rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters {
                    rtp_codec: codec,
                    payload_type,
                },
                kind,
            )
            .map_err(|e| Error::from_webrtc(&e))?;
        Ok(atoms::ok())
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn new_registry<'a>(env: Env<'a>, specter: Term<'a>, media_engine: Term<'a>) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let me = string_arg(media_engine, "media_engine")?;
        let me = normalize_id(&me).ok_or(Error::NotFound)?;
        if !lock(&s.inner.media_engines).contains_key(&me) {
            return Err(Error::NotFound);
        }
        let id = new_id();
        lock(&s.inner.registries).insert(id.clone(), RegistrySpec { media_engine: me });
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

#[rustler::nif]
fn new_api<'a>(
    env: Env<'a>,
    specter: Term<'a>,
    media_engine: Term<'a>,
    registry: Term<'a>,
) -> Term<'a> {
    let res = (|| {
        let s = instance(specter)?;
        let me = string_arg(media_engine, "media_engine")?;
        let reg = string_arg(registry, "registry")?;
        let me = normalize_id(&me).ok_or(Error::NotFound)?;
        let reg = normalize_id(&reg).ok_or(Error::NotFound)?;
        // Check both before consuming either.
        let mut engines = lock(&s.inner.media_engines);
        let mut registries = lock(&s.inner.registries);
        match registries.get(&reg) {
            Some(spec) if engines.contains_key(&me) => {
                if spec.media_engine != me {
                    return Err(Error::InvalidArgument("registry"));
                }
            }
            _ => return Err(Error::NotFound),
        }
        let media_engine = engines.remove(&me).ok_or(Error::NotFound)?;
        registries.remove(&reg);
        drop(registries);
        drop(engines);
        let id = new_id();
        lock(&s.inner.apis).insert(id.clone(), Arc::new(Api { media_engine }));
        Ok((atoms::ok(), id))
    })();
    encode_result(env, res)
}

fn exists(specter: Term<'_>, id: Term<'_>, pick: fn(&Instance, &str) -> bool) -> bool {
    let (Ok(s), Ok(id)) = (instance(specter), id.decode::<String>()) else {
        return false;
    };
    match normalize_id(&id) {
        Some(key) => pick(&s.inner, &key),
        None => false,
    }
}

#[rustler::nif]
fn media_engine_exists(specter: Term<'_>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| lock(&i.media_engines).contains_key(k))
}

#[rustler::nif]
fn registry_exists(specter: Term<'_>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| lock(&i.registries).contains_key(k))
}

#[rustler::nif]
fn api_exists(specter: Term<'_>, id: Term<'_>) -> bool {
    exists(specter, id, |i, k| lock(&i.apis).contains_key(k))
}

/// Counts of what an instance hosts (for leak checks and IEx inspection).
#[rustler::nif]
fn instance_info<'a>(env: Env<'a>, specter: Term<'a>) -> Term<'a> {
    let res = instance(specter).map(|s| {
        let i = &s.inner;
        let pairs = [
            ("media_engines", lock(&i.media_engines).len()),
            ("registries", lock(&i.registries).len()),
            ("apis", lock(&i.apis).len()),
            ("peer_connections", lock(&i.pcs).len()),
            ("data_channels", lock(&i.data_channels).len()),
            ("tracks", lock(&i.tracks).len()),
            ("remote_tracks", lock(&i.remote_tracks).len()),
            ("recorders", lock(&i.recorders).len()),
            ("players", lock(&i.players).len()),
        ];
        let mut map = rustler::types::map::map_new(env);
        for (k, v) in pairs {
            if let Ok(atom) = rustler::Atom::from_str(env, k) {
                map = map.map_put(atom.encode(env), v.encode(env)).unwrap_or(map);
            }
        }
        (atoms::ok(), map)
    });
    encode_result(env, res)
}

/// Process-wide runtime figures: worker threads, alive tasks, socket buffer in effect.
#[rustler::nif]
fn runtime_info<'a>(env: Env<'a>) -> Term<'a> {
    let res = runtime::global()
        .map_err(Error::RuntimeUnavailable)
        .map(|rt| {
            let m = rt.metrics();
            let pairs: [(&str, u64); 7] = [
                ("workers", m.num_workers() as u64),
                ("alive_tasks", m.num_alive_tasks() as u64),
                (
                    "effective_socket_buffer",
                    runtime::LAST_EFFECTIVE_RCVBUF.load(std::sync::atomic::Ordering::Relaxed)
                        as u64,
                ),
                (
                    "refused_sends",
                    runtime::REFUSED_SENDS.load(std::sync::atomic::Ordering::Relaxed),
                ),
                (
                    "refused_resolutions",
                    runtime::REFUSED_RESOLUTIONS.load(std::sync::atomic::Ordering::Relaxed),
                ),
                (
                    "nudges",
                    runtime::NUDGES.load(std::sync::atomic::Ordering::Relaxed),
                ),
                (
                    "replayed_checks",
                    runtime::REPLAYED_CHECKS.load(std::sync::atomic::Ordering::Relaxed),
                ),
            ];
            let mut map = rustler::types::map::map_new(env);
            for (k, v) in pairs {
                if let Ok(atom) = rustler::Atom::from_str(env, k) {
                    map = map.map_put(atom.encode(env), v.encode(env)).unwrap_or(map);
                }
            }
            (atoms::ok(), map)
        });
    encode_result(env, res)
}
