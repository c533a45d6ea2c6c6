//! The little SDP surgery the simulator and its phones need: read the media address,
//! direction and telephone-event payload type of a body, set the direction, and re-stamp the
//! origin line so each dialog sees its own increasing version.
//!
//! Must never: panic on a malformed body, or log SDP.

use std::net::{IpAddr, SocketAddr};

const DIRS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().map(|l| l.trim_end_matches('\r'))
}

/// The audio stream's address (`None` when on hold with `c=0.0.0.0`, port 0, or malformed).
pub fn media_addr(sdp: &str) -> Option<SocketAddr> {
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    for l in lines(sdp) {
        if let Some(v) = l.strip_prefix("c=") {
            if let Some(a) = v.split_whitespace().nth(2) {
                ip = a.split('/').next().and_then(|a| a.parse().ok());
            }
        } else if let Some(v) = l.strip_prefix("m=audio ") {
            port = v.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    let (ip, port) = (ip?, port?);
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// The direction attribute (last one wins; `sendrecv` when absent).
pub fn direction(sdp: &str) -> &'static str {
    let mut d = "sendrecv";
    for l in lines(sdp) {
        if let Some(v) = l.strip_prefix("a=") {
            if let Some(x) = DIRS.iter().find(|x| **x == v) {
                d = x;
            }
        }
    }
    d
}

/// The telephone-event payload type of the body, if any.
pub fn te_pt(sdp: &str) -> Option<u8> {
    lines(sdp).find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (pt, enc) = rest.split_once(' ')?;
        enc.to_ascii_lowercase()
            .starts_with("telephone-event/")
            .then(|| pt.trim().parse().ok())?
    })
}

/// The same body with exactly one direction attribute, `dir`.
pub fn with_direction(sdp: &str, dir: &str) -> String {
    let mut out = String::new();
    for l in lines(sdp) {
        if l.is_empty() {
            continue;
        }
        if let Some(v) = l.strip_prefix("a=") {
            if DIRS.contains(&v) {
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("a=");
    out.push_str(dir);
    out.push_str("\r\n");
    out
}

/// The body with its `o=` line replaced by `o={user} {session} {version} IN IP4 {addr}`
/// (the address from the original origin line).
pub fn restamp(sdp: &str, user: &str, session: u64, version: u64) -> String {
    let mut out = String::new();
    for l in lines(sdp) {
        if l.is_empty() {
            continue;
        }
        if let Some(v) = l.strip_prefix("o=") {
            let addr = v.split_whitespace().nth(5).unwrap_or("127.0.0.1");
            out.push_str(&format!("o={user} {session} {version} IN IP4 {addr}\r\n"));
        } else {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out
}

/// The answer-side mirror of an offer's direction.
pub fn mirror(dir: &str) -> &'static str {
    match dir {
        "sendonly" => "recvonly",
        "recvonly" => "sendonly",
        "inactive" => "inactive",
        _ => "sendrecv",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    #[test]
    fn reads_and_rewrites() {
        assert_eq!(media_addr(S), "127.0.0.1:4000".parse().ok());
        assert_eq!(te_pt(S), Some(101));
        assert_eq!(direction(S), "sendrecv");
        let h = with_direction(S, "sendonly");
        assert_eq!(direction(&h), "sendonly");
        assert_eq!(h.matches("a=send").count(), 1);
        let r = restamp(&h, "sim", 7, 3);
        assert!(r.contains("o=sim 7 3 IN IP4 127.0.0.1\r\n"));
        assert_eq!(
            media_addr("c=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(media_addr("garbage"), None);
        assert_eq!(mirror("sendonly"), "recvonly");
    }
}
