//! Workarounds for webrtc-rs 0.21.1 defects that concern a connection, each with the defect
//! it targets and the test that fails without it. `guides/quirks.md` is the index of every
//! workaround in the crate, and says how to drop each once upstream fixes it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use webrtc::peer_connection::transport::IceTransport;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidate, RTCIceCandidateInit, RTCIceCandidateType, RTCIceParameters,
    RTCIceProtocol, StatsSelector,
};

use super::shared::{ConnectionState, GatheringState, IceConnectionState, PcEvents};
use crate::atoms;
use specter_core::registry::lock;

impl PcEvents {
    /// **No `gathering` state.** webrtc-rs 0.21.1 goes from `new` straight to `complete`;
    /// W3C passes through `gathering` when the first candidate is found. It is reported once
    /// per gathering round.
    /// Test: `peer_connection_test.exs`, "reaches :connected on both sides, with every event
    /// in order".
    pub fn begin_gathering(&self) {
        let mut states = lock(&self.states);
        if states.ice_gathering != GatheringState::Gathering {
            states.ice_gathering = GatheringState::Gathering;
            drop(states);
            self.emit_state(atoms::ice_gathering_state_change(), GatheringState::Gathering);
        }
    }

    /// **DTLS handshake failure never reported.** webrtc-rs 0.21.1 only logs a DTLS
    /// handshake error (a certificate that does not match the remote description's
    /// `a=fingerprint`, for one) and leaves the connection `connecting` for ever. Once ICE is
    /// connected the handshake gets the instance's `dtls_handshake_timeout`; a connection
    /// still not connected then is `failed` and shut down, so nothing more is exchanged with
    /// a peer that could not prove who it is.
    /// Test: `security_test.exs`, "a certificate that does not match ...".
    pub fn watch_dtls(self: &Arc<Self>) {
        if self.dtls_watch.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = self.dtls_timeout;
        // Weak, and polled: a connection that connects (in a few ms), closes or is dropped
        // ends the watch at once instead of holding its events for the whole timeout.
        let events = Arc::downgrade(self);
        self.handle.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let now = tokio::time::Instant::now();
                let step = Duration::from_millis(20);
                tokio::time::sleep(step.min(deadline.saturating_duration_since(now))).await;
                let Some(events) = events.upgrade() else {
                    return;
                };
                match events.dtls_watch_step(deadline) {
                    Some(true) => {
                        events
                            .emit_state(atoms::connection_state_change(), ConnectionState::Failed);
                        if let Some(pc) = events.peer_connection() {
                            let _ = pc.close().await;
                        }
                        return;
                    }
                    Some(false) => {}
                    None => return,
                }
            }
        });
    }

    /// One look at the handshake: `None` when the watch is over (connected, or ICE not up),
    /// `Some(true)` when it expired (the connection is now failed), `Some(false)` to wait.
    fn dtls_watch_step(&self, deadline: tokio::time::Instant) -> Option<bool> {
        let mut s = lock(&self.states);
        let ice_up = matches!(
            s.ice_connection,
            IceConnectionState::Connected | IceConnectionState::Completed
        );
        let stuck = matches!(s.connection, ConnectionState::New | ConnectionState::Connecting);
        if !(ice_up && stuck) {
            self.dtls_watch.store(false, Ordering::Release);
            return None;
        }
        let expired = tokio::time::Instant::now() >= deadline;
        if expired {
            s.connection = ConnectionState::Failed;
            self.dtls_failed.store(true, Ordering::Release);
            self.dtls_watch.store(false, Ordering::Release);
        }
        Some(expired)
    }

    /// **`connected` without a handshake.** webrtc-rs 0.21.1 computes `connected` from "ICE
    /// connected and DTLS connected *or closed*", so a remote that sends a DTLS close_notify
    /// before the handshake completes (one whose certificate did not match, giving up) turns
    /// a connection that never authenticated its peer `connected`. On every `connected`, the
    /// DTLS transport's own state is checked; if the handshake did not complete, the
    /// connection is `failed` and shut down, as in `watch_dtls`.
    /// Test: `security_test.exs` (a `:connected`, if any, is followed by `:failed`).
    pub fn verify_dtls(self: &Arc<Self>) {
        let events = Arc::downgrade(self);
        self.handle.spawn(async move {
            let Some(events) = events.upgrade() else {
                return;
            };
            let Some(pc) = events.peer_connection() else {
                return;
            };
            let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
            let dtls = report.transport().map(|t| t.dtls_state);
            if dtls == Some(rtc::peer_connection::transport::RTCDtlsTransportState::Connected) {
                return;
            }
            events.fail_unauthenticated(pc).await;
        });
    }

    /// Reports `failed` (once, unless the connection is already closed) and closes the
    /// underlying connection.
    async fn fail_unauthenticated(&self, pc: Arc<dyn PeerConnection>) {
        let report = {
            let mut s = lock(&self.states);
            let report = !matches!(s.connection, ConnectionState::Failed | ConnectionState::Closed);
            if report {
                s.connection = ConnectionState::Failed;
                self.dtls_failed.store(true, Ordering::Release);
            }
            report
        };
        if report {
            self.emit_state(atoms::connection_state_change(), ConnectionState::Failed);
        }
        let _ = pc.close().await;
    }
}

/// The connection's ICE transport: through its SCTP transport, or a transceiver's DTLS
/// transport for a connection without data channels. `None` before a transport exists.
pub async fn ice_transport(pc: &Arc<dyn PeerConnection>) -> Option<Arc<dyn IceTransport>> {
    if let Some(sctp) = pc.sctp().await {
        return Some(sctp.transport().ice_transport());
    }
    for sender in pc.get_senders().await {
        if let Ok(Some(dtls)) = sender.transport().await {
            return Some(dtls.ice_transport());
        }
    }
    for receiver in pc.get_receivers().await {
        if let Ok(Some(dtls)) = receiver.transport().await {
            return Some(dtls.ice_transport());
        }
    }
    None
}

/// **A trickled candidate ICE already learned.** When the remote's checks arrive before its
/// trickled candidate, ICE learns the address as a peer-reflexive candidate; webrtc-rs 0.21.1
/// then adds the trickled one as a second remote candidate with the same address, the
/// responses to checks on its pair are attributed to the peer-reflexive pair, and the
/// selected pair names a candidate the remote never listed. The address is already reachable
/// through the peer-reflexive candidate, so the trickled one is not added again. What ICE
/// learned is read from the agent's own remote candidates (webrtc-rs creates no stats for
/// peer-reflexive candidates).
/// Test: `negotiation_test.exs`, "with a candidate learned from checks, then trickled".
pub async fn learned_as_prflx(
    pc: &Arc<dyn PeerConnection>,
    candidate: &RTCIceCandidateInit,
) -> bool {
    let body = candidate.candidate.strip_prefix("candidate:").unwrap_or(&candidate.candidate);
    if body.is_empty() {
        return false;
    }
    let Ok(c) = rtc::ice::candidate::unmarshal_candidate(body) else {
        return false;
    };
    let Some(ice) = ice_transport(pc).await else {
        return false;
    };
    let Ok(remotes) = ice.get_remote_candidates().await else {
        return false;
    };
    let tcp = c.network_type().is_tcp();
    remotes.iter().any(|r| {
        r.typ == RTCIceCandidateType::Prflx
            && r.port == c.port()
            && r.address == c.address()
            && (r.protocol == RTCIceProtocol::Tcp) == tcp
    })
}

/// **Candidates of other transports.** A remote that has not yet learned that BUNDLE was
/// accepted (Firefox offering with the `balanced` policy) trickles candidates for every media
/// section and for RTCP's component 2, each on a socket of its own. webrtc-rs 0.21.1 adds
/// them all to the connection's one ICE agent, whatever their m-line and component, and may
/// then select a pair whose remote socket is not the one the remote's DTLS uses: ICE
/// connects, DTLS never does. Only the BUNDLE-tag section's component-1 candidates are
/// added (RFC 8843 §7, RFC 8839 §5.1); the others are acknowledged and ignored, as a browser
/// does. A candidate that comes before any remote description is passed on (webrtc-rs then
/// refuses it as before).
/// Test: `negotiation_test.exs`, "candidates of other m-lines and of component 2 are
/// ignored"; `signalling.rs` unit test; `firefox_room_test.exs` (`:ice_selected_pair_mismatch`).
pub async fn belongs_to_transport(
    pc: &Arc<dyn PeerConnection>,
    candidate: &RTCIceCandidateInit,
) -> bool {
    match pc.remote_description().await {
        Some(remote) => specter_core::signalling::on_bundle_transport(&remote.sdp, candidate),
        None => true,
    }
}

/// **Dangling candidate ids in stats.** webrtc-rs 0.21.1 names candidate stats
/// `RTCLocalIceCandidate_<id>` / `RTCRemoteIceCandidate_<id>` but has candidate pairs refer
/// to them as `<id>`, so W3C's `localCandidateId`/`remoteCandidateId` dangle. Point them at
/// the entries that exist.
/// Test: `negotiation_test.exs`, "stats of the selected candidate pair".
pub fn repair_candidate_links(obj: &mut serde_json::Map<String, Value>) {
    let ids: HashSet<String> = obj.keys().cloned().collect();
    for value in obj.values_mut() {
        if value.get("type").and_then(Value::as_str) != Some("candidate-pair") {
            continue;
        }
        for (key, prefix) in [
            ("localCandidateId", "RTCLocalIceCandidate_"),
            ("remoteCandidateId", "RTCRemoteIceCandidate_"),
        ] {
            let Some(id) = value.get(key).and_then(Value::as_str) else {
                continue;
            };
            let prefixed = format!("{prefix}{id}");
            if !ids.contains(id) && ids.contains(&prefixed) {
                value[key] = Value::String(prefixed);
            }
        }
    }
}

/// **Candidates missing from stats.** webrtc-rs 0.21.1 registers candidate stats only for
/// candidates gathered locally or trickled in with `add_ice_candidate`: candidates from the
/// remote description and peer-reflexive ones (learned from checks, on either side) have
/// none, so the selected pair's `localCandidateId`/`remoteCandidateId` can name nothing.
/// Every candidate the ICE agent knows gets an entry (W3C `RTCIceCandidateStats`), built
/// from the agent's own lists.
/// Test: `negotiation_test.exs`, "stats of the selected candidate pair".
pub async fn add_missing_candidate_stats(
    pc: &Arc<dyn PeerConnection>,
    obj: &mut serde_json::Map<String, Value>,
) {
    let Some(ice) = ice_transport(pc).await else {
        return;
    };
    let (timestamp, transport_id) = obj
        .values()
        .find(|v| v.get("type").and_then(Value::as_str) == Some("transport"))
        .map(|t| (t["timestamp"].clone(), t["id"].clone()))
        .unwrap_or((Value::Null, Value::Null));
    let ufrag =
        |params: Option<RTCIceParameters>| params.map(|p| p.username_fragment).unwrap_or_default();
    let sides = [
        (
            ice.get_local_candidates().await.unwrap_or_default(),
            "local-candidate",
            "RTCLocalIceCandidate_",
            ufrag(ice.get_local_parameters().await.ok().flatten()),
        ),
        (
            ice.get_remote_candidates().await.unwrap_or_default(),
            "remote-candidate",
            "RTCRemoteIceCandidate_",
            ufrag(ice.get_remote_parameters().await.ok().flatten()),
        ),
    ];
    for (candidates, typ, prefix, ufrag) in sides {
        for c in candidates {
            let id = format!("{prefix}{}", c.id);
            if obj.contains_key(&c.id) || obj.contains_key(&id) {
                continue;
            }
            let entry = candidate_stats(&c, &id, typ, &timestamp, &transport_id, &ufrag);
            obj.insert(id, entry);
        }
    }
}

fn candidate_stats(
    c: &RTCIceCandidate,
    id: &str,
    typ: &str,
    timestamp: &Value,
    transport_id: &Value,
    ufrag: &str,
) -> Value {
    let enc = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    serde_json::json!({
        "id": id,
        "type": typ,
        "timestamp": timestamp,
        "transportId": transport_id,
        "address": c.address,
        "port": c.port,
        "protocol": c.protocol.to_string(),
        "candidateType": enc(serde_json::to_value(c.typ)),
        "priority": c.priority,
        "url": "",
        "relayProtocol": enc(serde_json::to_value(c.relay_protocol)),
        "foundation": c.foundation,
        "relatedAddress": c.related_address,
        "relatedPort": c.related_port,
        "usernameFragment": ufrag,
        "tcpType": enc(serde_json::to_value(c.tcp_type)),
    })
}
