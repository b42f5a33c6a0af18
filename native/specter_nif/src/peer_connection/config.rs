//! A connection's `RTCConfiguration` as `get_configuration/2` answers it, and what
//! `set_configuration/3` may change.

use rustler::NifUnitEnum;
use webrtc::peer_connection::{
    RTCBundlePolicy, RTCConfiguration, RTCConfigurationBuilder, RTCIceServer,
    RTCIceTransportPolicy, RTCRtcpMuxPolicy,
};

use crate::config::IceServer;

#[derive(Debug, Clone, Copy, NifUnitEnum)]
pub enum TransportPolicy {
    All,
    Relay,
}

#[derive(Debug, Clone, Copy, NifUnitEnum)]
pub enum BundlePolicy {
    Balanced,
    MaxCompat,
    MaxBundle,
}

#[derive(Debug, Clone, Copy, NifUnitEnum)]
pub enum RtcpMuxPolicy {
    Negotiate,
    Require,
}

/// `%{ice_servers, ice_transport_policy, bundle_policy, rtcp_mux_policy,
/// ice_candidate_pool_size}`.
#[derive(rustler::NifMap)]
pub struct Configuration {
    ice_servers: Vec<IceServer>,
    ice_transport_policy: TransportPolicy,
    bundle_policy: BundlePolicy,
    rtcp_mux_policy: RtcpMuxPolicy,
    ice_candidate_pool_size: u8,
}

impl From<&RTCConfiguration> for Configuration {
    fn from(c: &RTCConfiguration) -> Self {
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Self {
            ice_servers: c
                .ice_servers()
                .iter()
                .map(|s| IceServer {
                    urls: s.urls.clone(),
                    username: opt(&s.username),
                    credential: opt(&s.credential),
                })
                .collect(),
            ice_transport_policy: match c.ice_transport_policy() {
                RTCIceTransportPolicy::Relay => TransportPolicy::Relay,
                _ => TransportPolicy::All,
            },
            bundle_policy: match c.bundle_policy() {
                RTCBundlePolicy::MaxCompat => BundlePolicy::MaxCompat,
                RTCBundlePolicy::MaxBundle => BundlePolicy::MaxBundle,
                _ => BundlePolicy::Balanced,
            },
            rtcp_mux_policy: match c.rtcp_mux_policy() {
                RTCRtcpMuxPolicy::Negotiate => RtcpMuxPolicy::Negotiate,
                _ => RtcpMuxPolicy::Require,
            },
            ice_candidate_pool_size: c.ice_candidate_pool_size(),
        }
    }
}

/// `current` with the ICE servers and the transport policy replaced where given: the fields
/// W3C lets an application change after construction.
pub fn changed(
    current: &RTCConfiguration,
    servers: Option<Vec<IceServer>>,
    policy: Option<TransportPolicy>,
) -> RTCConfiguration {
    let servers: Vec<RTCIceServer> = match servers {
        Some(list) => list
            .into_iter()
            .map(|s| RTCIceServer {
                urls: s.urls,
                username: s.username.unwrap_or_default(),
                credential: s.credential.unwrap_or_default(),
            })
            .collect(),
        None => current.ice_servers().to_vec(),
    };
    let policy = match policy {
        Some(TransportPolicy::Relay) => RTCIceTransportPolicy::Relay,
        Some(TransportPolicy::All) => RTCIceTransportPolicy::All,
        None => current.ice_transport_policy(),
    };
    RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .with_ice_transport_policy(policy)
        .with_bundle_policy(current.bundle_policy())
        .with_rtcp_mux_policy(current.rtcp_mux_policy())
        .with_ice_candidate_pool_size(current.ice_candidate_pool_size())
        .build()
}
