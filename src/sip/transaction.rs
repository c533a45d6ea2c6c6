//! Sans-IO RFC 3261 §17 transaction state machines, with RFC 6026's `Accepted` states:
//! INVITE server, non-INVITE server, INVITE client, non-INVITE client.
//!
//! Inputs are a message, a fired timer and the current `Instant`; outputs are an ordered list
//! of `Send`, `SetTimer`, `ClearTimer`, `ToTu` and `Terminated`. Must never: read the clock,
//! own a socket, spawn a task, or panic on input.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::message::{Message, Method, Request, Response};

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const T4: Duration = Duration::from_secs(5);

/// The RFC 3261 timers (L and M are RFC 6026's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

/// Why a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Normal completion.
    Done,
    /// Timer B, F or H fired: the peer never answered / acknowledged.
    Timeout,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send(Message),
    SetTimer(Timer, Instant),
    ClearTimer(Timer),
    ToTu(Message),
    Terminated(End),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InviteServer,
    NonInviteServer,
    InviteClient,
    NonInviteClient,
}

/// One transaction.
#[derive(Debug)]
pub struct Transaction {
    kind: Kind,
    state: State,
    reliable: bool,
    request: Request,
    last_response: Option<Response>,
    ack: Option<Request>,
    /// The current retransmit interval for A/E/G.
    interval: Duration,
    timers: HashMap<Timer, Instant>,
}

impl Transaction {
    fn new(kind: Kind, state: State, request: Request, reliable: bool) -> Transaction {
        Transaction {
            kind,
            state,
            reliable,
            request,
            last_response: None,
            ack: None,
            interval: T1,
            timers: HashMap::new(),
        }
    }

    /// A server transaction for a request just received; the request goes to the TU.
    pub fn server(request: Request, reliable: bool) -> (Transaction, Vec<Output>) {
        let (kind, state) = if request.method == Method::Invite {
            (Kind::InviteServer, State::Proceeding)
        } else {
            (Kind::NonInviteServer, State::Trying)
        };
        let out = vec![Output::ToTu(Message::Request(request.clone()))];
        (Transaction::new(kind, state, request, reliable), out)
    }

    /// A client transaction: sends `request` now.
    pub fn client(request: Request, reliable: bool, now: Instant) -> (Transaction, Vec<Output>) {
        let invite = request.method == Method::Invite;
        let (kind, state) = if invite {
            (Kind::InviteClient, State::Calling)
        } else {
            (Kind::NonInviteClient, State::Trying)
        };
        let mut t = Transaction::new(kind, state, request.clone(), reliable);
        let mut out = vec![Output::Send(Message::Request(request))];
        if !reliable {
            t.set(&mut out, if invite { Timer::A } else { Timer::E }, now + T1);
        }
        t.set(
            &mut out,
            if invite { Timer::B } else { Timer::F },
            now + 64 * T1,
        );
        (t, out)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The earliest pending timer.
    pub fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at))
    }

    fn set(&mut self, out: &mut Vec<Output>, t: Timer, at: Instant) {
        self.timers.insert(t, at);
        out.push(Output::SetTimer(t, at));
    }

    fn clear(&mut self, out: &mut Vec<Output>, t: Timer) {
        if self.timers.remove(&t).is_some() {
            out.push(Output::ClearTimer(t));
        }
    }

    fn terminate(&mut self, out: &mut Vec<Output>, why: End) {
        let pending: Vec<Timer> = self.timers.keys().copied().collect();
        for t in pending {
            self.clear(out, t);
        }
        self.state = State::Terminated;
        out.push(Output::Terminated(why));
    }

    /// Wait `d` in a state, or terminate at once on a reliable transport (d = 0).
    fn linger(&mut self, out: &mut Vec<Output>, t: Timer, d: Duration, now: Instant) {
        if self.reliable {
            self.terminate(out, End::Done);
        } else {
            self.set(out, t, now + d);
        }
    }

    /// The TU sends a response (server transactions).
    pub fn send_response(&mut self, resp: Response, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let status = resp.status;
        match (self.kind, self.state) {
            (Kind::InviteServer, State::Proceeding) => {
                out.push(Output::Send(Message::Response(resp.clone())));
                self.last_response = Some(resp);
                if (200..300).contains(&status) {
                    self.state = State::Accepted;
                    self.set(&mut out, Timer::L, now + 64 * T1);
                } else if status >= 300 {
                    self.state = State::Completed;
                    if !self.reliable {
                        self.interval = T1;
                        self.set(&mut out, Timer::G, now + T1);
                    }
                    self.set(&mut out, Timer::H, now + 64 * T1);
                }
            }
            (Kind::InviteServer, State::Accepted) if (200..300).contains(&status) => {
                // The TU retransmits its 2xx (RFC 6026 §7.1).
                out.push(Output::Send(Message::Response(resp)));
            }
            (Kind::NonInviteServer, State::Trying | State::Proceeding) => {
                out.push(Output::Send(Message::Response(resp.clone())));
                self.last_response = Some(resp);
                if status < 200 {
                    self.state = State::Proceeding;
                } else {
                    self.state = State::Completed;
                    self.linger(&mut out, Timer::J, 64 * T1, now);
                }
            }
            _ => {}
        }
        out
    }

    /// A request matching this server transaction arrived (a retransmission, or ACK).
    pub fn on_request(&mut self, req: Request, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let resend = |out: &mut Vec<Output>, r: &Option<Response>| {
            if let Some(r) = r {
                out.push(Output::Send(Message::Response(r.clone())));
            }
        };
        match (self.kind, self.state, &req.method) {
            (Kind::InviteServer, State::Completed, Method::Ack) => {
                self.state = State::Confirmed;
                self.clear(&mut out, Timer::G);
                self.clear(&mut out, Timer::H);
                self.linger(&mut out, Timer::I, T4, now);
            }
            (Kind::InviteServer, State::Proceeding | State::Completed, Method::Invite)
            | (Kind::NonInviteServer, State::Proceeding | State::Completed, _) => {
                resend(&mut out, &self.last_response);
            }
            // Accepted absorbs INVITE retransmissions (the TU retransmits 2xx); Confirmed
            // absorbs ACKs; Trying absorbs request retransmissions.
            _ => {}
        }
        out
    }

    /// A response matching this client transaction arrived.
    pub fn on_response(&mut self, resp: Response, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let status = resp.status;
        match (self.kind, self.state) {
            (Kind::InviteClient, State::Calling | State::Proceeding) => {
                if status < 200 {
                    self.state = State::Proceeding;
                    self.clear(&mut out, Timer::A);
                    self.clear(&mut out, Timer::B);
                    out.push(Output::ToTu(Message::Response(resp)));
                } else if status < 300 {
                    self.state = State::Accepted;
                    self.clear(&mut out, Timer::A);
                    self.clear(&mut out, Timer::B);
                    out.push(Output::ToTu(Message::Response(resp)));
                    self.set(&mut out, Timer::M, now + 64 * T1);
                } else {
                    self.state = State::Completed;
                    self.clear(&mut out, Timer::A);
                    self.clear(&mut out, Timer::B);
                    let ack = self.ack_for(&resp);
                    out.push(Output::Send(Message::Request(ack.clone())));
                    self.ack = Some(ack);
                    out.push(Output::ToTu(Message::Response(resp)));
                    self.linger(&mut out, Timer::D, Duration::from_secs(32), now);
                }
            }
            (Kind::InviteClient, State::Accepted) if (200..300).contains(&status) => {
                out.push(Output::ToTu(Message::Response(resp)));
            }
            (Kind::InviteClient, State::Completed) if status >= 300 => {
                if let Some(a) = &self.ack {
                    out.push(Output::Send(Message::Request(a.clone())));
                }
            }
            (Kind::NonInviteClient, State::Trying | State::Proceeding) => {
                if status < 200 {
                    self.state = State::Proceeding;
                    out.push(Output::ToTu(Message::Response(resp)));
                } else {
                    self.state = State::Completed;
                    self.clear(&mut out, Timer::E);
                    self.clear(&mut out, Timer::F);
                    out.push(Output::ToTu(Message::Response(resp)));
                    self.linger(&mut out, Timer::K, T4, now);
                }
            }
            _ => {}
        }
        out
    }

    /// A timer fired. Timers this transaction has not set (stale ones) are ignored.
    pub fn on_timer(&mut self, timer: Timer, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.timers.remove(&timer).is_none() {
            return out;
        }
        match timer {
            Timer::A => {
                out.push(Output::Send(Message::Request(self.request.clone())));
                self.interval *= 2;
                self.set(&mut out, Timer::A, now + self.interval);
            }
            Timer::E => {
                out.push(Output::Send(Message::Request(self.request.clone())));
                self.interval = if self.state == State::Proceeding {
                    T2
                } else {
                    (self.interval * 2).min(T2)
                };
                self.set(&mut out, Timer::E, now + self.interval);
            }
            Timer::G => {
                if let Some(r) = &self.last_response {
                    out.push(Output::Send(Message::Response(r.clone())));
                }
                self.interval = (self.interval * 2).min(T2);
                self.set(&mut out, Timer::G, now + self.interval);
            }
            Timer::B | Timer::F | Timer::H => self.terminate(&mut out, End::Timeout),
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M => {
                self.terminate(&mut out, End::Done)
            }
        }
        out
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
    fn ack_for(&self, resp: &Response) -> Request {
        let mut ack = Request::new(Method::Ack, self.request.uri.clone());
        if let Some(v) = self.request.headers.get("Via") {
            ack.headers.push("Via", v);
        }
        for r in self.request.headers.get_all("Route") {
            ack.headers.push("Route", r);
        }
        ack.headers.push("Max-Forwards", "70");
        for name in ["From", "Call-ID"] {
            if let Some(v) = self.request.headers.get(name) {
                ack.headers.push(name, v);
            }
        }
        if let Some(to) = resp.headers.get("To") {
            ack.headers.push("To", to);
        }
        let seq = self.request.headers.cseq().map(|c| c.0).unwrap_or(1);
        ack.headers.push("CSeq", format!("{seq} ACK"));
        ack
    }
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;
