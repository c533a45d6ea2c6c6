//! The hot path: RTP relay between the two legs of a session, RFC 4733 removal, G.711,
//! the hold-back buffer, the in-band detector and masker.
//!
//! Must never: allocate, lock or look up a map per packet; format a digit.

pub mod bridge;
pub mod detector;
pub mod engine;
pub mod g711;
pub mod goertzel;
pub mod holdback;
pub mod masker;
pub mod ports;
pub mod press;
pub mod relay;
pub mod rfc4733;
pub mod rtp;

use std::net::SocketAddr;

/// The G.711 laws tonewall speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// From an SDP encoding name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// SDP media direction, from tonewall's point of view of the remote party's offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    /// The peer only sends (it put us on hold): we must not send to it.
    SendOnly,
    /// The peer only receives.
    RecvOnly,
    Inactive,
}

/// What offer/answer settled for one leg: everything the relay needs to talk to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegParams {
    /// Where to send RTP (from the SDP; symmetric RTP latching may override it).
    /// `None` when the peer offered `c=0.0.0.0` (hold).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    /// The payload type number used for `codec` on this leg.
    pub pt: u8,
    /// The payload type number of telephone-event/8000, if negotiated.
    pub te_pt: Option<u8>,
    pub ptime_ms: u32,
    pub direction: Direction,
}
