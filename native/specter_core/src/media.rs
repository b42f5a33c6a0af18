//! Media files played into local tracks: IVF (VP8, VP9, AV1), Ogg Opus and H.264 Annex-B,
//! read whole from memory into samples with the duration each one lasts.
//!
//! Pure functions over bytes, so they are unit-tested and fuzzed in `cargo test`.

use std::time::Duration;

/// One encoded frame and how long it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    pub duration: Duration,
}

/// What a file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The codec's MIME type: `video/VP8`, `video/VP9`, `video/AV1`, `audio/opus`, `video/H264`.
    pub mime_type: String,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// Neither IVF, Ogg nor H.264 Annex-B.
    UnknownFormat,
    /// The container is damaged; carries what was wrong.
    Malformed(String),
    /// A codec the file's container names but Specter cannot play.
    UnsupportedCodec(String),
}

/// Parses a file by its magic bytes. `fps` paces H.264, which carries no timing.
pub fn parse(bytes: &[u8], fps: u32) -> Result<MediaFile, MediaError> {
    if bytes.starts_with(b"DKIF") {
        parse_ivf(bytes)
    } else if bytes.starts_with(b"OggS") {
        parse_ogg_opus(bytes)
    } else if bytes.starts_with(&[0, 0, 0, 1]) || bytes.starts_with(&[0, 0, 1]) {
        Ok(MediaFile { mime_type: "video/H264".into(), frames: h264_access_units(bytes, fps) })
    } else {
        Err(MediaError::UnknownFormat)
    }
}

/// IVF: a 32-byte header (fourcc, timebase) and frames with timestamps in timebase units.
pub fn parse_ivf(bytes: &[u8]) -> Result<MediaFile, MediaError> {
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 32 {
        return Err(MediaError::Malformed("truncated IVF header".into()));
    }
    let header_size = usize::from(u16_at(6)).max(32);
    let mime_type = match &bytes[8..12] {
        b"VP80" => "video/VP8",
        b"VP90" => "video/VP9",
        b"AV01" => "video/AV1",
        other => {
            return Err(MediaError::UnsupportedCodec(String::from_utf8_lossy(other).into_owned()))
        }
    };
    let (den, num) = (u32_at(16), u32_at(20));
    if den == 0 || num == 0 {
        return Err(MediaError::Malformed("timebase with a zero".into()));
    }
    let unit = Duration::from_secs_f64(f64::from(num) / f64::from(den));
    let mut raw: Vec<(u64, &[u8])> = Vec::new();
    let mut pos = header_size;
    while pos + 12 <= bytes.len() {
        let size = u32_at(pos) as usize;
        let ts = u64::from(u32_at(pos + 4)) | (u64::from(u32_at(pos + 8)) << 32);
        let start = pos + 12;
        let Some(end) = start.checked_add(size).filter(|&e| e <= bytes.len()) else {
            return Err(MediaError::Malformed(format!("frame at byte {pos} overruns the file")));
        };
        raw.push((ts, &bytes[start..end]));
        pos = end;
    }
    if raw.is_empty() {
        return Err(MediaError::Malformed("no frames".into()));
    }
    let mut frames = Vec::with_capacity(raw.len());
    let mut last = unit;
    for i in 0..raw.len() {
        let duration = match raw.get(i + 1) {
            Some((next, _)) if *next > raw[i].0 => {
                let ticks = (next - raw[i].0).min(1 << 20);
                unit.saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX))
            }
            _ => last,
        };
        last = duration;
        frames.push(Frame { data: raw[i].1.to_vec(), duration });
    }
    Ok(MediaFile { mime_type: mime_type.into(), frames })
}

/// The packets of an Ogg stream, split by the pages' segment tables (a page may hold
/// several packets, and a packet may span pages).
pub fn ogg_packets(bytes: &[u8]) -> Result<Vec<Vec<u8>>, MediaError> {
    let mut packets = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let page = &bytes[pos..];
        if page.len() < 27 || &page[..4] != b"OggS" {
            return Err(MediaError::Malformed(format!("no page at byte {pos}")));
        }
        let segments = usize::from(page[26]);
        let table_end = 27 + segments;
        if page.len() < table_end {
            return Err(MediaError::Malformed("truncated segment table".into()));
        }
        let table = &page[27..table_end];
        let body_len: usize = table.iter().map(|&s| usize::from(s)).sum();
        if page.len() < table_end + body_len {
            return Err(MediaError::Malformed("truncated page".into()));
        }
        let mut off = table_end;
        for &lace in table {
            let lace = usize::from(lace);
            partial.extend_from_slice(&page[off..off + lace]);
            off += lace;
            if lace < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pos += table_end + body_len;
    }
    Ok(packets)
}

/// How long an Opus packet plays (RFC 6716 §3.1: its TOC byte and frame count code).
pub fn opus_duration(packet: &[u8]) -> Duration {
    let Some(&toc) = packet.first() else {
        return Duration::ZERO;
    };
    let config = toc >> 3;
    let frame_us: u64 = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][usize::from(config % 4)],
        12..=15 => [10_000, 20_000][usize::from(config % 2)],
        _ => [2_500, 5_000, 10_000, 20_000][usize::from(config % 4)],
    };
    let frames: u64 = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map(|b| u64::from(b & 0x3f)).unwrap_or(1),
    };
    Duration::from_micros(frame_us * frames)
}

/// Ogg Opus: the packets after `OpusHead` and `OpusTags`, each with its duration.
pub fn parse_ogg_opus(bytes: &[u8]) -> Result<MediaFile, MediaError> {
    let packets = ogg_packets(bytes)?;
    match packets.first() {
        Some(head) if head.starts_with(b"OpusHead") => {}
        Some(_) => return Err(MediaError::UnsupportedCodec("Ogg without Opus".into())),
        None => return Err(MediaError::Malformed("no packets".into())),
    }
    let frames: Vec<Frame> = packets
        .into_iter()
        .skip(1)
        .filter(|p| !p.starts_with(b"OpusTags") && !p.is_empty())
        .map(|p| Frame { duration: opus_duration(&p), data: p })
        .collect();
    if frames.is_empty() {
        return Err(MediaError::Malformed("no audio packets".into()));
    }
    Ok(MediaFile { mime_type: "audio/opus".into(), frames })
}

/// NAL units of an Annex-B stream (without start codes).
pub fn h264_nals(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i] == 0 && bytes[i + 1] == 0 && bytes[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map(|&s| s - 3).unwrap_or(bytes.len());
        // A four-byte start code leaves a zero behind the previous NAL.
        while end > start && bytes[end - 1] == 0 && starts.get(n + 1).is_some() {
            end -= 1;
        }
        if end > start {
            nals.push(&bytes[start..end]);
        }
    }
    nals
}

/// Groups NAL units into access units (a new one starts at an access unit delimiter, a
/// parameter set or SEI after a picture, or a slice whose `first_mb_in_slice` is 0), each
/// as an Annex-B sample lasting `1/fps`.
pub fn h264_access_units(bytes: &[u8], fps: u32) -> Vec<Frame> {
    let duration = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    let mut frames = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has_picture = false;
    for nal in h264_nals(bytes) {
        let nal_type = nal[0] & 0x1f;
        let is_slice = nal_type == 1 || nal_type == 5;
        // first_mb_in_slice is the first ue(v) of the slice header: a leading 1 bit means 0.
        let first_slice = is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let starts_new = has_picture && (matches!(nal_type, 6..=9) || first_slice);
        if starts_new {
            frames.push(Frame { data: std::mem::take(&mut current), duration });
            has_picture = false;
        }
        current.extend_from_slice(&[0, 0, 0, 1]);
        current.extend_from_slice(nal);
        has_picture |= is_slice;
    }
    if !current.is_empty() && has_picture {
        frames.push(Frame { data: current, duration });
    }
    frames
}

/// The frame size in the first packet of a VP8 keyframe sent over RTP (RFC 7741): skips the
/// payload descriptor, then reads the keyframe header's start code and 14-bit dimensions.
/// `None` for any other packet.
pub fn vp8_keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return None;
    }
    let mut at = 1;
    if extended {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let m = *payload.get(at)? & 0x80 != 0;
            at += if m { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    let frame = payload.get(at..)?;
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    #[test]
    fn vp8_keyframe_size_reads_the_keyframe_header() {
        // Descriptor with X, S and a 15-bit picture id; frame tag of a keyframe; 320x240.
        let pkt =
            [0x90, 0x80, 0x80, 0x01, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert_eq!(super::vp8_keyframe_size(&pkt), Some((320, 240)));
        // Same without the extension.
        let plain = [0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        assert_eq!(super::vp8_keyframe_size(&plain), Some((320, 240)));
        // An interframe (low bit of the tag set), a continuation, junk and nothing.
        let mut inter = plain;
        inter[1] |= 1;
        assert_eq!(super::vp8_keyframe_size(&inter), None);
        assert_eq!(super::vp8_keyframe_size(&[0x00, 0x50]), None);
        assert_eq!(super::vp8_keyframe_size(&[0x90, 0xff]), None);
        assert_eq!(super::vp8_keyframe_size(&[]), None);
    }

    use super::*;

    fn ivf(frames: &[(u64, &[u8])], num: u32, den: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"DKIF");
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(b"VP80");
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

    fn ogg_page(granule: u64, seq: u32, packets: &[&[u8]]) -> Vec<u8> {
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
        page.push(0);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&1u32.to_le_bytes());
        page.extend_from_slice(&seq.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes());
        page.push(table.len() as u8);
        page.extend_from_slice(&table);
        page.extend_from_slice(&body);
        page
    }

    #[test]
    fn ivf_frames_last_until_the_next_timestamp() {
        let file = ivf(&[(0, b"a"), (1, b"bb"), (3, b"ccc")], 1, 30);
        let media = parse(&file, 30).unwrap();
        assert_eq!(media.mime_type, "video/VP8");
        let durations: Vec<u128> = media.frames.iter().map(|f| f.duration.as_millis()).collect();
        assert_eq!(durations, vec![33, 66, 66]);
        assert_eq!(media.frames[2].data, b"ccc");
    }

    #[test]
    fn ogg_pages_split_into_opus_packets() {
        // 20 ms CELT frames (config 31 << 3), one and two per page, and a long packet
        // spanning laces of 255.
        let head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";
        let tags = b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00";
        let big = vec![0xf8u8; 600];
        let mut file = ogg_page(0, 0, &[head]);
        file.extend(ogg_page(0, 1, &[tags]));
        file.extend(ogg_page(960, 2, &[&[0xf8, 1, 2]]));
        file.extend(ogg_page(2880, 3, &[&[0xf8, 3], &big]));
        let media = parse(&file, 30).unwrap();
        assert_eq!(media.mime_type, "audio/opus");
        assert_eq!(media.frames.len(), 3);
        assert_eq!(media.frames[2].data.len(), 600);
        assert!(media.frames.iter().all(|f| f.duration == Duration::from_millis(20)));
    }

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(opus_duration(&[0xf8]), Duration::from_millis(20)); // CELT FB 20 ms
        assert_eq!(opus_duration(&[0xf9]), Duration::from_millis(40)); // two frames
        assert_eq!(opus_duration(&[0x08]), Duration::from_millis(20)); // SILK NB 20 ms
        assert_eq!(opus_duration(&[0xfb, 0x03]), Duration::from_millis(60)); // code 3, 3 frames
    }

    #[test]
    fn h264_nals_group_into_access_units() {
        let mut stream = Vec::new();
        // SPS, PPS, IDR (first_mb 0), then two P slices of one picture, then another picture
        for nal in [
            &[0x67u8, 0x42, 0x01][..],
            &[0x68, 0xce],
            &[0x65, 0x88, 0x84],
            &[0x41, 0x9a, 0x01],
            &[0x41, 0x1a, 0x02],
            &[0x41, 0x9a, 0x03],
        ] {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(nal);
        }
        let frames = h264_access_units(&stream, 25);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0].data.len(), 4 * 3 + 3 + 2 + 3);
        assert_eq!(frames[1].data.len(), (4 + 3) * 2);
        assert_eq!(frames[0].duration, Duration::from_millis(40));
    }

    #[test]
    fn garbage_is_refused_never_panics() {
        assert_eq!(parse(b"", 30), Err(MediaError::UnknownFormat));
        assert!(matches!(parse(b"OggS", 30), Err(MediaError::Malformed(_))));
        assert!(parse(b"DKIF\x00", 30).is_err());
        let mut seed: u64 = 7;
        let base = ivf(&[(0, b"abc"), (1, b"def")], 1, 30);
        let ogg = ogg_page(0, 0, &[b"OpusHead\x01\x02"]);
        for _ in 0..20_000 {
            for src in [&base, &ogg] {
                let mut b = src.clone();
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 32) as u8;
                if seed.is_multiple_of(3) {
                    b.truncate(i);
                }
                let _ = parse(&b, 30);
                let _ = vp8_keyframe_size(&b);
            }
        }
    }
}
