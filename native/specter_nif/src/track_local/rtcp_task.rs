//! The RTCP a binding's sender receives: to the connection's owner as
//! `{:sender_rtcp, sender, [packet]}`; keyframe requests also to the forwarded publisher,
//! merged (at most one per `KEYFRAME_REQUEST_INTERVAL`).

use std::sync::Weak;
use std::time::Duration;

use rustler::Encoder;
use webrtc::media_stream::track_local::TrackLocalEvent;

use super::{Binding, LocalTrack};
use crate::atoms;
use crate::rtcp;
use specter_core::registry::lock;
use specter_core::rtcp::{describe, RtcpInfo};

/// Minimum time between keyframe requests relayed to one publisher.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// The RTCP a binding's sender receives: to the owner as
/// `{:sender_rtcp, sender, [packet]}`; keyframe requests also to the forwarded publisher.
pub async fn run(binding: Weak<Binding>, local: LocalTrack) {
    while let Some(event) = local.poll().await {
        let TrackLocalEvent::OnRtcpPacket(pkts) = event else {
            continue;
        };
        let infos: Vec<RtcpInfo> = pkts.iter().filter_map(|p| describe(p.as_ref())).collect();
        if infos.is_empty() {
            continue;
        }
        let Some(b) = binding.upgrade() else { break };
        if infos.iter().any(RtcpInfo::is_keyframe_request) {
            let source = lock(&b.entry)
                .upgrade()
                .and_then(|e| lock(&e.source).as_ref().and_then(Weak::upgrade));
            if let Some(source) = source {
                source.request_keyframe_throttled(KEYFRAME_REQUEST_INTERVAL).await;
            }
        }
        if let Some(owner) = b.owner.upgrade() {
            let sender = b.sender_id.clone();
            owner.send(move |env| {
                (atoms::sender_rtcp(), sender.as_str(), rtcp::terms(env, &infos)).encode(env)
            });
        }
    }
}
