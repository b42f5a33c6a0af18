//! Each connection's worker task: it builds the connection, then runs its operations in the
//! order they were called (W3C's operations chain) until the connection is closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use rustler::{Encoder, LocalPid};
use tokio::sync::mpsc;
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder};

use super::handler::Handler;
use super::shared::{Msg, PcEvents};
use crate::atoms;
use crate::error::{Error, NifResult};
use crate::instance::{Api, Instance};
use crate::mailbox;
use specter_core::registry::lock;
use specter_core::runtime::ConnRuntime;

/// Everything the worker needs to build the connection.
pub struct BuildSpec {
    pub api: Arc<Api>,
    pub instance: Weak<Instance>,
    pub events: Arc<PcEvents>,
    pub runtime: ConnRuntime,
}

async fn build(spec: &BuildSpec) -> NifResult<Arc<dyn PeerConnection>> {
    let inst = spec.instance.upgrade().ok_or(Error::Closed)?;
    let config = inst.config.clone();
    let attempts = if config.udp_port_range.is_some() { 8 } else { 1 };
    let mut last_err = Error::Webrtc("no attempt".into());
    for _ in 0..attempts {
        let (media_engine, registry) = spec.api.build()?;
        let addrs = bind_addrs(&inst)?;
        let first_ip = addrs.first().map(SocketAddr::ip);
        let handler = Arc::new(Handler {
            events: Arc::clone(&spec.events),
            instance: Weak::clone(&spec.instance),
        });
        let res = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new().with_ice_servers(config.rtc_ice_servers()).build(),
            )
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(config.setting_engine())
            .with_runtime(Arc::new(spec.runtime.clone()))
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .with_data_channel_send_buffer_limit(config.data_channel_send_buffer_limit)
            .build()
            .await;
        match res {
            Ok(pc) => return Ok(Arc::new(pc)),
            Err(e) => last_err = explain_bind_failure(Error::from_webrtc(&e), first_ip),
        }
    }
    Err(last_err)
}

/// webrtc-rs logs why it could not bind a connection's sockets and answers only "no
/// udp_sockets or tcp_listeners available". Bind one ourselves to report the cause (e.g.
/// "Too many open files" when the VM has reached `ulimit -n`).
fn explain_bind_failure(err: Error, ip: Option<IpAddr>) -> Error {
    match (&err, ip) {
        (Error::Webrtc(msg), Some(ip)) if msg.contains("no udp_sockets") => {
            match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
                Ok(_) => err,
                Err(io) => Error::Webrtc(format!("{msg}: binding a UDP socket on {ip}: {io}")),
            }
        }
        _ => err,
    }
}

/// Addresses to bind: the configured IPs, each with a port from the configured range (probed
/// free) or port 0.
fn bind_addrs(inst: &Instance) -> NifResult<Vec<SocketAddr>> {
    let ips = inst.config.bind_ips();
    let Some((lo, hi)) = inst.config.udp_port_range else {
        return Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect());
    };
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let span = u32::from(hi - lo) + 1;
    let mut out = Vec::new();
    for ip in ips {
        let mut next = lock(&inst.next_port);
        let port = free_port(ip, (lo, hi), span, &mut next)?;
        out.push(SocketAddr::new(ip, port));
    }
    Ok(out)
}

/// The first port of `lo..=hi` from `*next` on that `ip` can bind, probed.
fn free_port(ip: IpAddr, (lo, hi): (u16, u16), span: u32, next: &mut u16) -> NifResult<u16> {
    for _ in 0..span {
        let port = if *next < lo || *next > hi { lo } else { *next };
        *next = if port >= hi { lo } else { port + 1 };
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(_) => return Ok(port),
            // Taken (or privileged): try the next port.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                ) => {}
            // No port would do (e.g. out of file descriptors): say why.
            Err(e) => return Err(Error::Webrtc(format!("binding a UDP socket on {ip}: {e}"))),
        }
    }
    Err(Error::Webrtc("no free UDP port in udp_port_range".into()))
}

pub async fn worker(
    spec: BuildSpec,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    closed: Arc<AtomicBool>,
    creator: LocalPid,
) {
    let id = spec.events.id.clone();
    let pc = match build(&spec).await {
        Ok(pc) => pc,
        Err(err) => {
            closed.store(true, Ordering::Release);
            if let Some(inst) = spec.instance.upgrade() {
                inst.forget_pc(&id);
            }
            let rid = id.clone();
            mailbox::send(creator, move |env| {
                (atoms::peer_connection_error(), rid.as_str(), err).encode(env)
            });
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Op(op) => (op.fail)(Error::Closed),
                    Msg::Close { reply_to } => notify_closed(&spec.events, reply_to),
                }
            }
            return;
        }
    };
    let _ = spec.events.pc.set(Arc::downgrade(&pc));
    let rid = id.clone();
    mailbox::send(creator, move |env| (atoms::peer_connection_ready(), rid.as_str()).encode(env));
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Op(op) => {
                if closed.load(Ordering::Acquire) {
                    (op.fail)(Error::Closed);
                } else {
                    (op.run)(Arc::clone(&pc)).await;
                }
            }
            Msg::Close { reply_to } => {
                let first = !closed.swap(true, Ordering::AcqRel);
                if first {
                    let _ = pc.close().await;
                    spec.events.mark_closed();
                }
                notify_closed(&spec.events, reply_to);
            }
        }
    }
    // Every handle is gone (instance dropped): make sure the connection is closed.
    if !closed.swap(true, Ordering::AcqRel) {
        let _ = pc.close().await;
    }
}

fn notify_closed(events: &PcEvents, reply_to: Option<LocalPid>) {
    let owner = events.owner.pid();
    let mut targets = vec![owner];
    if let Some(pid) = reply_to {
        if pid != owner {
            targets.push(pid);
        }
    }
    for pid in targets {
        let id = events.id.clone();
        mailbox::send(pid, move |env| (atoms::peer_connection_closed(), id.as_str()).encode(env));
    }
}
