//! Zero-copy RTP packet view (RFC 3550 §5.1) in the smoltcp style: a checked constructor,
//! getters on any `AsRef<[u8]>`, in-place setters on `AsMut<[u8]>`.
//!
//! RTCP policy: tonewall *terminates* RTCP. Datagrams on a leg's RTCP port, and RTCP
//! multiplexed on the RTP port (RFC 5761, recognised by `is_rtcp`), are read and discarded;
//! tonewall sends none. Relaying reports whose SSRCs, sequence numbers and timestamps no
//! longer match the rewritten streams would mislead the peers more than silence does.
//!
//! Must never: allocate, panic on any input, or read past the buffer.

use std::ops::Range;

/// Length of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// Why a datagram is not a usable RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("shorter than the RTP header")]
    Truncated,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("CSRC list, extension or padding overruns the packet")]
    BadLength,
}

/// A view of an RTP packet held in `T`.
#[derive(Clone, Copy, Debug)]
pub struct RtpPacket<T> {
    buf: T,
}

/// True when the datagram looks like RTCP multiplexed on the RTP port (RFC 5761 §4:
/// second byte 192..=223, i.e. RTCP packet types 192–223).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wrap without checks: getters may then panic on a short buffer. Use only on buffers
    /// this crate wrote itself.
    pub fn new_unchecked(buf: T) -> RtpPacket<T> {
        RtpPacket { buf }
    }

    /// Wrap and validate: version 2, the CSRC list, the header extension and the padding
    /// all fit in the buffer.
    pub fn new_checked(buf: T) -> Result<RtpPacket<T>, RtpError> {
        let p = RtpPacket { buf };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), RtpError> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let mut hl = HEADER_LEN + 4 * usize::from(b[0] & 0x0f);
        if b[0] & 0x10 != 0 {
            // extension header: 16-bit profile, 16-bit length in 32-bit words
            let ext = b.get(hl..hl + 4).ok_or(RtpError::BadLength)?;
            hl += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if hl > b.len() {
            return Err(RtpError::BadLength);
        }
        if b[0] & 0x20 != 0 {
            let pad = usize::from(b[b.len() - 1]);
            if pad == 0 || hl + pad > b.len() {
                return Err(RtpError::BadLength);
            }
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 6
    }

    pub fn padding(&self) -> bool {
        self.buf.as_ref()[0] & 0x20 != 0
    }

    pub fn extension(&self) -> bool {
        self.buf.as_ref()[0] & 0x10 != 0
    }

    pub fn csrc_count(&self) -> u8 {
        self.buf.as_ref()[0] & 0x0f
    }

    pub fn marker(&self) -> bool {
        self.buf.as_ref()[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.buf.as_ref()[1] & 0x7f
    }

    pub fn sequence_number(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    pub fn timestamp(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    pub fn ssrc(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// Header length including CSRCs and the extension.
    pub fn header_len(&self) -> usize {
        let b = self.buf.as_ref();
        let mut hl = HEADER_LEN + 4 * usize::from(self.csrc_count());
        if self.extension() {
            hl += 4 + 4 * usize::from(u16::from_be_bytes([b[hl + 2], b[hl + 3]]));
        }
        hl
    }

    /// Byte range of the payload (after the header, before any padding).
    pub fn payload_range(&self) -> Range<usize> {
        let b = self.buf.as_ref();
        let pad = if self.padding() {
            usize::from(b[b.len() - 1])
        } else {
            0
        };
        self.header_len()..b.len() - pad
    }

    pub fn payload(&self) -> &[u8] {
        let r = self.payload_range();
        &self.buf.as_ref()[r]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    pub fn set_version(&mut self, v: u8) {
        let b = self.buf.as_mut();
        b[0] = (b[0] & 0x3f) | ((v & 0x03) << 6);
    }

    pub fn set_padding(&mut self, on: bool) {
        let b = self.buf.as_mut();
        b[0] = (b[0] & !0x20) | if on { 0x20 } else { 0 };
    }

    pub fn set_extension(&mut self, on: bool) {
        let b = self.buf.as_mut();
        b[0] = (b[0] & !0x10) | if on { 0x10 } else { 0 };
    }

    pub fn set_csrc_count(&mut self, cc: u8) {
        let b = self.buf.as_mut();
        b[0] = (b[0] & 0xf0) | (cc & 0x0f);
    }

    pub fn set_marker(&mut self, on: bool) {
        let b = self.buf.as_mut();
        b[1] = (b[1] & 0x7f) | if on { 0x80 } else { 0 };
    }

    pub fn set_payload_type(&mut self, pt: u8) {
        let b = self.buf.as_mut();
        b[1] = (b[1] & 0x80) | (pt & 0x7f);
    }

    pub fn set_sequence_number(&mut self, seq: u16) {
        self.buf.as_mut()[2..4].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_timestamp(&mut self, ts: u32) {
        self.buf.as_mut()[4..8].copy_from_slice(&ts.to_be_bytes());
    }

    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.buf.as_mut()[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buf.as_mut()[r]
    }
}

/// Write a plain 12-byte header (no CSRC, extension or padding) into `buf[..12]`.
/// Returns `None` when `buf` is too short.
pub fn write_header(
    buf: &mut [u8],
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
) -> Option<()> {
    let h = buf.get_mut(..HEADER_LEN)?;
    h[0] = 0x80;
    h[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = vec![0u8; 12 + 160];
        write_header(&mut v, 0, 0x1234, 0xdead_beef, 0x0102_0304, true).expect("hdr");
        v
    }

    #[test]
    fn getters_read_the_header() {
        let v = sample();
        let p = RtpPacket::new_checked(&v[..]).expect("valid");
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.extension());
        assert_eq!(p.csrc_count(), 0);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x0102_0304);
        assert_eq!(p.payload_range(), 12..172);
    }

    #[test]
    fn setters_edit_in_place() {
        let mut v = sample();
        let mut p = RtpPacket::new_checked(&mut v[..]).expect("valid");
        p.set_marker(false);
        p.set_payload_type(8);
        p.set_sequence_number(7);
        p.set_timestamp(99);
        p.set_ssrc(42);
        p.set_csrc_count(0);
        p.set_version(2);
        assert!(!p.marker());
        assert_eq!(
            (
                p.payload_type(),
                p.sequence_number(),
                p.timestamp(),
                p.ssrc()
            ),
            (8, 7, 99, 42)
        );
        p.payload_mut()[0] = 0xAB;
        assert_eq!(v[12], 0xAB);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        // 1 CSRC, extension of 1 word, 3 bytes of padding
        let mut v = vec![0u8; 12 + 4 + 4 + 4 + 5 + 3];
        write_header(&mut v, 0, 1, 1, 1, false).expect("hdr");
        v[0] = 0x80 | 0x20 | 0x10 | 0x01;
        v[16 + 3] = 1; // extension length = 1 word
        let n = v.len();
        v[n - 1] = 3;
        let p = RtpPacket::new_checked(&v[..]).expect("valid");
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload_range(), 24..29);
    }

    #[test]
    fn malformed_packets_are_rejected() {
        assert_eq!(
            RtpPacket::new_checked(&[0x80u8; 5][..]).err(),
            Some(RtpError::Truncated)
        );
        let mut v = sample();
        v[0] = 0x40;
        assert_eq!(
            RtpPacket::new_checked(&v[..]).err(),
            Some(RtpError::BadVersion)
        );
        let mut v = [0u8; 12];
        v[0] = 0x8f; // 15 CSRCs that are not there
        assert_eq!(
            RtpPacket::new_checked(&v[..]).err(),
            Some(RtpError::BadLength)
        );
        let mut v = [0u8; 14];
        v[0] = 0x90; // extension header missing
        assert!(RtpPacket::new_checked(&v[..]).is_err());
        let mut v = sample();
        v[0] |= 0x20;
        let n = v.len();
        v[n - 1] = 0; // zero padding count
        assert!(RtpPacket::new_checked(&v[..]).is_err());
        v[n - 1] = 200; // padding longer than the payload
        assert!(RtpPacket::new_checked(&v[..]).is_err());
    }

    #[test]
    fn rtcp_demux() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtcp(&[0x80, 0, 0, 6]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8, 0, 6]));
        assert!(!is_rtcp(&[0x80]));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(p) = RtpPacket::new_checked(&data[..]) {
                let _ = (p.payload(), p.marker(), p.ssrc());
            }
        }
    }
}
