//! The tokio runtime shared by every Specter instance, and the `webrtc::runtime::Runtime`
//! each peer connection is built with.
//!
//! This file has no rustler dependency: `bench/native_baseline` depends on this crate, so the
//! pure-Rust baseline runs on exactly the socket settings and driver wake-ups the NIF uses.
//!
//! What the per-connection runtime adds to webrtc-rs 0.21.1's own tokio runtime:
//!
//! * **Socket buffers.** The library binds its UDP sockets with the kernel default buffers
//!   (208 KiB on Linux), which drop bursts that SCTP then only recovers after a 1 s RTO. Every
//!   socket gets `SO_RCVBUF`/`SO_SNDBUF` of `socket_buffer` bytes (4 MiB by default).
//! * **Driver wake-up.** The connection driver produces some handshake packets (DTLS
//!   ClientHello, SCTP INIT, DCEP OPEN) in its read phase, after its write phase already ran,
//!   and then sleeps until the next ICE tick (~200 ms). A successful receive on one of the
//!   connection's sockets sets a per-connection flag; the next `sleep` requested by a task the
//!   library spawned for this connection returns at once, so the driver makes one more pass and
//!   flushes what it produced. Sleeps from any other task are untouched.
//! * **Loopback confinement.** With `loopback_only`, datagrams to any non-loopback address are
//!   refused at the socket and host names are never resolved, so nothing but 127.0.0.1 / ::1
//!   traffic can leave the process even if a STUN or TURN URL is configured.
//! * **Early checks.** STUN Binding requests that arrive before the connection has applied
//!   its remote description are kept and handed to the ICE agent again once it has (see
//!   `Wake::remote_description_applied`): webrtc-rs 0.21.1 drops them unanswered.
//! * **Idle nudge.** `nudge()` hands the driver one synthetic STUN Binding Indication, which it
//!   answers by resuming SCTP streams parked by the data-channel read backlog limit (see
//!   `UdpSocket::poll_recv`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// Default `SO_RCVBUF` / `SO_SNDBUF` for every UDP socket: 4 MiB.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// Effective receive buffer size of the most recently configured socket (bytes, as the kernel
/// reports it), for diagnostics.
pub static LAST_EFFECTIVE_RCVBUF: AtomicUsize = AtomicUsize::new(0);
/// Datagrams refused because loopback confinement was on and the destination was not loopback.
pub static REFUSED_SENDS: AtomicU64 = AtomicU64::new(0);
/// Host names and addresses whose resolution loopback confinement refused.
pub static REFUSED_RESOLUTIONS: AtomicU64 = AtomicU64::new(0);
/// Synthetic STUN indications injected by `nudge`.
pub static NUDGES: AtomicU64 = AtomicU64::new(0);
/// STUN Binding requests that arrived before the remote description and were handed to the
/// ICE agent again once it was applied (see [`Wake::remote_description_applied`]).
pub static REPLAYED_CHECKS: AtomicU64 = AtomicU64::new(0);

/// Early Binding requests kept per connection, at most.
const MAX_HELD_CHECKS: usize = 32;
/// Datagrams the connections' sockets sent and received (GSO/GRO segments counted apart).
pub static DATAGRAMS_SENT: AtomicU64 = AtomicU64::new(0);
pub static DATAGRAMS_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Sleeps of library tasks (the connection drivers) of at least 10 ms, 100 ms and 1 s that
/// ran to their end instead of being cut short by a datagram or an event, and their summed
/// length in ms. A driver waiting out a protocol timer in the middle of a transfer shows
/// here: SCTP's delayed acknowledgement (200 ms) or retransmission timeout (1 s at least).
pub static SLEEPS_FIRED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
pub static SLEEPS_FIRED_MS: AtomicU64 = AtomicU64::new(0);

/// Number of datagrams in `len` bytes of `stride`-byte segments.
fn segments(len: usize, stride: usize) -> u64 {
    if stride == 0 {
        1
    } else {
        len.div_ceil(stride) as u64
    }
}

/// The process-wide tokio runtime, built on first use.
///
/// Worker count: `SPECTER_RUNTIME_THREADS` if set, else the number of available cores.
pub fn global() -> Result<&'static tokio::runtime::Runtime, String> {
    RUNTIME
        .get_or_init(|| {
            let threads = std::env::var("SPECTER_RUNTIME_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
                });
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("specter-rt")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// Network policy shared by every connection of one Specter instance.
#[derive(Debug, Clone)]
pub struct NetPolicy {
    /// `SO_RCVBUF` / `SO_SNDBUF` requested for every UDP socket, in bytes (0 = kernel default).
    pub socket_buffer: usize,
    /// Refuse datagrams to, and name resolution of, anything but loopback.
    pub loopback_only: bool,
    /// Let a receive cut the driver's next sleep short (see the module docs).
    pub driver_wakeup: bool,
    /// Hand STUN Binding requests that arrive before the remote description to ICE again
    /// once it is applied (see [`Wake::remote_description_applied`]).
    pub answer_early_checks: bool,
}

impl Default for NetPolicy {
    fn default() -> Self {
        Self {
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            loopback_only: false,
            driver_wakeup: true,
            answer_early_checks: true,
        }
    }
}

thread_local! {
    /// The wake state of the connection whose library task this thread is polling, or 0.
    static CURRENT_WAKE: Cell<usize> = const { Cell::new(0) };
}

/// A datagram handed to the driver as if a socket had received it.
#[derive(Debug)]
struct Injected {
    data: Vec<u8>,
    /// Source address to report.
    from: SocketAddr,
    /// Only this socket may deliver it (`None`: any of the connection's sockets).
    to: Option<SocketAddr>,
}

/// Per-connection wake-up state shared by its runtime and sockets.
#[derive(Debug, Default)]
pub struct Wake {
    /// Set by a successful receive; consumed by the next library sleep.
    kicked: AtomicBool,
    /// Synthetic datagrams waiting to be handed to the driver.
    injected: Mutex<VecDeque<Injected>>,
    /// The remote description has been applied: the ICE agent knows the remote credentials.
    remote_ready: AtomicBool,
    /// STUN Binding requests received before that (see `remote_description_applied`).
    held: Mutex<Vec<Injected>>,
    /// Waker of a socket receive currently pending, so an injection is noticed at once.
    recv_waker: Mutex<Option<std::task::Waker>>,
}

impl Wake {
    fn id(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// Queue one synthetic STUN Binding Indication for the driver to read, and wake it.
    ///
    /// The driver treats any inbound datagram as a reason to resume SCTP streams that the
    /// data-channel layer parked at its 256-message read backlog limit; at the end of a bulk
    /// transfer the next real datagram is a keepalive seconds away. An indication needs no
    /// answer and the ICE agent discards it after parsing.
    pub fn nudge(&self) {
        let mut msg = Vec::with_capacity(20);
        msg.extend_from_slice(&0x0011u16.to_be_bytes()); // Binding Indication
        msg.extend_from_slice(&0u16.to_be_bytes()); // no attributes
        msg.extend_from_slice(&0x2112_A442u32.to_be_bytes()); // magic cookie
        let tid = uuid::Uuid::new_v4();
        msg.extend_from_slice(&tid.as_bytes()[..12]);
        if let Ok(mut q) = self.injected.lock() {
            if q.len() < 4 {
                q.push_back(Injected {
                    data: msg,
                    from: SocketAddr::from(([0, 0, 0, 0], 0)),
                    to: None,
                });
                NUDGES.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.wake_receiver();
    }

    fn wake_receiver(&self) {
        let waker = self.recv_waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The connection applied a remote description: ICE can now authenticate and answer
    /// Binding requests, so the ones that came earlier are handed to it again, from their
    /// original source on their original socket.
    ///
    /// RFC 8445 §7.3 has an agent answer a check at once; a remote that checks as soon as it
    /// has sent its answer reaches us before the answer does. webrtc-rs 0.21.1's agent drops
    /// such a request without a response while the remote credentials are unset (`rtc-ice`
    /// `agent/mod.rs`, "remote_credentials.is_none"), and the remote only retransmits on its
    /// own timer (500 ms for many stacks), which delays setup by that much.
    pub fn remote_description_applied(&self) {
        if self.remote_ready.swap(true, Ordering::AcqRel) {
            return;
        }
        let held = self.held.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default();
        if held.is_empty() {
            return;
        }
        REPLAYED_CHECKS.fetch_add(held.len() as u64, Ordering::Relaxed);
        if let Ok(mut q) = self.injected.lock() {
            q.extend(held);
        }
        self.kicked.store(true, Ordering::Release);
        self.wake_receiver();
    }

    /// Keeps a copy of every STUN Binding request in `buf` (`len` bytes of datagrams `stride`
    /// apart) while the remote description is not applied.
    fn hold_early_checks(&self, buf: &[u8], meta: &RecvMeta, local: SocketAddr) {
        if self.remote_ready.load(Ordering::Acquire) {
            return;
        }
        let stride = if meta.stride == 0 { meta.len } else { meta.stride };
        let Some(data) = buf.get(..meta.len.min(buf.len())) else {
            return;
        };
        for datagram in data.chunks(stride.max(1)) {
            if !is_binding_request(datagram) {
                continue;
            }
            if let Ok(mut held) = self.held.lock() {
                if held.len() < MAX_HELD_CHECKS {
                    held.push(Injected {
                        data: datagram.to_vec(),
                        from: meta.addr,
                        to: Some(local),
                    });
                }
            }
        }
    }

    /// Takes the first injected datagram this socket may deliver.
    fn take_injected(&self, local: Option<SocketAddr>) -> Option<Injected> {
        let mut q = self.injected.lock().ok()?;
        let i = q.iter().position(|m| m.to.is_none() || m.to == local)?;
        q.remove(i)
    }
}

/// A STUN Binding request (RFC 8489: type 0x0001, the magic cookie, a whole header).
fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[0..2] == [0x00, 0x01]
        && datagram[4..8] == 0x2112_A442u32.to_be_bytes()
}

/// The `webrtc::runtime::Runtime` of one peer connection.
#[derive(Clone)]
pub struct ConnRuntime {
    handle: tokio::runtime::Handle,
    policy: Arc<NetPolicy>,
    wake: Arc<Wake>,
}

impl fmt::Debug for ConnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnRuntime").field("policy", &self.policy).finish()
    }
}

impl ConnRuntime {
    pub fn new(handle: tokio::runtime::Handle, policy: Arc<NetPolicy>) -> Self {
        Self { handle, policy, wake: Arc::new(Wake::default()) }
    }

    /// The connection's wake state (for `nudge`).
    pub fn wake(&self) -> Arc<Wake> {
        Arc::clone(&self.wake)
    }
}

/// A library task: records, for the duration of each poll, which connection it belongs to.
struct Marked {
    id: usize,
    future: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Future for Marked {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT_WAKE.with(|c| c.set(self.0));
            }
        }
        let this = self.get_mut();
        let _restore = Restore(CURRENT_WAKE.with(|c| c.replace(this.id)));
        this.future.as_mut().poll(cx)
    }
}

struct TokioHandle(tokio::task::JoinHandle<()>);

impl JoinHandle for TokioHandle {
    fn detach(&self) {}

    fn abort(&self) {
        self.0.abort();
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn confinement_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{what}: refused, Specter is confined to loopback"),
    )
}

/// Sets `SO_RCVBUF`/`SO_SNDBUF`; when the kernel caps the request below what was asked (its
/// `rmem_max`/`wmem_max`), retries with the privileged `*FORCE` variants, which succeed for
/// root and fail harmlessly otherwise.
fn size_buffers(sock: &std::net::UdpSocket, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(bytes);
    let _ = s.set_send_buffer_size(bytes);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        let want = libc_int(bytes);
        if s.recv_buffer_size().unwrap_or(0) < bytes {
            force(fd, SO_RCVBUFFORCE, want);
        }
        if s.send_buffer_size().unwrap_or(0) < bytes {
            force(fd, SO_SNDBUFFORCE, want);
        }
    }
    LAST_EFFECTIVE_RCVBUF.store(s.recv_buffer_size().unwrap_or(0), Ordering::Relaxed);
}

#[cfg(target_os = "linux")]
const SO_RCVBUFFORCE: i32 = 33;
#[cfg(target_os = "linux")]
const SO_SNDBUFFORCE: i32 = 32;

#[cfg(target_os = "linux")]
fn libc_int(bytes: usize) -> i32 {
    i32::try_from(bytes).unwrap_or(i32::MAX)
}

#[cfg(target_os = "linux")]
fn force(fd: i32, opt: i32, value: i32) {
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    // SAFETY: `fd` is a live socket owned by the caller for the duration of the call, and the
    // option value is a plain `int` passed with its exact length.
    unsafe {
        setsockopt(fd, SOL_SOCKET, opt, &value as *const i32, std::mem::size_of::<i32>() as u32);
    }
}

impl Runtime for ConnRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        let marked = Marked { id: self.wake.id(), future };
        Box::new(TokioHandle(self.handle.spawn(marked)))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        if self.policy.loopback_only && !is_loopback(&local.ip()) && !local.ip().is_unspecified() {
            return Err(confinement_error(&format!("binding {local}")));
        }
        size_buffers(&socket, self.policy.socket_buffer);
        let _guard = self.handle.enter();
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(UdpSocket {
            inner,
            local,
            wake: Arc::clone(&self.wake),
            loopback_only: self.policy.loopback_only,
            hold_early_checks: self.policy.answer_early_checks,
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let _guard = self.handle.enter();
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        if self.policy.loopback_only && !is_loopback(&remote_addr.ip()) {
            let err = confinement_error(&format!("connecting to {remote_addr}"));
            return Box::pin(async move { Err(err) });
        }
        TokioRuntime.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        let loopback_only = self.policy.loopback_only;
        Box::pin(async move {
            if let Ok(addr) = host.parse::<SocketAddr>() {
                if loopback_only && !is_loopback(&addr.ip()) {
                    REFUSED_RESOLUTIONS.fetch_add(1, Ordering::Relaxed);
                    return Err(confinement_error(&format!("resolving {host}")));
                }
                return Ok(vec![addr]);
            }
            if loopback_only {
                // Never send a DNS query; only the name that means loopback by definition.
                return match host.rsplit_once(':') {
                    Some(("localhost", port)) => {
                        let port: u16 = port
                            .parse()
                            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "port"))?;
                        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
                    }
                    _ => {
                        REFUSED_RESOLUTIONS.fetch_add(1, Ordering::Relaxed);
                        Err(confinement_error(&format!("resolving {host}")))
                    }
                };
            }
            tokio::net::lookup_host(host).await.map(|it| it.collect())
        })
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let library = CURRENT_WAKE.with(|c| c.get()) == self.wake.id();
        if self.policy.driver_wakeup
            && !duration.is_zero()
            && library
            && self.wake.kicked.swap(false, Ordering::AcqRel)
        {
            return Box::pin(std::future::ready(()));
        }
        let _guard = self.handle.enter();
        let sleep = tokio::time::sleep(duration);
        let bucket = [10, 100, 1_000].iter().rposition(|ms| duration >= Duration::from_millis(*ms));
        match bucket {
            Some(i) if library => Box::pin(async move {
                sleep.await;
                SLEEPS_FIRED[i].fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                SLEEPS_FIRED_MS.fetch_add(ms, Ordering::Relaxed);
            }),
            _ => Box::pin(sleep),
        }
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        let _guard = self.handle.enter();
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        futures::executor::block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(tokio::task::yield_now())
    }

    fn name(&self) -> &'static str {
        "specter"
    }
}

/// A UDP socket that reports receives to the connection's wake state, hands the driver
/// injected datagrams, and enforces loopback confinement on sends.
struct UdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The address it is bound to (its port already chosen).
    local: SocketAddr,
    wake: Arc<Wake>,
    loopback_only: bool,
    /// Keep early Binding requests for the ICE agent (`NetPolicy::answer_early_checks`).
    hold_early_checks: bool,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket").field("inner", &self.inner).finish()
    }
}

impl AsyncUdpSocket for UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if self.loopback_only && !is_loopback(&transmit.destination.ip()) {
            REFUSED_SENDS.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(confinement_error(&format!(
                "sending to {}",
                transmit.destination
            ))));
        }
        let sent = self.inner.poll_send(cx, transmit);
        if let Poll::Ready(Ok(_)) = sent {
            let n = segments(transmit.contents.len(), transmit.segment_size.unwrap_or(0));
            DATAGRAMS_SENT.fetch_add(n, Ordering::Relaxed);
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // An injected datagram first, if one is queued for this socket and fits.
        let local = self.local;
        if let Some(msg) = self.wake.take_injected(Some(local)) {
            if let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) {
                if buf.len() >= msg.data.len() {
                    buf[..msg.data.len()].copy_from_slice(&msg.data);
                    let mut out = RecvMeta::default();
                    out.len = msg.data.len();
                    out.stride = msg.data.len();
                    out.addr = msg.from;
                    out.dst_ip = msg.to.map(|a| a.ip());
                    *m = out;
                    return Poll::Ready(Ok(1));
                }
            }
        }
        match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.wake.kicked.store(true, Ordering::Release);
                    if self.hold_early_checks && !self.wake.remote_ready.load(Ordering::Acquire) {
                        for (buf, m) in bufs.iter().zip(meta.iter()).take(n) {
                            self.wake.hold_early_checks(buf, m, local);
                        }
                    }
                    let got = meta[..n].iter().map(|m| segments(m.len, m.stride)).sum();
                    DATAGRAMS_RECEIVED.fetch_add(got, Ordering::Relaxed);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                if let Ok(mut w) = self.wake.recv_waker.lock() {
                    match w.as_ref() {
                        Some(old) if old.will_wake(cx.waker()) => {}
                        _ => *w = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection_covers_v4_v6_and_mapped() {
        assert!(is_loopback(&"127.0.0.1".parse().unwrap()));
        assert!(is_loopback(&"127.8.9.10".parse().unwrap()));
        assert!(is_loopback(&"::1".parse().unwrap()));
        assert!(is_loopback(&"::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback(&"10.0.0.1".parse().unwrap()));
        assert!(!is_loopback(&"::ffff:8.8.8.8".parse().unwrap()));
    }
}
