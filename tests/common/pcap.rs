//! Builds RTP captures (pcap, Ethernet/IPv4/UDP) for SIPp's `play_pcap_audio`: G.711 audio
//! frames with RFC 4733 key presses, as a phone would send them.

/// One RTP packet and its send time (ms from the start).
pub struct RtpOut {
    pub at_ms: u32,
    pub bytes: Vec<u8>,
}

/// A caller's stream: PCMU speech-like audio with key presses (RFC 4733, PT `te_pt`).
pub struct StreamBuilder {
    pub ssrc: u32,
    pub pt: u8,
    pub te_pt: u8,
    seq: u16,
    ts: u32,
    at_ms: u32,
    pub packets: Vec<RtpOut>,
    /// Number of audio packets written (what the far end should receive).
    pub audio_packets: usize,
}

/// The audio payload marker: the first byte of every audio frame we send is this value,
/// so the receiving side can recognise our frames.
pub fn audio_frame(n: usize) -> [u8; 160] {
    let mut f = [0u8; 160];
    for (i, b) in f.iter_mut().enumerate() {
        // A 500 Hz-ish μ-law pattern, varying per frame.
        let phase = ((i + n * 160) % 16) as f32 / 16.0 * std::f32::consts::TAU;
        let lin = (phase.sin() * 3000.0) as i16;
        *b = super::tones::ulaw(lin);
    }
    f
}

impl StreamBuilder {
    pub fn new(ssrc: u32, pt: u8, te_pt: u8) -> Self {
        StreamBuilder {
            ssrc,
            pt,
            te_pt,
            seq: 1000,
            ts: 16000,
            at_ms: 0,
            packets: Vec::new(),
            audio_packets: 0,
        }
    }

    fn header(&mut self, pt: u8, marker: bool, ts: u32) -> Vec<u8> {
        let mut h = Vec::with_capacity(172);
        h.push(0x80);
        h.push(pt | if marker { 0x80 } else { 0 });
        h.extend_from_slice(&self.seq.to_be_bytes());
        h.extend_from_slice(&ts.to_be_bytes());
        h.extend_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        h
    }

    /// `frames` × 20 ms of audio.
    pub fn audio(&mut self, frames: usize) {
        for _ in 0..frames {
            let mut p = self.header(self.pt, false, self.ts);
            p.extend_from_slice(&audio_frame(self.audio_packets));
            self.packets.push(RtpOut {
                at_ms: self.at_ms,
                bytes: p,
            });
            self.audio_packets += 1;
            self.ts = self.ts.wrapping_add(160);
            self.at_ms += 20;
        }
    }

    /// One key press as RFC 4733: `frames` packets of growing duration (the first with the
    /// marker bit), then three end packets, all with the timestamp of the press's start.
    pub fn key(&mut self, key: u8, frames: u16) {
        let code = match key {
            b'0'..=b'9' => key - b'0',
            b'*' => 10,
            b'#' => 11,
            b'A'..=b'D' => 12 + key - b'A',
            _ => panic!("not a key"),
        };
        let start = self.ts;
        for i in 0..frames {
            let dur = (i + 1) * 160;
            let mut p = self.header(self.te_pt, i == 0, start);
            p.extend_from_slice(&[code, 10, (dur >> 8) as u8, dur as u8]);
            self.packets.push(RtpOut {
                at_ms: self.at_ms,
                bytes: p,
            });
            self.at_ms += 20;
        }
        let dur = frames * 160;
        for _ in 0..3 {
            let mut p = self.header(self.te_pt, false, start);
            p.extend_from_slice(&[code, 0x80 | 10, (dur >> 8) as u8, dur as u8]);
            self.packets.push(RtpOut {
                at_ms: self.at_ms,
                bytes: p,
            });
        }
        self.ts = self.ts.wrapping_add(dur as u32);
    }

    /// Audio, then every key of `keys` (each 100 ms, 60 ms of audio between).
    pub fn keys(&mut self, keys: &str) {
        for k in keys.bytes() {
            self.key(k, 5);
            self.audio(3);
        }
    }
}

/// Write the packets as a pcap (Ethernet/IPv4/UDP) SIPp can replay.
pub fn write(path: &std::path::Path, packets: &[RtpOut]) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let base_s: u32 = 1_700_000_000;
    for p in packets {
        let udp_len = 8 + p.bytes.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let sum = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&6000u16.to_be_bytes());
        frame.extend_from_slice(&6002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&p.bytes);
        let ts_s = base_s + p.at_ms / 1000;
        let ts_us = (p.at_ms % 1000) * 1000;
        out.extend_from_slice(&ts_s.to_le_bytes());
        out.extend_from_slice(&ts_us.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out)
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
