//! SDP offer/answer (RFC 3264) for one audio stream: PCMU, PCMA and telephone-event/8000 with
//! whatever payload type numbers the offer uses, ptime, direction attributes and `c=0.0.0.0`
//! hold. Hand-parsed: SDP is small and line-based.
//!
//! Must never: panic on a malformed offer, or log SDP bodies.

use std::net::{IpAddr, SocketAddr};

use crate::media::{Codec, Direction, LegParams};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("no audio stream in the offer")]
    NoAudio,
    #[error("no acceptable codec in the offer")]
    NoCodec,
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
}

/// The parts of an offer tonewall uses.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Offer {
    conn: Option<IpAddr>,
    port: u16,
    pts: Vec<u8>,
    rtpmaps: Vec<(u8, String, u32)>,
    ptime: Option<u32>,
    direction: Direction,
}

fn parse_offer(offer: &str) -> Result<Offer, SdpError> {
    let mut session_conn = None;
    let mut media_conn = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut o = Offer {
        conn: None,
        port: 0,
        pts: Vec::new(),
        rtpmaps: Vec::new(),
        ptime: None,
        direction: Direction::SendRecv,
    };
    let mut session_dir = None;
    let mut media_dir = None;
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "m" => {
                if seen_audio {
                    in_audio = false;
                    continue;
                }
                let mut it = v.split_whitespace();
                if it.next() == Some("audio") {
                    let port = it.next().and_then(|p| p.split('/').next()?.parse().ok());
                    let port = port.ok_or(SdpError::Malformed("m= port"))?;
                    let _proto = it.next();
                    o.port = port;
                    o.pts = it.filter_map(|p| p.parse().ok()).collect();
                    in_audio = true;
                    seen_audio = true;
                } else {
                    in_audio = false;
                }
            }
            "c" => {
                let ip = v
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok());
                let ip = ip.ok_or(SdpError::Malformed("c= address"))?;
                if in_audio {
                    media_conn = Some(ip);
                } else if !seen_audio {
                    session_conn = Some(ip);
                }
            }
            "a" if in_audio || !seen_audio => {
                let dir = match v {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                if let Some(d) = dir {
                    if in_audio {
                        media_dir = Some(d);
                    } else {
                        session_dir = Some(d);
                    }
                } else if let Some(rest) = v.strip_prefix("rtpmap:") {
                    if in_audio {
                        let mut it = rest.split_whitespace();
                        let pt = it.next().and_then(|p| p.parse().ok());
                        let enc = it.next().map(|e| {
                            let mut p = e.split('/');
                            let name = p.next().unwrap_or("").to_string();
                            let rate = p.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                            (name, rate)
                        });
                        if let (Some(pt), Some((name, rate))) = (pt, enc) {
                            o.rtpmaps.push((pt, name, rate));
                        }
                    }
                } else if let Some(p) = v.strip_prefix("ptime:") {
                    if in_audio {
                        o.ptime = p.trim().parse().ok();
                    }
                }
            }
            _ => {}
        }
    }
    if !seen_audio {
        return Err(SdpError::NoAudio);
    }
    o.conn = media_conn.or(session_conn);
    if o.conn.is_none() {
        return Err(SdpError::Malformed("no c= line"));
    }
    o.direction = media_dir.or(session_dir).unwrap_or(Direction::SendRecv);
    Ok(o)
}

impl Offer {
    fn codec_of(&self, pt: u8) -> Option<Codec> {
        match self.rtpmaps.iter().find(|(p, _, _)| *p == pt) {
            Some((_, name, rate)) => Codec::from_name(name).filter(|_| *rate == 8000),
            None => [Codec::Pcmu, Codec::Pcma]
                .into_iter()
                .find(|c| c.static_pt() == pt),
        }
    }

    fn te_pt(&self) -> Option<u8> {
        self.pts.iter().copied().find(|pt| {
            self.rtpmaps.iter().any(|(p, name, rate)| {
                p == pt && name.eq_ignore_ascii_case("telephone-event") && *rate == 8000
            })
        })
    }
}

fn mirror(d: Direction) -> &'static str {
    match d {
        Direction::SendRecv => "sendrecv",
        Direction::SendOnly => "recvonly",
        Direction::RecvOnly => "sendonly",
        Direction::Inactive => "inactive",
    }
}

/// Answer `offer`: pick the first of `prefs` the offer carries (with the offer's payload type
/// number), keep telephone-event if offered, mirror the direction. Returns what the relay
/// needs and the answer SDP.
pub fn answer(
    offer: &str,
    prefs: &[Codec],
    local_ip: IpAddr,
    local_port: u16,
    session_version: u64,
) -> Result<(LegParams, String), SdpError> {
    let o = parse_offer(offer)?;
    let (codec, pt) = prefs
        .iter()
        .find_map(|c| {
            o.pts
                .iter()
                .copied()
                .find(|pt| o.codec_of(*pt) == Some(*c))
                .map(|pt| (*c, pt))
        })
        .ok_or(SdpError::NoCodec)?;
    let te_pt = o.te_pt();
    let ptime = o.ptime.filter(|p| (10..=60).contains(p)).unwrap_or(20);
    let hold_addr = o.conn.is_some_and(|c| c.is_unspecified());
    let remote = match o.conn {
        Some(ip) if !ip.is_unspecified() && o.port != 0 => Some(SocketAddr::new(ip, o.port)),
        _ => None,
    };
    let direction = if hold_addr && o.direction == Direction::SendRecv {
        // RFC 3264 §8.4 legacy hold: c=0.0.0.0 means the peer does not want our media.
        Direction::SendOnly
    } else {
        o.direction
    };
    let ipv = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut fmts = pt.to_string();
    if let Some(t) = te_pt {
        fmts.push_str(&format!(" {t}"));
    }
    let mut sdp = format!(
        "v=0\r\no=tonewall {session_version} {session_version} IN {ipv} {local_ip}\r\ns=tonewall\r\n\
c=IN {ipv} {local_ip}\r\nt=0 0\r\nm=audio {local_port} RTP/AVP {fmts}\r\na=rtpmap:{pt} {}/8000\r\n",
        codec.name()
    );
    if let Some(t) = te_pt {
        sdp.push_str(&format!(
            "a=rtpmap:{t} telephone-event/8000\r\na=fmtp:{t} 0-15\r\n"
        ));
    }
    sdp.push_str(&format!("a=ptime:{ptime}\r\na={}\r\n", mirror(direction)));
    let params = LegParams {
        remote,
        codec,
        pt,
        te_pt,
        ptime_ms: ptime,
        direction,
    };
    Ok((params, sdp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m: &str, extra: &str, c: &str) -> String {
        format!("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP {m}\r\n{extra}")
    }
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn picks_preferred_codec_and_dynamic_te() {
        let o = offer(
            "0 8 96",
            "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=ptime:30\r\n",
            "192.0.2.1",
        );
        let (p, sdp) = answer(&o, &[Codec::Pcma, Codec::Pcmu], LOCAL, 30000, 7).expect("answer");
        assert_eq!(
            (p.codec, p.pt, p.te_pt, p.ptime_ms),
            (Codec::Pcma, 8, Some(96), 30)
        );
        assert_eq!(p.remote, Some("192.0.2.1:4000".parse().expect("addr")));
        assert!(sdp.contains("m=audio 30000 RTP/AVP 8 96\r\n"));
        assert!(sdp.contains("a=rtpmap:96 telephone-event/8000"));
        assert!(sdp.contains("o=tonewall 7 7 IN IP4 10.0.0.1"));
        assert!(sdp.contains("a=sendrecv"));
    }

    #[test]
    fn dynamic_pt_for_g711_is_honoured() {
        let o = offer("97", "a=rtpmap:97 PCMU/8000\r\n", "192.0.2.1");
        let (p, sdp) = answer(&o, &[Codec::Pcmu], LOCAL, 30000, 1).expect("answer");
        assert_eq!(
            (p.codec, p.pt, p.te_pt, p.ptime_ms),
            (Codec::Pcmu, 97, None, 20)
        );
        assert!(sdp.contains("a=rtpmap:97 PCMU/8000"));
    }

    #[test]
    fn no_common_codec() {
        let o = offer("18", "a=rtpmap:18 G729/8000\r\n", "192.0.2.1");
        assert_eq!(
            answer(&o, &[Codec::Pcmu], LOCAL, 1, 1).map(|_| ()),
            Err(SdpError::NoCodec)
        );
        assert!(answer("garbage", &[Codec::Pcmu], LOCAL, 1, 1).is_err());
        assert!(answer("m=audio x RTP/AVP 0\r\n", &[Codec::Pcmu], LOCAL, 1, 1).is_err());
    }

    #[test]
    fn directions_mirror_and_hold() {
        for (attr, dir, ans) in [
            ("sendonly", Direction::SendOnly, "a=recvonly"),
            ("recvonly", Direction::RecvOnly, "a=sendonly"),
            ("inactive", Direction::Inactive, "a=inactive"),
        ] {
            let o = offer("0", &format!("a={attr}\r\n"), "192.0.2.1");
            let (p, sdp) = answer(&o, &[Codec::Pcmu], LOCAL, 1, 1).expect("answer");
            assert_eq!(p.direction, dir);
            assert!(sdp.contains(ans), "{attr}");
        }
        let o = offer("0", "", "0.0.0.0");
        let (p, sdp) = answer(&o, &[Codec::Pcmu], LOCAL, 1, 1).expect("answer");
        assert_eq!(p.remote, None);
        assert_eq!(p.direction, Direction::SendOnly);
        assert!(sdp.contains("a=recvonly"));
    }
}
