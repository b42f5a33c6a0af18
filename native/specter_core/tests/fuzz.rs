//! Bounded, deterministic fuzzing of every parser `specter_core` owns or feeds untrusted bytes
//! to: session descriptions and ICE candidates (`signalling`), IVF / Ogg Opus / H.264 Annex-B
//! files (`media`), RTCP packets as the NIF describes them (`rtcp`), RTP packets (what
//! `TrackLocalStaticRTP.write_rtp` unmarshals), the recording helpers (`SeqWindow`,
//! `IvfRecorder`, `repair_ogg_tail`).
//!
//! Each target mutates valid seeds (bit flips, byte changes, truncation, insertion, deletion,
//! duplication, splicing with another seed, runs of random bytes) with a xorshift PRNG, so a
//! failure is reproducible from the iteration number printed in the panic message. Every
//! target asserts no panic plus an invariant: a round trip where a serialiser exists, a
//! reference model for `SeqWindow`, structural bounds elsewhere.
//!
//! `FUZZ_ITERS` overrides the iteration count per target (default 20 000).

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::rc::Rc;

use rtc::media::io::Writer;
use rtc::rtcp;
use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use serde_json::{json, Value};
use specter_core::media::{self, MediaError};
use specter_core::recording::{guard_parser, repair_ogg_tail, IvfCodec, IvfRecorder, SeqWindow};
use specter_core::signalling::{self, SignallingError};

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000)
}

/// Applies 1..=4 random mutations to `buf`; `others` are splice partners.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, others: &[&[u8]]) {
    for _ in 0..=rng.below(4) {
        let len = buf.len();
        match rng.below(9) {
            // flip one bit
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            // overwrite a byte, favouring the interesting values
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = *[0u8, 1, 0x7f, 0x80, 0xff, rng.byte()].get(rng.below(6)).unwrap_or(&0);
            }
            // truncate
            2 => buf.truncate(rng.below(len + 1)),
            // insert random bytes
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                buf.splice(at..at, bytes);
            }
            // delete a range
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                buf.drain(at..end);
            }
            // duplicate a range
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let copy = buf[at..end].to_vec();
                let to = rng.below(buf.len() + 1);
                buf.splice(to..to, copy);
            }
            // splice: our head, another seed's tail
            6 if !others.is_empty() => {
                let other = others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                buf.truncate(cut);
                buf.extend_from_slice(&other[from..]);
            }
            // overwrite a run with random bytes
            7 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(8)).min(len);
                for b in &mut buf[at..end] {
                    *b = rng.byte();
                }
            }
            // write a little-endian length field with an extreme value
            8 if len >= 4 => {
                let at = rng.below(len - 3);
                let v =
                    *[0u32, 1, 0xff, 0xffff, 0x7fff_ffff, u32::MAX].get(rng.below(6)).unwrap_or(&0);
                buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
}

/// Line-level mutations of SDP text: delete, duplicate, swap lines, or cut one short.
fn mutate_lines(rng: &mut Rng, sdp: &str) -> String {
    let mut lines: Vec<String> = sdp.split("\r\n").map(str::to_owned).collect();
    for _ in 0..=rng.below(3) {
        let n = lines.len();
        if n == 0 {
            break;
        }
        let i = rng.below(n);
        match rng.below(4) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(rng.below(n + 1), l);
            }
            2 => lines.swap(i, rng.below(n)),
            _ => {
                let l = &mut lines[i];
                let cut = rng.below(l.len() + 1);
                while !l.is_char_boundary(cut.min(l.len())) {
                    l.pop();
                }
                l.truncate(cut.min(l.len()));
            }
        }
    }
    lines.join("\r\n")
}

// ---------------------------------------------------------------------------------------
// signalling

const OFFER: &str = "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1 2\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\na=ssrc:1001 cname:abc\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\n\
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=setup:actpass\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=setup:actpass\r\na=mid:2\r\n\
a=sctp-port:5000\r\na=max-message-size:262144\r\na=end-of-candidates\r\n";

const CANDIDATES: &[&str] = &[
    "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "candidate:842163049 1 udp 1677729535 127.0.0.1 47021 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999",
    "candidate:3 1 tcp 1518280447 ::1 9 typ host tcptype active",
    "candidate:4 2 udp 41885439 127.0.0.1 3478 typ relay raddr 127.0.0.1 rport 50000",
    "candidate:5 1 udp 2122260223 fe80::1 50001 typ prflx raddr ::1 rport 9",
];

#[test]
fn fuzz_session_descriptions() {
    let mut rng = Rng::new(0x5d9_0001);
    let seeds: Vec<&[u8]> = vec![OFFER.as_bytes()];
    let types = ["offer", "answer", "pranswer", "rollback", "bogus"];
    for i in 0..iterations() {
        let sdp = if rng.chance(2) {
            mutate_lines(&mut rng, OFFER)
        } else {
            let mut b = OFFER.as_bytes().to_vec();
            mutate(&mut rng, &mut b, &seeds);
            String::from_utf8_lossy(&b).into_owned()
        };
        let typ = types[rng.below(types.len())];
        let value = json!({"type": typ, "sdp": sdp});
        let parsed = signalling::parse_description(&value);
        match (&parsed, typ) {
            (Err(SignallingError::InvalidCandidate(_)), _) => {
                panic!("iteration {i}: a description error called a candidate bad")
            }
            (Ok(_), "bogus") => panic!("iteration {i}: type bogus accepted"),
            _ => {}
        }
        // Whatever the SDP, these never panic and only report what the text has.
        if let Some((mid, _)) = signalling::candidate_context(&sdp) {
            assert!(sdp.contains(&format!("a=mid:{mid}")), "iteration {i}");
        }
        for (mid, kind) in signalling::media_kinds(&sdp) {
            assert!(sdp.contains(&format!("m={kind}")), "iteration {i}: {kind}");
            assert!(sdp.contains(&format!("a=mid:{mid}")), "iteration {i}: {mid}");
        }
        if let Ok(desc) = &parsed {
            // Nothing accepted carries media without DTLS.
            assert_eq!(signalling::insecure_media_section(&desc.sdp), None, "iteration {i}");
        }
        if let Ok(desc) = parsed {
            // Round trip: the JSON Specter sends parses back to the same description.
            for text in
                [signalling::description_json(&desc), signalling::applied_description_json(&desc)]
            {
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("iteration {i}: our own JSON: {e}"));
                assert_eq!(v["type"], json!(typ), "iteration {i}");
                if typ != "rollback" {
                    let again = signalling::parse_description(&v)
                        .unwrap_or_else(|e| panic!("iteration {i}: re-parse {e:?}"));
                    assert_eq!(again.sdp_type, desc.sdp_type, "iteration {i}");
                }
            }
            let v: Value = serde_json::from_str(&signalling::description_json(&desc)).unwrap();
            assert_eq!(v["sdp"].as_str(), Some(desc.sdp.as_str()), "iteration {i}");
            // Dropping gathered candidates removes exactly those lines.
            let applied: Value =
                serde_json::from_str(&signalling::applied_description_json(&desc)).unwrap();
            let applied = applied["sdp"].as_str().unwrap_or_default();
            assert!(!applied.contains("\na=candidate:"), "iteration {i}");
            assert!(applied.len() <= desc.sdp.len(), "iteration {i}");
        }
    }
}

/// Random JSON values of every shape, for the wrong-type branches.
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.chance(2)),
        2 => json!(rng.next() as i64),
        3 => json!((rng.next() as f64) / 3.0),
        4 => json!(-(rng.below(100_000) as i64)),
        5 => {
            let s: Vec<u8> = (0..rng.below(12)).map(|_| rng.byte()).collect();
            json!(String::from_utf8_lossy(&s))
        }
        6 => Value::Array((0..rng.below(3)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            m.insert("candidate".into(), random_value(rng, depth + 1));
            Value::Object(m)
        }
    }
}

#[test]
fn fuzz_candidates() {
    let mut rng = Rng::new(0xca_0002);
    let seeds: Vec<&[u8]> = CANDIDATES.iter().map(|c| c.as_bytes()).collect();
    let keys = [
        ("candidate", "candidate"),
        ("sdpMid", "sdp_mid"),
        ("sdpMLineIndex", "sdp_mline_index"),
        ("usernameFragment", "username_fragment"),
    ];
    for i in 0..iterations() {
        let mut c = seeds[rng.below(seeds.len())].to_vec();
        if !rng.chance(8) {
            mutate(&mut rng, &mut c, &seeds);
        }
        let text = String::from_utf8_lossy(&c).into_owned();
        let camel = rng.chance(2);
        let mut obj = serde_json::Map::new();
        for (k, (camel_key, snake_key)) in keys.iter().enumerate() {
            let key = if camel { *camel_key } else { *snake_key };
            let good = match k {
                0 => json!(text),
                1 => json!(rng.below(3).to_string()),
                2 => json!(rng.below(3)),
                _ => json!("EsAw"),
            };
            match rng.below(6) {
                0 => {}                                                       // absent
                1 => drop(obj.insert(key.into(), random_value(&mut rng, 0))), // wrong type
                2 => drop(obj.insert(key.into(), Value::Null)),
                _ => drop(obj.insert(key.into(), good)),
            }
        }
        let value = if rng.chance(20) { random_value(&mut rng, 0) } else { Value::Object(obj) };
        match signalling::parse_candidate(&value) {
            Ok(init) => {
                // Round trip through the browser's JSON shape.
                let back = serde_json::to_value(&init).expect("serialise RTCIceCandidateInit");
                let again = signalling::parse_candidate(&back)
                    .unwrap_or_else(|e| panic!("iteration {i}: {value} -> {back}: {e:?}"));
                assert_eq!(again, init, "iteration {i}");
                // Every accepted non-empty candidate is one the ICE parser accepts.
                if !init.candidate.is_empty() {
                    let body = init.candidate.strip_prefix("candidate:").unwrap_or(&init.candidate);
                    assert!(
                        rtc::ice::candidate::unmarshal_candidate(body).is_ok(),
                        "iteration {i}"
                    );
                }
            }
            Err(SignallingError::InvalidCandidate(_)) => {}
            Err(other) => panic!("iteration {i}: {value}: wrong error {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// media files

fn ivf(fourcc: &[u8; 4], frames: &[(u64, &[u8])], num: u32, den: u32) -> Vec<u8> {
    let mut out = b"DKIF".to_vec();
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&320u16.to_le_bytes());
    out.extend_from_slice(&240u16.to_le_bytes());
    out.extend_from_slice(&den.to_le_bytes());
    out.extend_from_slice(&num.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (ts, data) in frames {
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn ogg_page(flags: u8, granule: u64, seq: u32, packets: &[&[u8]]) -> Vec<u8> {
    let mut table = Vec::new();
    let mut body = Vec::new();
    for p in packets {
        let mut n = p.len();
        while n >= 255 {
            table.push(255u8);
            n -= 255;
        }
        table.push(n as u8);
        body.extend_from_slice(p);
    }
    let mut page = b"OggS".to_vec();
    page.push(0);
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&1u32.to_le_bytes());
    page.extend_from_slice(&seq.to_le_bytes());
    page.extend_from_slice(&0u32.to_le_bytes());
    page.push(table.len() as u8);
    page.extend_from_slice(&table);
    page.extend_from_slice(&body);
    page
}

fn ogg_opus() -> Vec<u8> {
    let head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";
    let tags = b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00";
    let big = vec![0xf8u8; 600];
    let mut f = ogg_page(2, 0, 0, &[head]);
    f.extend(ogg_page(0, 0, 1, &[tags]));
    f.extend(ogg_page(0, 960, 2, &[&[0xf8, 1, 2], &[0xfb, 0x03, 9]]));
    f.extend(ogg_page(0, 2880, 3, &[&[0x08, 3], &big]));
    f.extend(ogg_page(0, 3840, 4, &[&[0xf9]]));
    f
}

fn h264() -> Vec<u8> {
    let mut s = Vec::new();
    for (i, nal) in [
        &[0x09u8, 0xf0][..],
        &[0x67, 0x42, 0x00, 0x1f, 0xe9],
        &[0x68, 0xce, 0x3c, 0x80],
        &[0x06, 0x05, 0x01],
        &[0x65, 0x88, 0x84, 0x00],
        &[0x41, 0x9a, 0x01],
        &[0x41, 0x1a, 0x02, 0x00, 0x00],
        &[0x41, 0x9a, 0x03],
    ]
    .iter()
    .enumerate()
    {
        s.extend_from_slice(if i % 2 == 0 { &[0, 0, 0, 1][..] } else { &[0, 0, 1] });
        s.extend_from_slice(nal);
    }
    s
}

#[test]
fn fuzz_media_files() {
    let mut rng = Rng::new(0x3ed_1a03);
    let vp8 = ivf(b"VP80", &[(0, b"\x50\x02\x00key"), (1, b"a"), (3, b"bb")], 1, 30);
    let vp9 = ivf(b"VP90", &[(0, b"x"), (3000, b"y"), (6000, b"z")], 1, 90_000);
    let av1 = ivf(b"AV01", &[(0, b"\x12\x00\x0a")], 1001, 30_000);
    let ogg = ogg_opus();
    let h = h264();
    let seeds: Vec<&[u8]> = vec![&vp8, &vp9, &av1, &ogg, &h];
    for i in 0..iterations() {
        let mut b = seeds[rng.below(seeds.len())].to_vec();
        mutate(&mut rng, &mut b, &seeds);
        let fps = *[0u32, 1, 30, 240, u32::MAX].get(rng.below(5)).unwrap_or(&30);
        match media::parse(&b, fps) {
            Ok(file) => {
                let data: usize = file.frames.iter().map(|f| f.data.len()).sum();
                match file.mime_type.as_str() {
                    "video/VP8" | "video/VP9" | "video/AV1" => {
                        assert!(b.starts_with(b"DKIF"), "iteration {i}");
                        assert!(!file.frames.is_empty(), "iteration {i}");
                        assert!(32 + data + 12 * file.frames.len() <= b.len(), "iteration {i}");
                    }
                    "audio/opus" => {
                        assert!(!file.frames.is_empty(), "iteration {i}");
                        assert!(data <= b.len(), "iteration {i}");
                        assert!(file.frames.iter().all(|f| !f.data.is_empty()));
                        for f in &file.frames {
                            assert_eq!(f.duration, media::opus_duration(&f.data));
                        }
                    }
                    "video/H264" => {
                        // Access units are the NALs again, each behind a 4-byte start code.
                        let nals = media::h264_nals(&b);
                        let nal_bytes: usize = nals.iter().map(|n| n.len() + 4).sum();
                        assert!(data <= nal_bytes, "iteration {i}");
                        for f in &file.frames {
                            assert!(f.data.starts_with(&[0, 0, 0, 1]), "iteration {i}");
                        }
                    }
                    other => panic!("iteration {i}: unknown mime {other}"),
                }
            }
            Err(MediaError::UnknownFormat) => {
                assert!(!b.starts_with(b"DKIF") && !b.starts_with(b"OggS"), "iteration {i}");
            }
            Err(MediaError::Malformed(_) | MediaError::UnsupportedCodec(_)) => {}
        }
        // The lower-level helpers, on arbitrary bytes too.
        if let Ok(packets) = media::ogg_packets(&b) {
            assert!(packets.iter().map(Vec::len).sum::<usize>() <= b.len());
        }
        for nal in media::h264_nals(&b) {
            assert!(!nal.is_empty());
        }
        let _ = media::opus_duration(&b);
        if let Some((w, h)) = media::vp8_keyframe_size(&b) {
            assert!(w <= 0x3fff && h <= 0x3fff);
        }
    }
}

// ---------------------------------------------------------------------------------------
// RTP and RTCP

fn rtp_seed(ext: bool, csrc: usize, padding: u8) -> Vec<u8> {
    let mut p = rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: 4242,
            timestamp: 90_000,
            ssrc: 0xdead_beef,
            csrc: (0..csrc as u32).collect(),
            ..Default::default()
        },
        payload: vec![0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00].into(),
    };
    if ext {
        p.header.set_extension(1, bytes_of(&[0xaa])).expect("one-byte extension");
        p.header.set_extension(3, bytes_of(&[1, 2, 3])).expect("one-byte extension");
    }
    let mut raw = p.marshal().expect("marshal seed").to_vec();
    if padding > 0 {
        raw[0] |= 0x20;
        raw.extend(std::iter::repeat_n(0u8, usize::from(padding) - 1));
        raw.push(padding);
    }
    raw
}

fn bytes_of(b: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

#[test]
fn fuzz_rtp_packets() {
    let mut rng = Rng::new(0x0e7_0004);
    let seeds = [rtp_seed(false, 0, 0), rtp_seed(true, 2, 0), rtp_seed(false, 1, 4)];
    let refs: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    for i in 0..iterations() {
        let mut b = refs[rng.below(refs.len())].to_vec();
        mutate(&mut rng, &mut b, &refs);
        let Ok(pkt) = rtp::Packet::unmarshal(&mut b.as_slice()) else {
            continue;
        };
        // marshal(unmarshal(x)) unmarshals to the same packet.
        let Ok(again) = pkt.marshal() else {
            continue;
        };
        let back = rtp::Packet::unmarshal(&mut &again[..])
            .unwrap_or_else(|e| panic!("iteration {i}: {b:?}: re-parse {e}"));
        assert_eq!(back.header.sequence_number, pkt.header.sequence_number);
        assert_eq!(back.header.timestamp, pkt.header.timestamp);
        assert_eq!(back.header.ssrc, pkt.header.ssrc);
        assert_eq!(back.payload, pkt.payload, "iteration {i}");
    }
}

fn rtcp_seeds() -> Vec<Vec<u8>> {
    use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let report = ReceptionReport {
        ssrc: 7,
        fraction_lost: 3,
        total_lost: 9,
        last_sequence_number: 1000,
        jitter: 12,
        last_sender_report: 0,
        delay: 0,
    };
    let packets: Vec<Box<dyn rtcp::packet::Packet>> = vec![
        Box::new(SenderReport {
            ssrc: 1,
            ntp_time: 0x0102_0304_0506_0708,
            rtp_time: 90_000,
            packet_count: 10,
            octet_count: 1000,
            reports: vec![report.clone()],
            ..Default::default()
        }),
        Box::new(ReceiverReport {
            ssrc: 2,
            reports: vec![report.clone(), report],
            ..Default::default()
        }),
        Box::new(PictureLossIndication { sender_ssrc: 3, media_ssrc: 4 }),
        Box::new(FullIntraRequest {
            sender_ssrc: 3,
            media_ssrc: 4,
            fir: vec![FirEntry { ssrc: 4, sequence_number: 1 }],
        }),
        Box::new(TransportLayerNack {
            sender_ssrc: 3,
            media_ssrc: 4,
            nacks: vec![NackPair { packet_id: 65_530, lost_packets: 0b1010_0000_0000_0011 }],
        }),
        Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 3,
            bitrate: 1_500_000.0,
            ssrcs: vec![4, 5],
        }),
    ];
    let mut seeds: Vec<Vec<u8>> =
        packets.iter().map(|p| p.marshal().expect("marshal rtcp seed").to_vec()).collect();
    seeds.push(rtcp::packet::marshal(&packets).expect("compound").to_vec());
    seeds
}

#[test]
fn fuzz_rtcp_packets() {
    let mut rng = Rng::new(0x7c9_0005);
    let seeds = rtcp_seeds();
    let refs: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    // The seeds themselves describe as what they are.
    let described: Vec<_> = seeds
        .iter()
        .flat_map(|s| rtcp::packet::unmarshal(&mut s.as_slice()).expect("seed parses"))
        .filter_map(|p| specter_core::rtcp::describe(p.as_ref()))
        .collect();
    assert!(described.len() >= 12, "{described:?}");
    for i in 0..iterations() {
        let mut b = refs[rng.below(refs.len())].to_vec();
        mutate(&mut rng, &mut b, &refs);
        let Ok(packets) = rtcp::packet::unmarshal(&mut b.as_slice()) else {
            continue;
        };
        for p in &packets {
            let wanted = specter_core::rtcp::wanted(p.as_ref());
            let info = specter_core::rtcp::describe(p.as_ref());
            // What the tap lets through is exactly what the NIF can describe.
            assert_eq!(wanted, info.is_some(), "iteration {i}: {p:?}");
            if let Some(specter_core::rtcp::RtcpInfo::Nack { lost, .. }) = &info {
                assert!(!lost.is_empty() && lost.len() <= 17 * 256, "iteration {i}");
            }
            // Round trip: a packet that marshals again describes the same.
            if let Ok(raw) = p.marshal() {
                if let Ok(again) = rtcp::packet::unmarshal(&mut &raw[..]) {
                    let first =
                        again.first().and_then(|q| specter_core::rtcp::describe(q.as_ref()));
                    if info.is_some() && again.len() == 1 {
                        assert_eq!(first, info, "iteration {i}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// recording

/// The reference `SeqWindow` is checked against: every extended sequence number ever seen,
/// with the same "nearest rollover" extension and the same 1024-packet horizon.
struct SeqModel {
    highest: Option<u64>,
    seen: HashSet<u64>,
}

impl SeqModel {
    fn insert(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            let ext = u64::from(seq) + (1 << 16);
            self.highest = Some(ext);
            self.seen.insert(ext);
            return true;
        };
        let base = highest & !0xffff;
        let ext = [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
            .iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap();
        if ext > highest {
            self.highest = Some(ext);
            self.seen.insert(ext)
        } else if highest - ext >= 1024 {
            false
        } else {
            self.seen.insert(ext)
        }
    }
}

#[test]
fn fuzz_seq_window_against_a_model() {
    let mut rng = Rng::new(0x5e9_0006);
    for i in 0..(iterations() / 100).max(1) {
        let mut w = SeqWindow::new();
        let mut model = SeqModel { highest: None, seen: HashSet::new() };
        let mut seq: u16 = rng.next() as u16;
        for step in 0..1_000 {
            // Mostly in order with reordering, duplicates, jumps and wraps.
            let s = match rng.below(10) {
                0..=4 => {
                    seq = seq.wrapping_add(1);
                    seq
                }
                5 => seq.wrapping_sub(rng.below(40) as u16),
                6 => seq.wrapping_sub(rng.below(1100) as u16),
                7 => {
                    seq = seq.wrapping_add(rng.below(3000) as u16);
                    seq
                }
                8 => rng.next() as u16,
                _ => seq,
            };
            assert_eq!(w.insert(s), model.insert(s), "run {i} step {step}: seq {s}");
        }
    }
}

fn vp8_payload(rng: &mut Rng, start: bool, key: bool) -> Vec<u8> {
    let mut p = vec![if start { 0x10 } else { 0x00 }];
    if start && key {
        p.extend_from_slice(&[0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    } else if start {
        p.push(0x51);
    }
    p.extend((0..rng.below(20)).map(|_| rng.byte()));
    p
}

/// Reads an IVF file back: the header and every frame's `(pts, len)`.
fn ivf_frames(file: &[u8]) -> Vec<(u64, usize)> {
    assert!(file.len() >= 32 && file.starts_with(b"DKIF"));
    let mut out = Vec::new();
    let mut at = 32;
    while at < file.len() {
        assert!(at + 12 <= file.len(), "truncated frame header");
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        let pts = u64::from_le_bytes(file[at + 4..at + 12].try_into().unwrap());
        assert!(at + 12 + len <= file.len(), "frame overruns the file");
        out.push((pts, len));
        at += 12 + len;
    }
    out
}

#[test]
fn fuzz_ivf_recorder() {
    let mut rng = Rng::new(0x1f_0007);
    let codecs = [IvfCodec::Vp8, IvfCodec::Vp9, IvfCodec::Av1];
    for i in 0..(iterations() / 40).max(1) {
        let codec = codecs[rng.below(codecs.len())];
        let out = Shared::default();
        let mut rec = IvfRecorder::new(out.clone(), codec).expect("header");
        let mut seq: u16 = rng.next() as u16;
        let mut ts: u32 = rng.next() as u32;
        let mut written = 0u32;
        for _ in 0..60 {
            // A frame of 1..4 packets; sometimes lost, reordered, duplicated or mangled.
            let n = 1 + rng.below(4);
            let key = rng.chance(4);
            for k in 0..n {
                let mut payload = vp8_payload(&mut rng, k == 0, key);
                if codec != IvfCodec::Vp8 || rng.chance(10) {
                    mutate(&mut rng, &mut payload, &[]);
                }
                let pkt = rtp::Packet {
                    header: rtp::header::Header {
                        sequence_number: seq,
                        timestamp: ts,
                        marker: k + 1 == n,
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                seq = seq.wrapping_add(1);
                match rng.below(20) {
                    0 => continue, // lost
                    1 => {
                        let _ = rec.write_rtp(&pkt);
                    }
                    _ => {}
                }
                if rec.write_rtp(&pkt).is_err() {
                    panic!("iteration {i}: a writer error on a Vec");
                }
            }
            written = rec.frames();
            ts = ts.wrapping_add(if rng.chance(30) { rng.next() as u32 } else { 3000 });
        }
        rec.close().expect("close");
        assert_eq!(written, rec.frames());
        // The file reads back: whole frames, pts never going backwards.
        let file = out.0.borrow().get_ref().clone();
        let frames = ivf_frames(&file);
        assert_eq!(frames.len() as u32, written, "iteration {i}");
        assert!(frames.windows(2).all(|w| w[0].0 <= w[1].0), "iteration {i}");
        if written > 0 {
            assert_eq!(frames[0].0, 0, "iteration {i}: first frame at 0");
            let parsed = media::parse_ivf(&file)
                .unwrap_or_else(|e| panic!("iteration {i}: our own IVF: {e:?}"));
            assert_eq!(parsed.frames.len() as u32, written);
        }
    }
}

/// A writer the test keeps a handle on, since `IvfRecorder` owns the one it is given.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Cursor<Vec<u8>>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Shared {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.borrow_mut().seek(pos)
    }
}

#[test]
fn fuzz_repair_ogg_tail() {
    let mut rng = Rng::new(0x0cc_0008);
    let base = ogg_opus();
    // What webrtc-rs's OggWriter::close leaves: the last page again, with end-of-stream.
    let last = ogg_page(0, 3840, 4, &[&[0xf9]]);
    assert!(base.ends_with(&last));
    let mut broken = base.clone();
    let mut eos = last.clone();
    eos[5] |= 0x04;
    broken.extend_from_slice(&eos);
    let mut fixed = broken.clone();
    assert!(repair_ogg_tail(&mut fixed));
    assert_eq!(fixed.len(), broken.len() - last.len());
    assert_eq!(&fixed[fixed.len() - eos.len()..], &eos[..], "the end-of-stream page stays");
    assert!(!repair_ogg_tail(&mut fixed), "repair is idempotent");
    let seeds: Vec<&[u8]> = vec![&base, &broken];
    for i in 0..iterations() {
        let mut b = seeds[rng.below(seeds.len())].to_vec();
        mutate(&mut rng, &mut b, &seeds);
        let before = b.clone();
        if repair_ogg_tail(&mut b) {
            // Only ever one whole page is cut out, the stream still splits into pages, and
            // a second pass finds nothing more to do unless the page was doubled twice.
            assert!(b.len() < before.len(), "iteration {i}");
            assert!(before.starts_with(&b[..b.len().min(27)]) || b.len() < 27);
            assert!(media::ogg_packets(&b).is_ok(), "iteration {i}");
        } else {
            assert_eq!(b, before, "iteration {i}: changed without saying so");
        }
    }
}

/// The writers the NIF records Opus and H.264 with are webrtc-rs's; the NIF calls them
/// through `guard_parser`, exactly as here. Random and mutated payloads must cost at most
/// the packet (an `Err`), and the writer must keep working afterwards.
#[test]
fn fuzz_webrtc_rs_writers_through_the_guard() {
    use rtc::media::io::h26x_writer::H26xWriter;
    use rtc::media::io::ogg_writer::OggWriter;
    let mut rng = Rng::new(0x4_0009);
    let h264_seeds: Vec<Vec<u8>> = vec![
        vec![0x67, 0x42, 0x00, 0x1f], // single NAL (SPS)
        vec![0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce], // STAP-A
        vec![0x7c, 0x85, 0x88, 0x84, 0x00], // FU-A start of an IDR
        vec![0x7c, 0x45, 0x01, 0x02], // FU-A end
    ];
    let opus_seeds: Vec<Vec<u8>> = vec![vec![0xf8, 1, 2, 3], vec![0xfc, 0xff, 0xfe]];
    let h_refs: Vec<&[u8]> = h264_seeds.iter().map(Vec::as_slice).collect();
    let o_refs: Vec<&[u8]> = opus_seeds.iter().map(Vec::as_slice).collect();
    let mut h264 = H26xWriter::new(Shared::default(), false);
    let mut ogg = OggWriter::new(Shared::default(), 48_000, 2).expect("ogg header");
    let mut refused = 0usize;
    for i in 0..iterations() {
        let (refs, writer): (&[&[u8]], &mut dyn Writer) =
            if rng.chance(2) { (&h_refs, &mut h264) } else { (&o_refs, &mut ogg) };
        let mut payload = refs[rng.below(refs.len())].to_vec();
        mutate(&mut rng, &mut payload, refs);
        let pkt = rtp::Packet {
            header: rtp::header::Header {
                sequence_number: i as u16,
                timestamp: (i as u32).wrapping_mul(960),
                marker: rng.chance(3),
                ..Default::default()
            },
            payload: payload.into(),
        };
        if guard_parser(|| writer.write_rtp(&pkt)).is_err() {
            refused += 1;
        }
    }
    // Still usable: a valid packet after all that is written.
    let good = rtp::Packet {
        header: rtp::header::Header::default(),
        payload: bytes::Bytes::from_static(&[0x67, 0x42, 0x00, 0x1f]),
    };
    assert!(guard_parser(|| h264.write_rtp(&good)).is_ok());
    assert!(refused < iterations(), "everything refused: the seeds are wrong");
    h264.close().expect("close h264");
    ogg.close().expect("close ogg");
}

/// `guard_parser` turns a panic into an error and passes results through.
#[test]
fn guard_parser_contains_panics() {
    assert_eq!(guard_parser(|| Ok(7)).ok(), Some(7));
    let v: Vec<u8> = vec![1];
    let r: rtc::shared::error::Result<u8> = guard_parser(|| Ok(v[v.len() + 1]));
    assert!(r.is_err());
}
