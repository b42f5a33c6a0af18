//! What crosses the NIF as JSON: session descriptions and ICE candidates.
//!
//! Inputs arrive as `serde_json::Value`s (parsed from JSON text or converted from Elixir
//! maps by the NIF), so every parser here is pure and fuzzable.

use serde_json::Value;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCSdpType, RTCSessionDescription};

/// Why a signalling input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignallingError {
    /// Not an object with a known `type` and an `sdp` string.
    InvalidSessionDescription,
    /// SDP that webrtc-rs could not parse.
    InvalidSdp(String),
    /// A candidate that could not be parsed.
    InvalidCandidate(String),
}

/// The transport protocols a media section may use: DTLS-SRTP for RTP, DTLS for SCTP.
/// webrtc-rs 0.21.1 applies an offer whose sections say `RTP/AVP` (plain RTP) or `RTP/SAVP`
/// (SDES keys in the SDP) as if they said `UDP/TLS/RTP/SAVPF`; Specter refuses them instead
/// of answering something the remote did not offer.
pub const SECURE_PROTOCOLS: &[&str] = &[
    "UDP/TLS/RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "TCP/TLS/RTP/SAVPF",
    "TCP/DTLS/RTP/SAVPF",
    "UDP/DTLS/SCTP",
    "TCP/DTLS/SCTP",
    "DTLS/SCTP",
];

/// The first media section (`m=` line) of `sdp` whose transport is not DTLS-protected, as
/// `(kind, protocol)`. A rejected section (port 0) carries nothing and is not checked.
pub fn insecure_media_section(sdp: &str) -> Option<(String, String)> {
    sdp.lines().find_map(|line| {
        let m = line.trim_end().strip_prefix("m=")?;
        let mut fields = m.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let port = fields.next().unwrap_or_default();
        let proto = fields.next().unwrap_or_default();
        let rejected = port.split('/').next() == Some("0");
        let secure = SECURE_PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(proto));
        (!secure && !rejected).then(|| (kind.to_owned(), proto.to_owned()))
    })
}

/// Parses `{"type": "offer" | "answer" | "pranswer" | "rollback", "sdp": "..."}`, checking
/// the SDP parses and that every media section is DTLS-protected (see
/// [`insecure_media_section`]).
pub fn parse_description(value: &Value) -> Result<RTCSessionDescription, SignallingError> {
    let obj = value.as_object().ok_or(SignallingError::InvalidSessionDescription)?;
    let typ = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or(SignallingError::InvalidSessionDescription)?;
    let sdp = obj.get("sdp").and_then(Value::as_str);
    if let Some((kind, proto)) = sdp.and_then(insecure_media_section) {
        return Err(SignallingError::InvalidSdp(format!(
            "m={kind} uses {proto}: only DTLS-SRTP (UDP/TLS/RTP/SAVPF) and DTLS/SCTP are \
             accepted"
        )));
    }
    let parsed = match (typ, sdp) {
        ("offer", Some(sdp)) => RTCSessionDescription::offer(sdp.to_owned()),
        ("answer", Some(sdp)) => RTCSessionDescription::answer(sdp.to_owned()),
        ("pranswer", Some(sdp)) => RTCSessionDescription::pranswer(sdp.to_owned()),
        ("rollback", sdp) => RTCSessionDescription::rollback(sdp.map(str::to_owned)),
        _ => return Err(SignallingError::InvalidSessionDescription),
    };
    parsed.map_err(|e| SignallingError::InvalidSdp(e.to_string()))
}

/// Parses an ICE candidate in the browser's `RTCIceCandidateInit` JSON (`candidate`,
/// `sdpMid`, `sdpMLineIndex`, `usernameFragment`) or Specter 0.5's snake_case keys. An
/// empty `candidate` is the end-of-candidates marker and is accepted.
pub fn parse_candidate(value: &Value) -> Result<RTCIceCandidateInit, SignallingError> {
    let obj = value
        .as_object()
        .ok_or_else(|| SignallingError::InvalidCandidate("expected an object".into()))?;
    let field = |camel: &str, snake: &str| {
        obj.get(camel).filter(|v| !v.is_null()).or_else(|| obj.get(snake).filter(|v| !v.is_null()))
    };
    let bad = |what: &str| SignallingError::InvalidCandidate(format!("bad {what}"));
    let candidate = field("candidate", "candidate")
        .ok_or_else(|| SignallingError::InvalidCandidate("missing candidate".into()))?
        .as_str()
        .ok_or_else(|| bad("candidate"))?
        .to_owned();
    let sdp_mid = match field("sdpMid", "sdp_mid") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| bad("sdpMid"))?.to_owned()),
    };
    let sdp_mline_index = match field("sdpMLineIndex", "sdp_mline_index") {
        None => None,
        Some(v) => Some(
            v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| bad("sdpMLineIndex"))?,
        ),
    };
    let username_fragment = match field("usernameFragment", "username_fragment") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| bad("usernameFragment"))?.to_owned()),
    };
    if !candidate.is_empty() {
        let body = candidate.strip_prefix("candidate:").unwrap_or(&candidate);
        rtc::ice::candidate::unmarshal_candidate(body)
            .map_err(|e| SignallingError::InvalidCandidate(e.to_string()))?;
    }
    Ok(RTCIceCandidateInit { candidate, sdp_mid, sdp_mline_index, username_fragment, url: None })
}

/// The first media section's mid and the ICE ufrag of a description: what a browser needs on
/// a trickled candidate under BUNDLE.
pub fn candidate_context(sdp: &str) -> Option<(String, Option<String>)> {
    let mut mid = None;
    let mut ufrag = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if mid.is_none() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            }
        }
        if ufrag.is_none() {
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                ufrag = Some(u.to_owned());
            }
        }
    }
    mid.map(|m| (m, ufrag))
}

/// Whether a remote candidate belongs to the transport a connection actually uses, given the
/// remote description's SDP: component 1 (RTCP is always multiplexed), and, when the
/// description bundles its media sections (`a=group:BUNDLE`), the BUNDLE-tag section (the
/// group's first mid, RFC 8843 §7; named by `sdpMid`, or by `sdpMLineIndex` when the mid is
/// absent). A candidate with neither is taken as the tag's.
pub fn on_bundle_transport(sdp: &str, candidate: &RTCIceCandidateInit) -> bool {
    let body = candidate.candidate.strip_prefix("candidate:").unwrap_or(&candidate.candidate);
    if body.split_whitespace().nth(1).is_some_and(|component| component != "1") {
        return false;
    }
    let Some(tag) = sdp.lines().find_map(|l| {
        l.trim_end().strip_prefix("a=group:BUNDLE").and_then(|g| g.split_whitespace().next())
    }) else {
        return true;
    };
    match (&candidate.sdp_mid, candidate.sdp_mline_index) {
        (Some(mid), _) if !mid.is_empty() => mid == tag,
        (_, Some(index)) => {
            media_kinds(sdp).iter().position(|(mid, _)| mid == tag) == Some(usize::from(index))
        }
        _ => true,
    }
}

/// The kind (`"audio"`, `"video"`, `"application"`) of each media section, by mid.
pub fn media_kinds(sdp: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind: Option<&str> = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            kind = m.split(' ').next();
        } else if let (Some(k), Some(mid)) = (kind, line.strip_prefix("a=mid:")) {
            out.push((mid.to_owned(), k.to_owned()));
            kind = None;
        }
    }
    out
}

/// Serialized exactly as `RTCSessionDescription` is: `{"type":...,"sdp":...}`.
#[derive(serde::Serialize)]
struct DescriptionJson<'a> {
    #[serde(rename = "type")]
    sdp_type: RTCSdpType,
    sdp: &'a str,
}

/// JSON of a description.
pub fn description_json(desc: &RTCSessionDescription) -> String {
    serde_json::to_string(&DescriptionJson { sdp_type: desc.sdp_type, sdp: &desc.sdp })
        .unwrap_or_default()
}

/// JSON of a local description as W3C's `localDescription` shows it: with every candidate
/// gathered so far and `a=end-of-candidates` once gathering is complete (webrtc-rs 0.21.1
/// adds both to the first media section, the BUNDLE transport).
///
/// webrtc-rs also writes each candidate a second time as component 2 (RTCP). Its connections
/// always multiplex RTCP on the RTP port (`a=rtcp-mux`, the only policy it implements), so
/// those lines name a component that does not exist; they are dropped (RFC 8839 §5.1: with
/// RTCP multiplexing only component 1 is gathered).
pub fn local_description_json(desc: &RTCSessionDescription) -> String {
    let is_rtcp_candidate = |line: &str| {
        line.strip_prefix("a=candidate:").and_then(|rest| rest.split_whitespace().nth(1))
            == Some("2")
    };
    if !desc.sdp.lines().any(is_rtcp_candidate) {
        return description_json(desc);
    }
    let sdp: String = desc.sdp.split_inclusive('\n').filter(|l| !is_rtcp_candidate(l)).collect();
    serde_json::to_string(&DescriptionJson { sdp_type: desc.sdp_type, sdp: &sdp })
        .unwrap_or_default()
}

/// JSON of a local description without the candidate lines webrtc-rs adds once it has
/// gathered: the description as it was applied.
pub fn applied_description_json(desc: &RTCSessionDescription) -> String {
    if !desc.sdp.contains("a=candidate:") && !desc.sdp.contains("a=end-of-candidates") {
        return description_json(desc);
    }
    let sdp: String = desc
        .sdp
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=candidate:") && !l.starts_with("a=end-of-candidates"))
        .collect();
    serde_json::to_string(&DescriptionJson { sdp_type: desc.sdp_type, sdp: &sdp })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn media_kinds_by_mid() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=mid:v1\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        assert_eq!(
            super::media_kinds(sdp),
            vec![
                ("0".to_owned(), "audio".to_owned()),
                ("v1".to_owned(), "video".to_owned()),
                ("2".to_owned(), "application".to_owned())
            ]
        );
        assert!(super::media_kinds("garbage\na=mid:x").is_empty());
    }

    use super::*;
    use serde_json::json;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n";

    #[test]
    fn descriptions_of_every_type_parse() {
        for typ in ["offer", "answer", "pranswer"] {
            let d = parse_description(&json!({"type": typ, "sdp": SDP})).expect(typ);
            assert_eq!(d.sdp, SDP);
        }
        assert!(parse_description(&json!({"type": "rollback"})).is_ok());
    }

    #[test]
    fn malformed_descriptions_are_refused() {
        for v in [
            json!("offer"),
            json!({"type": "offer"}),
            json!({"sdp": SDP}),
            json!({"type": "bogus", "sdp": SDP}),
            json!({"type": 1, "sdp": SDP}),
        ] {
            assert_eq!(
                parse_description(&v).unwrap_err(),
                SignallingError::InvalidSessionDescription,
                "{v}"
            );
        }
        assert!(matches!(
            parse_description(&json!({"type": "offer", "sdp": "not sdp"})),
            Err(SignallingError::InvalidSdp(_))
        ));
    }

    #[test]
    fn candidates_parse_in_both_casings() {
        let c = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host";
        let browser =
            json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "u"});
        let snake =
            json!({"candidate": c, "sdp_mid": "0", "sdp_mline_index": 0, "username_fragment": "u"});
        let a = parse_candidate(&browser).unwrap();
        let b = parse_candidate(&snake).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sdp_mid.as_deref(), Some("0"));
        assert_eq!(a.sdp_mline_index, Some(0));
        assert_eq!(a.username_fragment.as_deref(), Some("u"));
        // nulls are absent values; end-of-candidates is an empty string
        let eoc = parse_candidate(&json!({"candidate": "", "sdpMid": null})).unwrap();
        assert!(eoc.candidate.is_empty() && eoc.sdp_mid.is_none());
    }

    #[test]
    fn malformed_candidates_are_refused() {
        for v in [
            json!([]),
            json!({}),
            json!({"candidate": 5}),
            json!({"candidate": "candidate:garbage"}),
            json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMLineIndex": -1}),
            json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMLineIndex": 70000}),
            json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMid": 3}),
        ] {
            assert!(
                matches!(parse_candidate(&v), Err(SignallingError::InvalidCandidate(_))),
                "{v}"
            );
        }
    }

    #[test]
    fn media_without_dtls_is_refused() {
        let audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n";
        let secure = format!("{SDP}{audio}");
        assert!(parse_description(&json!({"type": "offer", "sdp": secure})).is_ok());
        for proto in ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/SCTP", ""] {
            let sdp = secure.replace("UDP/TLS/RTP/SAVPF", proto);
            assert!(
                matches!(
                    parse_description(&json!({"type": "answer", "sdp": sdp})),
                    Err(SignallingError::InvalidSdp(d)) if d.contains("m=audio")
                ),
                "{proto:?}"
            );
        }
        // A rejected section carries nothing, whatever it says.
        let rejected = format!("{SDP}m=audio 0 RTP/AVP 0\r\n");
        assert_eq!(insecure_media_section(&rejected), None);
        assert!(parse_description(&json!({"type": "offer", "sdp": rejected})).is_ok());
    }

    #[test]
    fn candidate_context_is_first_mid_and_ufrag() {
        assert_eq!(candidate_context(SDP), Some(("0".to_owned(), Some("abcd".to_owned()))));
        assert_eq!(candidate_context("v=0\r\n"), None);
    }

    #[test]
    fn applied_description_drops_gathered_candidates_only() {
        let with = format!(
            "{SDP}a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
        );
        let d = parse_description(&json!({"type": "offer", "sdp": with})).unwrap();
        let original = parse_description(&json!({"type": "offer", "sdp": SDP})).unwrap();
        assert_eq!(applied_description_json(&d), description_json(&original));
        assert_eq!(description_json(&original), serde_json::to_string(&original).unwrap());
    }

    #[test]
    fn local_description_keeps_rtp_candidates_and_end_of_candidates() {
        let with = format!(
            "{SDP}a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
             a=candidate:1 2 udp 2130706431 127.0.0.1 5000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
        let d = parse_description(&json!({"type": "offer", "sdp": with})).unwrap();
        let json = local_description_json(&d);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sdp = v["sdp"].as_str().unwrap();
        assert!(sdp.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"));
        assert!(!sdp.contains("a=candidate:1 2 "));
        assert!(sdp.ends_with("a=end-of-candidates\r\n"));
        assert_eq!(v["type"], "offer");
        // Nothing to drop: the description's own JSON.
        let plain = parse_description(&json!({"type": "answer", "sdp": SDP})).unwrap();
        assert_eq!(local_description_json(&plain), description_json(&plain));
    }

    #[test]
    fn only_component_1_of_the_bundle_tag_is_on_the_transport() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1 2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=application 9 UDP/DTLS/SCTP x\r\na=mid:2\r\n";
        let cand = |c: &str, mid: Option<&str>, index: Option<u16>| RTCIceCandidateInit {
            candidate: format!("candidate:1 {c} udp 2122252543 127.0.0.1 5000 typ host"),
            sdp_mid: mid.map(str::to_owned),
            sdp_mline_index: index,
            username_fragment: None,
            url: None,
        };
        assert!(on_bundle_transport(sdp, &cand("1", Some("0"), Some(0))));
        assert!(!on_bundle_transport(sdp, &cand("2", Some("0"), Some(0))));
        assert!(!on_bundle_transport(sdp, &cand("1", Some("1"), Some(1))));
        assert!(!on_bundle_transport(sdp, &cand("1", None, Some(2))));
        assert!(on_bundle_transport(sdp, &cand("1", None, Some(0))));
        assert!(on_bundle_transport(sdp, &cand("1", None, None)));
        // Not bundled: every section has its own transport; only the component matters.
        let unbundled = sdp.replace("a=group:BUNDLE 0 1 2\r\n", "");
        assert!(on_bundle_transport(&unbundled, &cand("1", Some("1"), Some(1))));
    }

    /// Bounded fuzz: random mutations of valid inputs never panic.
    #[test]
    fn mutated_inputs_never_panic() {
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let cand = "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".as_bytes().to_vec();
        for _ in 0..20_000 {
            let mut sdp = SDP.as_bytes().to_vec();
            let mut c = cand.clone();
            for buf in [&mut sdp, &mut c] {
                for _ in 0..(next() % 6) {
                    let i = (next() as usize) % buf.len().max(1);
                    match next() % 3 {
                        0 if !buf.is_empty() => {
                            buf.remove(i.min(buf.len() - 1));
                        }
                        1 => buf.insert(i.min(buf.len()), (next() % 256) as u8),
                        _ if !buf.is_empty() => {
                            let j = i.min(buf.len() - 1);
                            buf[j] = (next() % 256) as u8;
                        }
                        _ => {}
                    }
                }
            }
            let sdp = String::from_utf8_lossy(&sdp).into_owned();
            let c = String::from_utf8_lossy(&c).into_owned();
            let _ = parse_description(&json!({"type": "offer", "sdp": sdp}));
            let _ = parse_candidate(&json!({"candidate": c, "sdpMid": "0"}));
            let _ = candidate_context(&sdp);
        }
    }
}
