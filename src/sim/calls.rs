//! The simulator's call model: SIP halves (one dialog each, facing a phone, a customer or
//! tonewall's trunk), the links between them, and the calls on users' lines that BroadWorks
//! would show (`callhalf-N:0`), with their Xsi XML. Pure data; the B2BUA drives it.
//!
//! Must never: do I/O, read the clock, or panic on input.

use std::collections::{BTreeMap, HashMap};

use super::sdp;
use super::ua::Dlg;
use crate::sip::message::Request;

/// Who a half faces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    /// A user's phone (its number).
    Phone(String),
    /// The calling phone (its From user).
    Customer(String),
    /// tonewall's trunk (the DNIS dialled).
    Trunk(String),
}

impl Party {
    /// The log label: `phone:2001`, `customer:0400…`, `trunk:…`.
    pub fn label(&self) -> String {
        match self {
            Party::Phone(n) => format!("phone:{n}"),
            Party::Customer(n) => format!("customer:{n}"),
            Party::Trunk(d) => format!("trunk:{d}"),
        }
    }

    /// What `SimCall::peer` shows for a phone wired to this party.
    pub fn peer(&self) -> String {
        match self {
            Party::Phone(n) | Party::Customer(n) => format!("phone:{n}"),
            Party::Trunk(d) => format!("trunk:{d}"),
        }
    }

    pub fn number(&self) -> &str {
        match self {
            Party::Phone(n) | Party::Customer(n) | Party::Trunk(n) => n,
        }
    }
}

/// One SIP dialog of the B2BUA.
#[derive(Clone, Debug)]
pub struct Half {
    pub id: u64,
    pub party: Party,
    pub dlg: Dlg,
    /// The party's latest SDP.
    pub sdp: Option<String>,
    /// The half this one's media is wired to.
    pub link: Option<u64>,
    /// Handed back after a REFER: a BYE on it goes no further.
    pub detached: bool,
    /// Our SDP origin version towards this party.
    pub version: u64,
}

/// A call on a user's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub n: u64,
    pub user: String,
    pub personality: &'static str,
    pub state: &'static str,
    pub user_half: Option<u64>,
    pub remote_half: Option<u64>,
    /// `tel:…` of the far end.
    pub remote: String,
    pub start_ms: i64,
    pub answer_ms: Option<i64>,
}

impl Call {
    pub fn call_id(&self) -> String {
        format!("callhalf-{}:0", self.n)
    }

    /// The `<callId>…` children of an Xsi `Call` (tags prefixed with `p`, e.g. `xsi:`).
    pub fn xml_body(&self, p: &str) -> String {
        let mut s = format!(
            "<{p}callId>{}</{p}callId><{p}extTrackingId>{}:1</{p}extTrackingId>\
<{p}personality>{}</{p}personality><{p}state>{}</{p}state><{p}remoteParty><{p}address>{}</{p}address>\
<{p}callType>Network</{p}callType></{p}remoteParty><{p}startTime>{}</{p}startTime>",
            self.call_id(),
            self.n,
            self.personality,
            self.state,
            xml_escape(&self.remote),
            self.start_ms
        );
        if let Some(a) = self.answer_ms {
            s.push_str(&format!("<{p}answerTime>{a}</{p}answerTime>"));
        }
        s
    }
}

/// Escape text for XML content.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `callhalf-N:0` → N.
pub fn parse_call_id(id: &str) -> Option<u64> {
    id.strip_prefix("callhalf-")?
        .strip_suffix(":0")?
        .parse()
        .ok()
}

/// Every half and call.
#[derive(Debug, Default)]
pub struct Model {
    next: u64,
    pub halves: HashMap<u64, Half>,
    pub calls: BTreeMap<u64, Call>,
}

impl Model {
    pub fn alloc(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn add_half(&mut self, id: u64, party: Party, dlg: Dlg, sdp: Option<String>) {
        self.halves.insert(
            id,
            Half {
                id,
                party,
                dlg,
                sdp,
                link: None,
                detached: false,
                version: 1,
            },
        );
    }

    pub fn link(&mut self, a: u64, b: u64) {
        if let Some(h) = self.halves.get_mut(&a) {
            h.link = Some(b);
        }
        if let Some(h) = self.halves.get_mut(&b) {
            h.link = Some(a);
        }
    }

    pub fn half_for(&self, req: &Request) -> Option<u64> {
        self.halves
            .values()
            .find(|h| h.dlg.matches(req))
            .map(|h| h.id)
    }

    /// `sdp` restamped with this half's origin and the next version.
    pub fn stamp(&mut self, half: u64, body: &str) -> String {
        match self.halves.get_mut(&half) {
            Some(h) => {
                h.version += 1;
                sdp::restamp(body, "sim", half, h.version)
            }
            None => sdp::restamp(body, "sim", half, 1),
        }
    }

    pub fn call(&self, user: &str, call_id: &str) -> Option<&Call> {
        let n = parse_call_id(call_id)?;
        self.calls.get(&n).filter(|c| c.user == user)
    }

    /// The calls on a user's line, oldest first.
    pub fn user_calls(&self, user: &str) -> Vec<&Call> {
        self.calls.values().filter(|c| c.user == user).collect()
    }

    /// The call that uses `half`, either side.
    pub fn call_of_half(&self, half: u64) -> Option<u64> {
        self.calls
            .values()
            .find(|c| c.user_half == Some(half) || c.remote_half == Some(half))
            .map(|c| c.n)
    }

    /// What the call's user phone is wired to.
    pub fn peer(&self, c: &Call) -> String {
        c.user_half
            .and_then(|u| self.halves.get(&u)?.link)
            .and_then(|l| self.halves.get(&l))
            .map(|h| h.party.peer())
            .unwrap_or_else(|| "none".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_labels_and_xml() {
        assert_eq!(parse_call_id("callhalf-12:0"), Some(12));
        assert_eq!(parse_call_id("callhalf-x:0"), None);
        assert_eq!(parse_call_id("12"), None);
        assert_eq!(Party::Trunk("555".into()).label(), "trunk:555");
        assert_eq!(Party::Customer("0400".into()).peer(), "phone:0400");
        let c = Call {
            n: 3,
            user: "rep1@sim.example".into(),
            personality: "Terminator",
            state: "Held",
            user_half: None,
            remote_half: None,
            remote: "tel:0400".into(),
            start_ms: 1,
            answer_ms: Some(2),
        };
        let x = c.xml_body("xsi:");
        assert!(x.starts_with("<xsi:callId>callhalf-3:0</xsi:callId><xsi:extTrackingId>3:1"));
        assert!(x.contains("<xsi:state>Held</xsi:state>"));
        assert!(x.ends_with("<xsi:answerTime>2</xsi:answerTime>"));
        let mut m = Model::default();
        m.calls.insert(3, c);
        assert!(m.call("rep1@sim.example", "callhalf-3:0").is_some());
        assert!(m.call("other", "callhalf-3:0").is_none());
        assert_eq!(m.peer(&m.calls[&3]), "none");
    }
}
