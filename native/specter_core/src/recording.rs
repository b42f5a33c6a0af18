//! Recording remote tracks: a duplicate filter for RTP sequence numbers, an IVF writer that
//! keeps the packets' own timing, and the repair of webrtc-rs's Ogg end page.

use std::io::{Seek, SeekFrom, Write};

use rtc::media::io::Writer;
use rtc::rtp;
use rtc::rtp::codec::av1::Av1Depacketizer;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::codec::vp9::Vp9Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::shared::error::{Error, Result};

/// Remembers which of the last 1024 sequence numbers of an RTP stream were seen, so a packet
/// that arrives twice (a retransmission of a packet that was not lost, or a bandwidth probe
/// that resends recent packets over RTX) is passed on once.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    /// Highest sequence number seen, extended with a rollover count.
    highest: Option<u64>,
    /// Bit `i` is set when `highest - i` was seen.
    seen: [u64; Self::WORDS],
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqWindow {
    const WORDS: usize = 16;
    const SIZE: u64 = (Self::WORDS * 64) as u64;

    /// An empty window.
    pub fn new() -> Self {
        SeqWindow { highest: None, seen: [0; Self::WORDS] }
    }

    /// Records `seq`: `true` the first time it is seen, `false` for a copy. A packet older
    /// than the window (1024 sequence numbers behind the newest) counts as a copy, and so
    /// does not reach a recorder that has already moved past it.
    pub fn insert(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(u64::from(seq) + (1 << 16));
            self.set(0);
            return true;
        };
        let ext = Self::extend(highest, seq);
        if ext > highest {
            self.shift(ext - highest);
            self.highest = Some(ext);
            self.set(0);
            true
        } else {
            let back = highest - ext;
            if back >= Self::SIZE || self.get(back) {
                false
            } else {
                self.set(back);
                true
            }
        }
    }

    /// `seq` extended to the rollover nearest `highest`.
    fn extend(highest: u64, seq: u16) -> u64 {
        let base = highest & !0xffff;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        candidates
            .iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(highest))
            .unwrap_or(base + u64::from(seq))
    }

    fn shift(&mut self, by: u64) {
        if by >= Self::SIZE {
            self.seen = [0; Self::WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        for i in (0..Self::WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.seen[s]);
            let lo = src.and_then(|s| s.checked_sub(1)).map_or(0, |s| self.seen[s]);
            self.seen[i] = if bits == 0 { hi } else { (hi << bits) | (lo >> (64 - bits)) };
        }
    }

    fn set(&mut self, back: u64) {
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }

    fn get(&self, back: u64) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }
}

/// The video codecs an IVF file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvfCodec {
    Vp8,
    Vp9,
    Av1,
}

impl IvfCodec {
    /// The codec of a MIME type (`video/VP8`, `video/VP9`, `video/AV1`), any case.
    pub fn from_mime(mime: &str) -> Option<Self> {
        match mime.to_ascii_lowercase().as_str() {
            "video/vp8" => Some(IvfCodec::Vp8),
            "video/vp9" => Some(IvfCodec::Vp9),
            "video/av1" => Some(IvfCodec::Av1),
            _ => None,
        }
    }

    fn fourcc(self) -> &'static [u8; 4] {
        match self {
            IvfCodec::Vp8 => b"VP80",
            IvfCodec::Vp9 => b"VP90",
            IvfCodec::Av1 => b"AV01",
        }
    }
}

/// The IVF time base: RTP's 90 kHz video clock, so frame timestamps are the packets' own.
pub const IVF_TIMEBASE: u32 = 90_000;

/// Writes the frames of a VP8, VP9 or AV1 RTP stream to an IVF file.
///
/// Unlike webrtc-rs's `IVFWriter` (which numbers frames 0, 1, 2... in a 1/90000 s time base,
/// so players see a recording last a few milliseconds), each frame's timestamp is its RTP
/// timestamp relative to the first frame's, in 1/90000 s. The file starts with a keyframe;
/// a frame with a missing packet is not written, and then nothing is until the next
/// keyframe (`wants_keyframe` tells the caller to ask for one), so every frame written
/// decodes. The header's frame size (read from VP8 keyframes) and length (the duration, as
/// ffmpeg writes and reads it) are filled in by `close`.
pub struct IvfRecorder<W: Write + Seek> {
    out: W,
    codec: IvfCodec,
    av1: Av1Depacketizer,
    /// The frame being assembled: its RTP timestamp and payload.
    frame: Option<(u32, Vec<u8>)>,
    /// Sequence number expected next inside the current frame.
    next_seq: Option<u16>,
    /// Waiting for a keyframe (at the start, and after a loss).
    need_keyframe: bool,
    first_ts: Option<u32>,
    /// The last frame's timestamp, extended past 32-bit wraps.
    last_pts: u64,
    frames: u32,
    size: Option<(u16, u16)>,
    dropped: u64,
}

impl<W: Write + Seek> IvfRecorder<W> {
    /// Writes the file header (its frame count and size are filled in by `close`).
    pub fn new(mut out: W, codec: IvfCodec) -> Result<Self> {
        let mut header = Vec::with_capacity(32);
        header.extend_from_slice(b"DKIF");
        header.extend_from_slice(&0u16.to_le_bytes()); // version
        header.extend_from_slice(&32u16.to_le_bytes()); // header size
        header.extend_from_slice(codec.fourcc());
        header.extend_from_slice(&0u16.to_le_bytes()); // width
        header.extend_from_slice(&0u16.to_le_bytes()); // height
        header.extend_from_slice(&IVF_TIMEBASE.to_le_bytes()); // time base denominator
        header.extend_from_slice(&1u32.to_le_bytes()); // time base numerator
        header.extend_from_slice(&0u32.to_le_bytes()); // frame count
        header.extend_from_slice(&0u32.to_le_bytes()); // unused
        out.write_all(&header)?;
        Ok(IvfRecorder {
            out,
            codec,
            av1: Av1Depacketizer::new(),
            frame: None,
            next_seq: None,
            need_keyframe: true,
            first_ts: None,
            last_pts: 0,
            frames: 0,
            size: None,
            dropped: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Frames left out because a packet of theirs (or of a frame before them since the last
    /// keyframe) was missing.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// True while nothing is written until a keyframe comes.
    pub fn wants_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// The frame size read from a VP8 keyframe.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.size
    }

    /// `(frame data, starts a frame, is a keyframe)` of one packet's payload. webrtc-rs's
    /// depacketizers index the payload unchecked in places (its AV1 depacketizer slices past
    /// the end of a one-byte OBU element whose header announces an extension), so a panic in
    /// one is a malformed packet like any other.
    fn depacketize(&mut self, pkt: &rtp::Packet) -> Result<(Vec<u8>, bool, bool)> {
        guard_parser(|| self.depacketize_unguarded(pkt))
    }

    fn depacketize_unguarded(&mut self, pkt: &rtp::Packet) -> Result<(Vec<u8>, bool, bool)> {
        match self.codec {
            IvfCodec::Vp8 => {
                let mut d = Vp8Packet::default();
                let data = d.depacketize(&pkt.payload)?;
                let head = d.s == 1 && d.pid == 0;
                let key = head && data.first().is_some_and(|b| b & 0x01 == 0);
                Ok((data.to_vec(), head, key))
            }
            IvfCodec::Vp9 => {
                let mut d = Vp9Packet::default();
                let data = d.depacketize(&pkt.payload)?;
                Ok((data.to_vec(), d.b, d.b && !d.p))
            }
            IvfCodec::Av1 => {
                let data = self.av1.depacketize(&pkt.payload)?;
                // Z: the packet continues an OBU of the one before.
                let head = !self.av1.z;
                // A new coded video sequence (N) or a sequence header OBU starts a keyframe.
                let key = self.av1.n || data.first().is_some_and(|b| (b & 0x78) >> 3 == 1);
                Ok((data.to_vec(), head || key, key))
            }
        }
    }

    fn write_frame(&mut self, ts: u32, data: &[u8]) -> Result<()> {
        let first = *self.first_ts.get_or_insert(ts);
        let offset = u64::from(ts.wrapping_sub(first));
        // Extend past 32-bit wraps (every 13 hours at 90 kHz) and never go backwards.
        let mut pts = (self.last_pts & !0xffff_ffff) | offset;
        if pts < self.last_pts {
            pts += 1 << 32;
        }
        self.last_pts = pts;
        // An AV1 temporal unit starts with a temporal delimiter OBU.
        let delimiter: &[u8] = if self.codec == IvfCodec::Av1 { &[0x12, 0x00] } else { &[] };
        let len = u32::try_from(delimiter.len() + data.len()).map_err(|_| Error::ErrShortBuffer)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&pts.to_le_bytes())?;
        self.out.write_all(delimiter)?;
        self.out.write_all(data)?;
        self.frames += 1;
        Ok(())
    }

    fn lose_frame(&mut self) {
        if self.frame.take().is_some() {
            self.dropped += 1;
        }
        self.need_keyframe = true;
        self.next_seq = None;
        self.av1 = Av1Depacketizer::new();
    }
}

impl<W: Write + Seek> Writer for IvfRecorder<W> {
    fn write_rtp(&mut self, pkt: &rtp::Packet) -> Result<()> {
        if pkt.payload.is_empty() {
            return Ok(());
        }
        let seq = pkt.header.sequence_number;
        let ts = pkt.header.timestamp;
        // A packet of a frame other than the one being assembled, or a gap inside it: the
        // frame is incomplete.
        if let Some((frame_ts, _)) = &self.frame {
            if *frame_ts != ts || self.next_seq != Some(seq) {
                self.lose_frame();
            }
        }
        let (data, head, key) = match self.depacketize(pkt) {
            Ok(parts) => parts,
            Err(_) => {
                self.lose_frame();
                return Ok(());
            }
        };
        if self.frame.is_none() {
            if !head || (self.need_keyframe && !key) {
                return Ok(());
            }
            if key && self.codec == IvfCodec::Vp8 {
                if let Some(size) = vp8_frame_size(&data) {
                    self.size = Some(size);
                }
            }
            self.need_keyframe = false;
            self.frame = Some((ts, Vec::with_capacity(data.len() * 2)));
        }
        if let Some((_, buf)) = self.frame.as_mut() {
            buf.extend_from_slice(&data);
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if pkt.header.marker {
            if let Some((ts, buf)) = self.frame.take() {
                self.next_seq = None;
                self.write_frame(ts, &buf)?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((w, h)) = self.size {
            self.out.seek(SeekFrom::Start(12))?;
            self.out.write_all(&w.to_le_bytes())?;
            self.out.write_all(&h.to_le_bytes())?;
        }
        // ffmpeg reads this field as the duration in time-base units (its IVF muxer writes
        // the frames' span plus one average frame), libvpx as a frame count it does not
        // rely on: the duration, so players show the recording's real length.
        let duration = match self.frames {
            0 => 0,
            1 => u64::from(IVF_TIMEBASE / 30),
            n => self.last_pts + self.last_pts / u64::from(n - 1),
        };
        self.out.seek(SeekFrom::Start(24))?;
        self.out.write_all(&u32::try_from(duration).unwrap_or(u32::MAX).to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(())
    }
}

/// Runs a third-party parser on untrusted bytes: a panic inside it (an out-of-range slice
/// in webrtc-rs's depacketizers, for instance) becomes `Err(ErrShortPacket)` instead of
/// unwinding through the caller's task and the locks it holds. The caller must drop any
/// state the parser may have left half-updated (the recorder resets its depacketizer).
pub fn guard_parser<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(Err(Error::ErrShortPacket))
}

/// The size in a VP8 keyframe's header (after the RTP payload descriptor).
fn vp8_frame_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

/// Removes the duplicated last page webrtc-rs 0.21.1's `OggWriter::close` leaves: it appends
/// the last page again with the end-of-stream flag and the same page sequence number (Pion
/// rewrites it in place). When the last two pages of `bytes` are such a pair, the first of
/// them is cut out; returns whether anything changed.
pub fn repair_ogg_tail(bytes: &mut Vec<u8>) -> bool {
    let mut pages = Vec::new();
    let mut at = 0;
    while let Some(len) = ogg_page_len(&bytes[at..]) {
        pages.push((at, len));
        at += len;
    }
    if at != bytes.len() || pages.len() < 2 {
        return false;
    }
    let (a, a_len) = pages[pages.len() - 2];
    let (b, b_len) = pages[pages.len() - 1];
    let seq = |p: usize| &bytes[p + 18..p + 22];
    let eos = |p: usize| bytes[p + 5] & 0x04 != 0;
    // Same serial and sequence number, the same segments and payload; only the second one
    // ends the stream.
    let same_body = bytes[a + 26..a + a_len] == bytes[b + 26..b + b_len];
    if seq(a) == seq(b) && bytes[a + 14..a + 18] == bytes[b + 14..b + 18] && same_body && eos(b) {
        bytes.drain(a..a + a_len);
        true
    } else {
        false
    }
}

/// The length of the Ogg page at the start of `bytes`, if a whole one is there.
fn ogg_page_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 27 || &bytes[..4] != b"OggS" {
        return None;
    }
    let segments = usize::from(bytes[26]);
    let table = bytes.get(27..27 + segments)?;
    let body: usize = table.iter().map(|&s| usize::from(s)).sum();
    let len = 27 + segments + body;
    (bytes.len() >= len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Payloads that panic webrtc-rs 0.21.1's depacketizers cost the packet, nothing more.
    #[test]
    fn depacketizer_panics_are_contained() {
        use rtc::media::io::h26x_writer::H26xWriter;
        let pkt = |payload: &[u8]| rtp::Packet {
            header: rtp::header::Header { marker: true, ..Default::default() },
            payload: payload.to_vec().into(),
        };
        // AV1: one OBU element of one byte whose header says "extension + size field": the
        // depacketizer slices obu[2..] of a 1-byte buffer.
        let mut rec = IvfRecorder::new(Cursor::new(Vec::new()), IvfCodec::Av1).unwrap();
        assert!(rec.write_rtp(&pkt(&[0x00, 0x01, 0x06])).is_ok());
        assert!(rec.wants_keyframe());
        // H.264: once a keyframe (an SPS) has been seen, a STAP-A with a single byte after
        // its header reads packet[2].
        let mut h264 = H26xWriter::new(Cursor::new(Vec::new()), false);
        let sps = pkt(&[0x67, 0x42, 0x00, 0x1f]);
        assert!(guard_parser(|| h264.write_rtp(&sps)).is_ok());
        assert!(guard_parser(|| h264.write_rtp(&pkt(&[0x78, 0x00]))).is_err());
        assert!(guard_parser(|| h264.write_rtp(&sps)).is_ok());
    }

    #[test]
    fn seq_window_passes_each_number_once() {
        let mut w = SeqWindow::new();
        assert!(w.insert(10));
        assert!(!w.insert(10));
        assert!(w.insert(12));
        assert!(w.insert(11));
        assert!(!w.insert(11));
        assert!(!w.insert(12));
        // Across the 16-bit wrap.
        let mut w = SeqWindow::new();
        assert!(w.insert(65_534));
        assert!(w.insert(65_535));
        assert!(w.insert(0));
        assert!(w.insert(1));
        assert!(!w.insert(65_535));
        assert!(!w.insert(0));
        // Older than the window: refused.
        let mut w = SeqWindow::new();
        assert!(w.insert(0));
        assert!(w.insert(2000));
        assert!(!w.insert(500));
        assert!(w.insert(1500));
        assert!(!w.insert(1500));
    }

    #[test]
    fn seq_window_shifts_across_words() {
        let mut w = SeqWindow::new();
        for s in 0..3000u16 {
            assert!(w.insert(s), "{s}");
            if s > 100 {
                assert!(!w.insert(s - 70), "{s}");
            }
        }
        // A jump larger than the window forgets everything.
        assert!(w.insert(30_000));
        assert!(!w.insert(30_000));
        assert!(w.insert(29_999));
    }

    fn vp8_packet(seq: u16, ts: u32, start: bool, marker: bool, frame: &[u8]) -> rtp::Packet {
        let mut payload = vec![if start { 0x10 } else { 0x00 }];
        payload.extend_from_slice(frame);
        rtp::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                timestamp: ts,
                marker,
                ..Default::default()
            },
            payload: payload.into(),
        }
    }

    fn key(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f
    }

    fn frames(file: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 32;
        while at + 12 <= file.len() {
            let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            let pts = u64::from_le_bytes(file[at + 4..at + 12].try_into().unwrap());
            out.push((pts, file[at + 12..at + 12 + len].to_vec()));
            at += 12 + len;
        }
        out
    }

    #[test]
    fn ivf_recorder_keeps_rtp_timing_and_skips_broken_frames() {
        let mut r = IvfRecorder::new(Cursor::new(Vec::new()), IvfCodec::Vp8).unwrap();
        let inter = [0x01, 0xaa, 0xbb];
        // An inter frame before any keyframe is not written.
        r.write_rtp(&vp8_packet(1, 1000, true, true, &inter)).unwrap();
        assert!(r.wants_keyframe());
        // A keyframe in two packets, then two inter frames 3000 ticks apart.
        let k = key(320, 240);
        r.write_rtp(&vp8_packet(2, 4000, true, false, &k)).unwrap();
        r.write_rtp(&vp8_packet(3, 4000, false, true, &[0xcc, 0xdd, 0xee])).unwrap();
        r.write_rtp(&vp8_packet(4, 7000, true, true, &inter)).unwrap();
        r.write_rtp(&vp8_packet(5, 10000, true, false, &inter)).unwrap();
        // Packet 6 is lost: frame 10000 is dropped, and so is 13000 (no keyframe yet).
        r.write_rtp(&vp8_packet(7, 10000, false, true, &inter)).unwrap();
        r.write_rtp(&vp8_packet(8, 13000, true, true, &inter)).unwrap();
        assert!(r.wants_keyframe());
        r.write_rtp(&vp8_packet(9, 16000, true, true, &k)).unwrap();
        r.close().unwrap();
        assert_eq!((r.frames(), r.dropped(), r.size()), (3, 1, Some((320, 240))));
        let file = r.out.into_inner();
        assert_eq!(&file[..4], b"DKIF");
        assert_eq!(&file[12..16], &[0x40, 0x01, 0xf0, 0x00]);
        assert_eq!(u32::from_le_bytes(file[16..20].try_into().unwrap()), 90_000);
        // The length field: 3 frames spanning 12000 ticks, plus one average frame.
        assert_eq!(u32::from_le_bytes(file[24..28].try_into().unwrap()), 18_000);
        let f = frames(&file);
        let pts: Vec<u64> = f.iter().map(|(p, _)| *p).collect();
        assert_eq!(pts, vec![0, 3000, 12000]);
        let mut first = k.clone();
        first.extend_from_slice(&[0xcc, 0xdd, 0xee]);
        assert_eq!(f[0].1, first);
        assert_eq!(f[1].1, inter.to_vec());
    }

    #[test]
    fn ivf_recorder_timestamps_survive_the_32_bit_wrap() {
        let mut r = IvfRecorder::new(Cursor::new(Vec::new()), IvfCodec::Vp8).unwrap();
        let k = key(16, 16);
        r.write_rtp(&vp8_packet(1, u32::MAX - 2999, true, true, &k)).unwrap();
        r.write_rtp(&vp8_packet(2, 1, true, true, &[0x01, 0, 0])).unwrap();
        r.close().unwrap();
        let pts: Vec<u64> = frames(&r.out.into_inner()).iter().map(|f| f.0).collect();
        assert_eq!(pts, vec![0, 3001]);
    }

    fn ogg_page(seq: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(flags);
        p.extend_from_slice(&[0; 8]); // granule
        p.extend_from_slice(&7u32.to_le_bytes()); // serial
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&[0; 4]); // crc
        p.push(1);
        p.push(body.len() as u8);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn repair_ogg_tail_removes_the_page_close_duplicated() {
        let head = [ogg_page(0, 2, b"head"), ogg_page(1, 0, b"tags")].concat();
        let last = ogg_page(2, 0, b"opus");
        let mut file = [head.clone(), last.clone(), ogg_page(2, 4, b"opus")].concat();
        assert!(repair_ogg_tail(&mut file));
        assert_eq!(file, [head.clone(), ogg_page(2, 4, b"opus")].concat());
        // Nothing to repair: unchanged.
        let mut good = [head.clone(), ogg_page(2, 4, b"opus")].concat();
        let copy = good.clone();
        assert!(!repair_ogg_tail(&mut good));
        assert_eq!(good, copy);
        // A truncated file is left alone.
        let mut cut = [head, last].concat();
        cut.pop();
        assert!(!repair_ogg_tail(&mut cut));
    }
}
