//! One `Specter.init/1`: a registry per kind of object it hosts, what happens to them when a
//! connection closes or an owner exits, and the NIF resource that holds it.
//!
//! Ownership: the resource owns an `Arc<Instance>`; nothing the runtime runs holds a strong
//! reference back to it (tasks keep a `Weak`), so when the last Elixir term referring to the
//! resource is garbage collected the instance drops and closes every connection it hosts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rustler::{Env, LocalPid, Monitor, Resource, ResourceArc, Term};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, Registry as Interceptors,
};

use crate::config::Config;
use crate::data_channel::handle::DcHandle;
use crate::error::{Error, NifResult};
use crate::media_file::player::Player;
use crate::media_file::recorder::Recorder;
use crate::nif::{Arg, FromArg};
use crate::peer_connection::shared::PcHandle;
use crate::track_local::TrackEntry;
use crate::track_remote::handle::RemoteTrackHandle;
use specter_core::registry::{lock, Registry};
use specter_core::runtime::NetPolicy;

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
    pub fn build(&self) -> NifResult<(MediaEngine, Interceptors)> {
        let mut media_engine = self.media_engine.clone();
        let registry = register_default_interceptors(Interceptors::new(), &mut media_engine)
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
    pub media_engines: Registry<Arc<Mutex<MediaEngine>>>,
    pub registries: Registry<RegistrySpec>,
    pub apis: Registry<Arc<Api>>,
    pub pcs: Registry<Arc<PcHandle>>,
    pub data_channels: Registry<Arc<DcHandle>>,
    pub tracks: Registry<Arc<TrackEntry>>,
    pub remote_tracks: Registry<Arc<RemoteTrackHandle>>,
    pub recorders: Registry<Arc<Recorder>>,
    pub players: Registry<Arc<Player>>,
    /// Next port to try when a UDP port range is configured.
    pub next_port: Mutex<u16>,
}

impl Instance {
    pub fn new(config: Config, handle: tokio::runtime::Handle) -> Self {
        let start_port = config.udp_port_range.map(|(lo, _)| lo).unwrap_or(0);
        Self {
            policy: config.net_policy(),
            config,
            handle,
            media_engines: Registry::default(),
            registries: Registry::default(),
            apis: Registry::default(),
            pcs: Registry::remembering(),
            data_channels: Registry::remembering(),
            tracks: Registry::default(),
            remote_tracks: Registry::remembering(),
            recorders: Registry::default(),
            players: Registry::default(),
            next_port: Mutex::new(start_port),
        }
    }

    /// Removes a connection from the instance, remembering that it was closed, with its data
    /// channels, its remote tracks and the bindings of local tracks to it.
    pub fn forget_pc(&self, id: &str) -> Option<Arc<PcHandle>> {
        let removed = self.pcs.remove(id);
        if removed.is_some() {
            for dc in self.data_channels.remove_where(|dc| dc.pc_id == id) {
                dc.shut_down();
            }
            for track in self.tracks.values() {
                lock(&track.bindings).retain(|b| {
                    let keep = b.pc_id != id;
                    if !keep {
                        b.stopped.store(true, Ordering::Release);
                    }
                    keep
                });
            }
            // Remote tracks of the connection end (their readers finish when it closes);
            // forget them now so their ids answer `:closed`.
            self.remote_tracks.remove_where(|t| t.pc_id == id);
        }
        removed
    }

    /// A local track of this instance; `:invalid_track` for anything else.
    pub fn local_track(&self, track: Term<'_>) -> NifResult<Arc<TrackEntry>> {
        let id: String = track.decode().map_err(|_| Error::InvalidTrack)?;
        self.tracks.get(&id).map_err(|_| Error::InvalidTrack)
    }

    /// The receive mode of a new data channel, from `data_channel_active`.
    pub fn default_active(&self) -> crate::flow::Active {
        crate::flow::Active::from_setting(&self.config.data_channel_active)
    }

    /// Closes every connection owned by `pid` (its owner exited), stops its players and
    /// finishes its recordings.
    pub fn owner_down(&self, pid: LocalPid) {
        for pc in self.pcs.values() {
            if pc.events.owner.pid() == pid {
                self.forget_pc(&pc.id);
                pc.close(None);
            }
        }
        for player in self.players.values() {
            if player.caller == pid {
                player.stop.store(true, Ordering::Release);
            }
        }
        let recorders = self.recorders.remove_where(|r| r.caller == pid);
        if !recorders.is_empty() {
            for track in self.remote_tracks.values() {
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
        for pc in self.pcs.drain() {
            pc.close(None);
        }
        for dc in self.data_channels.drain() {
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

/// The `%Specter{}` argument of a NIF.
pub struct Specter(pub ResourceArc<SpecterResource>);

impl FromArg for Specter {
    const NAME: &'static str = "specter";
    fn from_term(term: Term<'_>) -> Option<Self> {
        term.decode().ok().map(Specter)
    }
}

impl Arg<Specter> {
    /// The instance.
    pub fn instance(self) -> NifResult<Arc<Instance>> {
        self.get().map(|s| Arc::clone(&s.0.inner))
    }
}
