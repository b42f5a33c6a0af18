//! Pure-Rust baseline for Specter's benchmarks.
//!
//! Two peer connections in one process negotiate over loopback with trickle ICE on the same
//! webrtc-rs version, the same per-connection runtime (`specter_core::runtime`) and the same socket settings as the NIF, then:
//!
//!   native_baseline setup [runs]                 time to connected / data channel open
//!   native_baseline transfer <MiB> <msg_bytes>   ordered reliable bulk transfer, MB/s
//!   native_baseline rate <count> <msg_bytes>     message rate, messages/s
//!   native_baseline echo <MiB> <msg_bytes> <runs> one side echoes every message back, MB/s
//!                                                and stalls (gaps >= 20 ms) per run
//!
//! Environment: `SPECTER_DRIVER_WAKEUP=0` turns the driver wake-up off (A/B),
//! `SPECTER_SOCKET_BUFFER=<bytes>` sets the UDP buffers (0 = kernel default),
//! `SPECTER_NUDGE=0` turns the idle nudge off, `SEND_BUFFER_LIMIT=<bytes>` the per-channel
//! send buffer (default 4 MiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::ice::mdns::MulticastDnsMode;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

use specter_core::runtime::{self, ConnRuntime, NetPolicy, Wake};

enum Ev {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
}

struct Handler(mpsc::UnboundedSender<Ev>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(Ev::Candidate(init));
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(Ev::State(state));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.0.send(Ev::Channel(dc));
    }
    async fn on_ice_connection_state_change(
        &self,
        state: webrtc::peer_connection::RTCIceConnectionState,
    ) {
        if std::env::var("VERBOSE").is_ok() {
            eprintln!(
                "{:?} ice {state}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros()
                    % 100_000_000
            );
        }
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn nudge_on_candidate() -> bool {
    env_usize("SPECTER_CANDIDATE_NUDGE", 1) == 1
}

fn policy() -> Arc<NetPolicy> {
    Arc::new(NetPolicy {
        socket_buffer: env_usize("SPECTER_SOCKET_BUFFER", runtime::DEFAULT_SOCKET_BUFFER),
        loopback_only: true,
        driver_wakeup: env_usize("SPECTER_DRIVER_WAKEUP", 1) == 1,
        answer_early_checks: env_usize("SPECTER_EARLY_CHECKS", 1) == 1,
    })
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    rx: mpsc::UnboundedReceiver<Ev>,
    wake: Arc<Wake>,
}

async fn build(policy: Arc<NetPolicy>) -> Peer {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("registry");
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .with_prflx_acceptance_min_wait(if env_usize("PRFLX_WAIT0", 1) == 1 {
            Some(Duration::ZERO)
        } else {
            None
        })
        .with_sctp_max_receive_buffer_size(env_usize("SCTP_RECV", 1 << 20) as u32)
        .with_ice_connection_attempts(
            std::env::var("CHECK_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            std::env::var("MAX_REQ").ok().and_then(|v| v.parse().ok()),
        )
        .build();
    let rt = ConnRuntime::new(tokio::runtime::Handle::current(), policy);
    let wake = rt.wake();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_runtime(Arc::new(rt))
        .with_handler(Arc::new(Handler(tx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .with_data_channel_send_buffer_limit(env_usize("SEND_BUFFER_LIMIT", 4 << 20))
        .build()
        .await
        .expect("build");
    Peer {
        pc: Arc::new(pc),
        rx,
        wake,
    }
}

struct Pair {
    a: Peer,
    b: Peer,
    dc_a: Arc<dyn DataChannel>,
    dc_b: Arc<dyn DataChannel>,
    connected: Duration,
    open: Duration,
}

/// Negotiates a pair with trickle ICE; returns once both sides are connected and the
/// channel is open on both.
async fn connect_pair() -> Pair {
    let start = Instant::now();
    let policy = policy();
    let mut a = build(policy.clone()).await;
    let mut b = build(policy).await;
    let dc_a = a.pc.create_data_channel("bench", None).await.expect("dc");
    let offer = a.pc.create_offer(None).await.expect("offer");
    a.pc.set_local_description(offer.clone())
        .await
        .expect("sld");
    b.pc.set_remote_description(offer).await.expect("srd");
    // As the NIF does after every set_remote_description.
    b.wake.remote_description_applied();
    b.wake.nudge();
    let answer = b.pc.create_answer(None).await.expect("answer");
    b.pc.set_local_description(answer.clone())
        .await
        .expect("sld");
    a.pc.set_remote_description(answer).await.expect("srd");
    a.wake.remote_description_applied();
    a.wake.nudge();

    let (mut a_conn, mut b_conn) = (false, false);
    let mut a_open = false;
    let mut dc_b: Option<Arc<dyn DataChannel>> = None;
    let mut connected = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a_conn && b_conn && a_open && dc_b.is_some()) {
        if Instant::now() > deadline {
            panic!("pair did not connect in 10 s");
        }
        tokio::select! {
            Some(ev) = a.rx.recv() => match ev {
                Ev::Candidate(c) => { let _ = b.pc.add_ice_candidate(c).await; if nudge_on_candidate() { b.wake.nudge(); } }
                Ev::State(RTCPeerConnectionState::Connected) => a_conn = true,
                _ => {}
            },
            Some(ev) = b.rx.recv() => match ev {
                Ev::Candidate(c) => { let _ = a.pc.add_ice_candidate(c).await; if nudge_on_candidate() { a.wake.nudge(); } }
                Ev::State(RTCPeerConnectionState::Connected) => b_conn = true,
                Ev::Channel(dc) => dc_b = Some(dc),
                _ => {}
            },
            ev = dc_a.poll(), if !a_open => {
                if let Some(DataChannelEvent::OnOpen) = ev { a_open = true; }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if connected.is_none() && a_conn && b_conn {
            connected = Some(start.elapsed());
        }
    }
    let open = start.elapsed();
    Pair {
        a,
        b,
        dc_a,
        dc_b: dc_b.expect("remote channel"),
        connected: connected.unwrap_or(open),
        open,
    }
}

async fn close(pair: Pair) {
    let _ = pair.a.pc.close().await;
    let _ = pair.b.pc.close().await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rusage_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are fields 14 and 15, after the parenthesised command name.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `RcvbufErrors` from /proc/net/snmp (UDP receive-buffer drops, whole namespace).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(head), Some(vals)) = (lines.next(), lines.next()) else {
        return 0;
    };
    let idx = head.split_whitespace().position(|h| h == "RcvbufErrors");
    idx.and_then(|i| vals.split_whitespace().nth(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn setup(runs: usize) {
    let mut connected = Vec::new();
    let mut open = Vec::new();
    for _ in 0..runs {
        let pair = connect_pair().await;
        connected.push(pair.connected.as_secs_f64() * 1000.0);
        open.push(pair.open.as_secs_f64() * 1000.0);
        if std::env::var("VERBOSE").is_ok() {
            eprintln!("run connected={:?} open={:?}", pair.connected, pair.open);
        }
        close(pair).await;
    }
    connected.sort_by(|a, b| a.total_cmp(b));
    open.sort_by(|a, b| a.total_cmp(b));
    println!(
        "setup runs={runs} connected_ms p50={:.2} p90={:.2} min={:.2} max={:.2} | dc_open_ms p50={:.2} p90={:.2} min={:.2} max={:.2}",
        percentile(&connected, 0.5),
        percentile(&connected, 0.9),
        connected[0],
        connected[connected.len() - 1],
        percentile(&open, 0.5),
        percentile(&open, 0.9),
        open[0],
        open[open.len() - 1],
    );
}

/// Receives until `total` bytes arrived. A side task nudges the driver when messages stop
/// arriving (the same idle nudge Specter's reader does), so this loop stays a plain poll.
async fn receive(dc: Arc<dyn DataChannel>, wake: Arc<Wake>, total: usize) -> (usize, usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let count = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    if env_usize("SPECTER_NUDGE", 1) == 1 {
        let (count, done) = (count.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut idle_ticks = 0;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let now = count.load(Ordering::Relaxed);
                if now == last && now > 0 {
                    idle_ticks += 1;
                    if idle_ticks <= env_usize("NUDGES", 2) {
                        wake.nudge();
                    }
                } else {
                    idle_ticks = 0;
                }
                last = now;
            }
        });
    }
    let mut got = 0usize;
    let mut msgs = 0usize;
    let gaps = std::env::var("GAPS").is_ok();
    // Simulated per-message consumer cost (ns), to study a consumer slower than the network.
    let spin_ns = env_usize("CONSUMER_NS", 0) as u128;
    let mut last = Instant::now();
    while got < total {
        match dc.poll().await {
            Some(DataChannelEvent::OnMessage(m)) => {
                got += m.data.len();
                msgs += 1;
                count.store(msgs as u64, Ordering::Relaxed);
                if spin_ns > 0 {
                    let t = Instant::now();
                    while t.elapsed().as_nanos() < spin_ns {
                        std::hint::spin_loop();
                    }
                }
                if gaps {
                    let now = Instant::now();
                    let gap = now.duration_since(last);
                    if gap > Duration::from_millis(50) {
                        eprintln!("gap {gap:?} at message {msgs}");
                    }
                    last = now;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    (got, msgs)
}

async fn transfer(total: usize, size: usize, label: &str) {
    let pair = connect_pair().await;
    let drops0 = udp_rcvbuf_errors();
    let cpu0 = rusage_cpu_seconds();
    let start = Instant::now();
    let dc_b = pair.dc_b.clone();
    let wake_b = pair.b.wake.clone();
    let receiver = tokio::spawn(async move { receive(dc_b, wake_b, total).await });
    let payload = vec![0xA5u8; size];
    let mut sent = 0usize;
    let chunk = BytesMut::from(&payload[..]);
    while sent < total {
        let n = size.min(total - sent);
        let msg = if n == size {
            chunk.clone()
        } else {
            BytesMut::from(&payload[..n])
        };
        // try_send takes the connection lock once; on a full buffer, send waits for room
        // (writable + try_send in a loop can spin one message short of the limit).
        match pair.dc_a.try_send(msg.clone()).await {
            Err(webrtc::error::Error::ErrSendBufferFull) => {
                let t = Instant::now();
                pair.dc_a.send(msg).await.expect("send");
                if std::env::var("GAPS").is_ok() && t.elapsed() > Duration::from_millis(20) {
                    eprintln!("sender blocked {:?} at byte {sent}", t.elapsed());
                }
            }
            other => other.expect("send"),
        }
        sent += n;
    }
    let (got, msgs) = receiver.await.expect("receiver");
    let secs = start.elapsed().as_secs_f64();
    let cpu = rusage_cpu_seconds() - cpu0;
    let drops = udp_rcvbuf_errors() - drops0;
    println!(
        "{label} bytes={got} msgs={msgs} msg_size={size} secs={secs:.3} MB/s={:.1} msgs/s={:.0} cpu_s={cpu:.2} peak_rss_kib={} udp_rcvbuf_drops={drops}",
        got as f64 / secs / 1e6,
        msgs as f64 / secs,
        status_kib("VmHWM:")
    );
    let _ = pair.a.rx;
    close(Pair { ..pair }).await;
}

/// Echo: `dc_a` sends `total` bytes in `size`-byte messages, `dc_b` sends every message
/// back, `dc_a` counts the echoes. Like bench/dc_two_vm.exs, in one process and without the
/// BEAM. Prints one line per run with the stalls (gaps >= 20 ms between two echoes).
async fn echo(total: usize, size: usize, runs: usize) {
    let mut rates = Vec::new();
    for run in 1..=runs {
        let pair = connect_pair().await;
        let drops0 = udp_rcvbuf_errors();
        let cpu0 = rusage_cpu_seconds();
        let start = Instant::now();
        let dc_b = pair.dc_b.clone();
        let wake_b = pair.b.wake.clone();
        let count = total / size;
        // The echo side: receive (with the idle nudge, as Specter's reader) and send back.
        let echoer = tokio::spawn(async move {
            let spin_ns = env_usize("CONSUMER_NS", 0) as u128;
            let mut n = 0usize;
            let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let nudger = (env_usize("SPECTER_NUDGE", 1) == 1)
                .then(|| idle_nudger(last.clone(), wake_b.clone()));
            while n < count {
                match dc_b.poll().await {
                    Some(DataChannelEvent::OnMessage(m)) => {
                        n += 1;
                        last.store(n as u64, std::sync::atomic::Ordering::Relaxed);
                        if spin_ns > 0 {
                            let t = Instant::now();
                            while t.elapsed().as_nanos() < spin_ns {
                                std::hint::spin_loop();
                            }
                        }
                        match dc_b.try_send(m.data.clone()).await {
                            Err(webrtc::error::Error::ErrSendBufferFull) => {
                                dc_b.send(m.data).await.expect("echo send")
                            }
                            other => other.expect("echo send"),
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            if let Some(t) = nudger {
                t.abort();
            }
        });
        let dc_a = pair.dc_a.clone();
        let sender = tokio::spawn(async move {
            let chunk = BytesMut::from(&vec![0xA5u8; size][..]);
            for _ in 0..count {
                match dc_a.try_send(chunk.clone()).await {
                    Err(webrtc::error::Error::ErrSendBufferFull) => {
                        dc_a.send(chunk.clone()).await.expect("send")
                    }
                    other => other.expect("send"),
                }
            }
        });
        let (got, _msgs) = receive_gaps(pair.dc_a.clone(), pair.a.wake.clone(), count * size).await;
        let secs = start.elapsed().as_secs_f64();
        let _ = sender.await;
        let _ = echoer.await;
        let cpu = rusage_cpu_seconds() - cpu0;
        let drops = udp_rcvbuf_errors() - drops0;
        let stalls = STALLS
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let stall_ms: f64 = stalls.iter().map(|(_, d)| d.as_secs_f64() * 1000.0).sum();
        let first: Vec<String> = stalls
            .iter()
            .take(4)
            .map(|(at, d)| format!("{:.1}: {}", *at as f64 / 1048576.0, d.as_millis()))
            .collect();
        let mbps = got as f64 / secs / 1e6;
        rates.push(mbps);
        println!(
            "echo run={run} MB/s={mbps:.1} secs={secs:.3} stalls={} stall_ms={stall_ms:.0} first=[{}] cpu_cores={:.2} udp_rcvbuf_drops={drops}",
            stalls.len(),
            first.join(", "),
            cpu / secs
        );
        close(pair).await;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "echo runs={runs} MB/s min={:.1} median={:.1} max={:.1}",
        rates[0],
        percentile(&rates, 0.5),
        rates[rates.len() - 1]
    );
}

/// Stalls seen by `receive_gaps`: (bytes received before it, length).
static STALLS: std::sync::Mutex<Vec<(usize, Duration)>> = std::sync::Mutex::new(Vec::new());

/// `receive`, recording every gap >= 20 ms between two messages in `STALLS`.
async fn receive_gaps(dc: Arc<dyn DataChannel>, wake: Arc<Wake>, total: usize) -> (usize, usize) {
    let last_n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let nudger = (env_usize("SPECTER_NUDGE", 1) == 1).then(|| idle_nudger(last_n.clone(), wake));
    let mut got = 0usize;
    let mut msgs = 0usize;
    let mut last = Instant::now();
    while got < total {
        match dc.poll().await {
            Some(DataChannelEvent::OnMessage(m)) => {
                let now = Instant::now();
                let gap = now.duration_since(last);
                if gap >= Duration::from_millis(20) {
                    if let Ok(mut s) = STALLS.lock() {
                        s.push((got, gap));
                    }
                    if std::env::var("VERBOSE").is_ok() {
                        eprintln!("STALL {gap:?} at byte {got}");
                    }
                }
                last = now;
                got += m.data.len();
                msgs += 1;
                last_n.store(msgs as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Some(_) => {}
            None => break,
        }
    }
    if let Some(t) = nudger {
        t.abort();
    }
    (got, msgs)
}

/// Specter's reader idle nudge: when `count` stops moving for 3 ms, nudge the driver (at
/// most twice per pause) so that it resumes SCTP streams parked at the read backlog limit.
fn idle_nudger(
    count: Arc<std::sync::atomic::AtomicU64>,
    wake: Arc<Wake>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut idle = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let now = count.load(std::sync::atomic::Ordering::Relaxed);
            if now == seen && now > 0 {
                idle += 1;
                if idle <= 2 {
                    wake.nudge();
                }
            } else {
                idle = 0;
            }
            seen = now;
        }
    })
}

fn main() {
    env_logger::Builder::from_default_env()
        .format_timestamp_micros()
        .init();
    let args: Vec<String> = std::env::args().collect();
    let rt = runtime::global().expect("runtime");
    let mode = args.get(1).map(String::as_str).unwrap_or("setup");
    let num = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    rt.block_on(async {
        match mode {
            "setup" => setup(num(2, 50)).await,
            "transfer" => {
                let mib = num(2, 256);
                let size = num(3, 16384);
                transfer(mib << 20, size, "transfer").await
            }
            "echo" => {
                let mib = num(2, 16);
                let size = num(3, 1024);
                echo(mib << 20, size, num(4, 10)).await
            }
            "rate" => {
                let count = num(2, 1_000_000);
                let size = num(3, 100);
                transfer(count * size, size, "rate").await
            }
            other => eprintln!("unknown mode {other}"),
        }
    });
}
