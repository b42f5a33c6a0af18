//! The connection's event handler, awaited on the driver task: it only records states,
//! formats and sends; a remote data channel or track is registered with the instance.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use rustler::{Encoder, Term};
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnectionEventHandler, RTCIceConnectionState, RTCIceGatheringState,
    RTCPeerConnectionIceErrorEvent, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSignalingState,
};

use super::shared::{
    ConnectionState, GatheringState, IceConnectionState, PcEvents, SignalingState,
};
use crate::atoms;
use crate::data_channel;
use crate::instance::Instance;
use crate::rtcp::map;
use crate::track_remote;
use specter_core::registry::lock;

pub struct Handler {
    pub events: Arc<PcEvents>,
    pub instance: Weak<Instance>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        self.events.emit(|env, pc| (atoms::negotiation_needed(), pc).encode(env));
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Ok(mut init) = event.candidate.to_json() else {
            return;
        };
        self.events.begin_gathering();
        if let Some((mid, ufrag)) = lock(&self.events.candidate_context).clone() {
            init.sdp_mid = Some(mid);
            init.sdp_mline_index = Some(0);
            init.username_fragment = ufrag;
        }
        if let Ok(json) = serde_json::to_string(&init) {
            self.events
                .emit(move |env, pc| (atoms::ice_candidate(), pc, json.as_str()).encode(env));
        }
    }

    async fn on_ice_candidate_error(&self, event: RTCPeerConnectionIceErrorEvent) {
        self.events.emit(move |env, pc| {
            let fields: [(rustler::Atom, Term<'_>); 5] = [
                (atoms::address(), event.address.as_str().encode(env)),
                (atoms::port(), event.port.encode(env)),
                (atoms::url(), event.url.as_str().encode(env)),
                (atoms::error_code(), event.error_code.encode(env)),
                (atoms::error_text(), event.error_text.as_str().encode(env)),
            ];
            (atoms::ice_candidate_error(), pc, map(env, &fields)).encode(env)
        });
    }

    async fn on_signaling_state_change(&self, state: RTCSignalingState) {
        self.events.emit_state(atoms::signaling_state_change(), SignalingState::from(state));
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        let state = IceConnectionState::from(state);
        lock(&self.events.states).ice_connection = state;
        self.events.emit_state(atoms::ice_connection_state_change(), state);
        if matches!(state, IceConnectionState::Connected | IceConnectionState::Completed) {
            self.events.watch_dtls();
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let state = GatheringState::from(state);
        if matches!(state, GatheringState::Gathering | GatheringState::Complete) {
            self.events.begin_gathering();
        }
        if state == GatheringState::Gathering {
            return;
        }
        lock(&self.events.states).ice_gathering = state;
        self.events.emit_state(atoms::ice_gathering_state_change(), state);
        if state == GatheringState::Complete {
            // End of candidates, as a browser's `onicecandidate` with `null`.
            self.events.emit(|env, pc| (atoms::ice_candidate(), pc, atoms::nil()).encode(env));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = ConnectionState::from(state);
        {
            let mut s = lock(&self.events.states);
            // A connection Specter failed (no DTLS handshake) stays failed until closed.
            if self.events.dtls_failed.load(Ordering::Acquire) && state != ConnectionState::Closed {
                return;
            }
            s.connection = state;
        }
        self.events.emit_state(atoms::connection_state_change(), state);
        if state == ConnectionState::Connected {
            self.events.verify_dtls();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if let Some(inst) = self.instance.upgrade() {
            data_channel::announce_remote(&inst, &self.events, dc);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(inst) = self.instance.upgrade() {
            track_remote::announce(&inst, &self.events, track);
        }
    }
}
