//! RTCP for the application: an interceptor that lets feedback through to it, and a plain
//! description of the packets the NIF turns into Elixir maps.
//!
//! webrtc-rs 0.21.1 ends every interceptor chain with a terminus that drops inbound RTCP
//! unless an interceptor marks a packet `DeliverToApplication`. Without one, a sender never
//! hears a PLI and a receiver never sees a sender report.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Where the tap sits in a chain: after every built-in interceptor, next to the application.
pub const SLOT: usize = 20_000;

/// Marks inbound RTCP the application acts on (PLI, FIR, NACK, receiver and sender reports,
/// REMB) `DeliverToApplication`; passes everything else unchanged.
#[derive(Default)]
pub struct RtcpTap {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Whether the application wants a packet of this kind.
pub fn wanted(pkt: &dyn rtcp::packet::Packet) -> bool {
    let any = pkt.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverReport>()
        || any.is::<SenderReport>()
        || any.is::<ReceiverEstimatedMaximumBitrate>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            if pkts.iter().any(|p| wanted(p.as_ref()))
                && !msg.message.has(&Attribute::DeliverToApplication)
            {
                msg.message.attributes.push(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_event(&mut self, _evt: ()) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_event(&mut self) -> Option<Self::Eout> {
        None
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl Interceptor for RtcpTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// One reception report block.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub total_lost: u32,
    pub last_sequence_number: u32,
    pub jitter: u32,
}

/// What an RTCP packet says, for the application.
#[derive(Debug, Clone, PartialEq)]
pub enum RtcpInfo {
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Fir {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        lost: Vec<u16>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<Report>,
    },
    SenderReport {
        ssrc: u32,
        ntp_time: u64,
        rtp_time: u32,
        packet_count: u32,
        octet_count: u32,
        reports: Vec<Report>,
    },
    Remb {
        bitrate: f32,
        ssrcs: Vec<u32>,
    },
}

impl RtcpInfo {
    /// Whether this asks the sender for a keyframe.
    pub fn is_keyframe_request(&self) -> bool {
        matches!(self, RtcpInfo::Pli { .. } | RtcpInfo::Fir { .. })
    }
}

fn report(r: &ReceptionReport) -> Report {
    Report {
        ssrc: r.ssrc,
        fraction_lost: r.fraction_lost,
        total_lost: r.total_lost,
        last_sequence_number: r.last_sequence_number,
        jitter: r.jitter,
    }
}

/// Describes a packet, or `None` for kinds the application does not get.
pub fn describe(pkt: &dyn rtcp::packet::Packet) -> Option<RtcpInfo> {
    let any = pkt.as_any();
    if let Some(p) = any.downcast_ref::<PictureLossIndication>() {
        return Some(RtcpInfo::Pli { sender_ssrc: p.sender_ssrc, media_ssrc: p.media_ssrc });
    }
    if let Some(p) = any.downcast_ref::<FullIntraRequest>() {
        return Some(RtcpInfo::Fir { sender_ssrc: p.sender_ssrc, media_ssrc: p.media_ssrc });
    }
    if let Some(p) = any.downcast_ref::<TransportLayerNack>() {
        let mut lost = Vec::new();
        for pair in &p.nacks {
            lost.push(pair.packet_id);
            for bit in 0..16u16 {
                if pair.lost_packets & (1 << bit) != 0 {
                    lost.push(pair.packet_id.wrapping_add(bit + 1));
                }
            }
        }
        return Some(RtcpInfo::Nack { sender_ssrc: p.sender_ssrc, media_ssrc: p.media_ssrc, lost });
    }
    if let Some(p) = any.downcast_ref::<ReceiverReport>() {
        return Some(RtcpInfo::ReceiverReport {
            ssrc: p.ssrc,
            reports: p.reports.iter().map(report).collect(),
        });
    }
    if let Some(p) = any.downcast_ref::<SenderReport>() {
        return Some(RtcpInfo::SenderReport {
            ssrc: p.ssrc,
            ntp_time: p.ntp_time,
            rtp_time: p.rtp_time,
            packet_count: p.packet_count,
            octet_count: p.octet_count,
            reports: p.reports.iter().map(report).collect(),
        });
    }
    if let Some(p) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
        return Some(RtcpInfo::Remb { bitrate: p.bitrate, ssrcs: p.ssrcs.clone() });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

    #[test]
    fn keyframe_requests_are_described() {
        let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc: 2 };
        let info = describe(&pli).expect("pli");
        assert_eq!(info, RtcpInfo::Pli { sender_ssrc: 1, media_ssrc: 2 });
        assert!(info.is_keyframe_request());
        assert!(wanted(&pli));
    }

    #[test]
    fn nack_bitmaps_expand_to_sequence_numbers() {
        let nack = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![NackPair { packet_id: 100, lost_packets: 0b101 }],
        };
        match describe(&nack) {
            Some(RtcpInfo::Nack { lost, .. }) => assert_eq!(lost, vec![100, 101, 103]),
            other => panic!("{other:?}"),
        }
    }
}
