//! `%Specter.Config{}`: the options of one Specter instance, validated in Elixir.

use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::transport::RTCDtlsRole;
use rustler::{NifMap, NifStruct, NifUnitEnum, NifUntaggedEnum};
use webrtc::peer_connection::{RTCIceServer, SettingEngine, SettingEngineBuilder};

use specter_core::runtime::NetPolicy;

#[derive(Debug, Clone, NifMap)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
pub enum Mdns {
    Disabled,
    QueryOnly,
    QueryAndGather,
}

/// The DTLS role a connection takes when it answers (RFC 8842 §5: the answerer picks
/// `a=setup:active` or `passive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, NifUnitEnum)]
pub enum DtlsRole {
    /// webrtc-rs's choice: the answerer is the DTLS client (`a=setup:active`), as browsers.
    Auto,
    /// `a=setup:active`.
    Client,
    /// `a=setup:passive`: the offerer becomes the DTLS client.
    Server,
}

/// How incoming data channel messages are delivered at first: `true`, `false`, `:once` or a
/// count (as `:gen_tcp`'s `active`).
#[derive(Debug, Clone, NifUntaggedEnum)]
pub enum ActiveSetting {
    Flag(bool),
    Count(i64),
    Mode(rustler::Atom),
}

/// Mirror of `%Specter.Config{}` (see lib/specter/config.ex for the meaning of every field).
#[derive(Debug, Clone, NifStruct)]
#[module = "Specter.Config"]
pub struct Config {
    pub ice_servers: Vec<IceServer>,
    pub loopback_only: bool,
    pub bind_addresses: Vec<String>,
    pub interfaces: Vec<String>,
    pub udp_port_range: Option<(u16, u16)>,
    pub mdns: Mdns,
    pub answering_dtls_role: DtlsRole,
    pub socket_buffer_size: usize,
    pub driver_wakeup: bool,
    pub answer_early_checks: bool,
    pub ice_disconnected_timeout: Option<u64>,
    pub ice_failed_timeout: Option<u64>,
    /// ms the DTLS handshake may take once ICE is connected (see `PcEvents::watch_dtls`).
    pub dtls_handshake_timeout: u64,
    pub ice_keepalive_interval: Option<u64>,
    pub ice_prflx_acceptance_wait: Option<u64>,
    pub ice_check_interval: Option<u64>,
    pub ice_max_binding_requests: Option<u16>,
    pub data_channel_send_buffer_limit: usize,
    pub data_channel_active: ActiveSetting,
    pub data_channel_receive_buffer: usize,
    /// SCTP receive window of each connection, bytes.
    pub sctp_receive_buffer: u32,
}

impl Config {
    pub fn net_policy(&self) -> Arc<NetPolicy> {
        Arc::new(NetPolicy {
            socket_buffer: self.socket_buffer_size,
            loopback_only: self.loopback_only,
            driver_wakeup: self.driver_wakeup,
            answer_early_checks: self.answer_early_checks,
        })
    }

    pub fn rtc_ice_servers(&self) -> Vec<RTCIceServer> {
        self.ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Whether any address the connections bind is a loopback address.
    fn binds_loopback(&self) -> bool {
        self.loopback_only
            || self
                .bind_addresses
                .iter()
                .any(|a| a.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false))
    }

    pub fn setting_engine(&self) -> SettingEngine {
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        let mdns = match self.mdns {
            Mdns::Disabled => MulticastDnsMode::Disabled,
            Mdns::QueryOnly => MulticastDnsMode::QueryOnly,
            Mdns::QueryAndGather => MulticastDnsMode::QueryAndGather,
        };
        let dtls_role = match self.answering_dtls_role {
            DtlsRole::Auto => RTCDtlsRole::Unspecified,
            DtlsRole::Client => RTCDtlsRole::Client,
            DtlsRole::Server => RTCDtlsRole::Server,
        };
        let mut builder = SettingEngineBuilder::new()
            .with_multicast_dns_mode(mdns)
            .with_answering_dtls_role(dtls_role)
            .with_include_loopback_candidate(self.binds_loopback())
            .with_prflx_acceptance_min_wait(ms(self.ice_prflx_acceptance_wait))
            .with_ice_connection_attempts(
                ms(self.ice_check_interval),
                self.ice_max_binding_requests,
            )
            .with_sctp_max_receive_buffer_size(self.sctp_receive_buffer);
        if self.ice_disconnected_timeout.is_some()
            || self.ice_failed_timeout.is_some()
            || self.ice_keepalive_interval.is_some()
        {
            builder = builder.with_ice_timeouts(
                ms(self.ice_disconnected_timeout),
                ms(self.ice_failed_timeout),
                ms(self.ice_keepalive_interval),
            );
        }
        builder.build()
    }

    /// The IP addresses connections bind, before a port is chosen.
    pub fn bind_ips(&self) -> Vec<std::net::IpAddr> {
        let parsed: Vec<std::net::IpAddr> =
            self.bind_addresses.iter().filter_map(|a| a.parse().ok()).collect();
        if !parsed.is_empty() {
            parsed
        } else if self.loopback_only {
            vec![std::net::IpAddr::from([127, 0, 0, 1])]
        } else {
            vec![std::net::IpAddr::from([0, 0, 0, 0])]
        }
    }
}
