//! `get_stats/3`: webrtc-rs's report as W3C `RTCStatsReport` JSON, keyed by id, with the
//! candidates and links webrtc-rs 0.21.1 leaves out (see `quirks`).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use webrtc::peer_connection::{PeerConnection, RTCStatsReportEntry, StatsSelector};

use super::quirks;

fn entry_value(entry: &RTCStatsReportEntry) -> Option<Value> {
    let v = match entry {
        RTCStatsReportEntry::PeerConnection(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Transport(s) => serde_json::to_value(s),
        RTCStatsReportEntry::IceCandidatePair(s) => serde_json::to_value(s),
        RTCStatsReportEntry::LocalCandidate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteCandidate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Certificate(s) => serde_json::to_value(s),
        RTCStatsReportEntry::Codec(s) => serde_json::to_value(s),
        RTCStatsReportEntry::DataChannel(s) => serde_json::to_value(s),
        RTCStatsReportEntry::InboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::OutboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteInboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::RemoteOutboundRtp(s) => serde_json::to_value(s),
        RTCStatsReportEntry::AudioSource(s) => serde_json::to_value(s),
        RTCStatsReportEntry::VideoSource(s) => serde_json::to_value(s),
        RTCStatsReportEntry::AudioPlayout(s) => serde_json::to_value(s),
        _ => return None,
    };
    v.ok()
}

/// The connection's stats now.
pub async fn report(pc: &Arc<dyn PeerConnection>) -> Value {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let mut obj = serde_json::Map::new();
    for entry in report.iter() {
        if let Some(v) = entry_value(entry) {
            obj.insert(entry.id().to_owned(), v);
        }
    }
    quirks::add_missing_candidate_stats(pc, &mut obj).await;
    quirks::repair_candidate_links(&mut obj);
    Value::Object(obj)
}
