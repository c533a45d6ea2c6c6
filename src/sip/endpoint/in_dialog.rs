//! In-dialog requests of the trunk endpoint: ACK, BYE, re-INVITE (hold/resume) on an
//! established leg, and tonewall's own BYE when the session layer hangs a leg up.
//!
//! Must never: create a dialog (only `on_invite` does) or answer for an unknown one with
//! anything but 481.

use std::net::SocketAddr;
use std::time::Instant;

use super::*;

impl Endpoint {
    pub(super) fn find_call(&self, req: &Request) -> Option<String> {
        let ck = format!("{}|{}", req.headers.call_id()?, req.headers.tag("To")?);
        self.calls
            .get(&ck)
            .filter(|c| c.dialog.matches(req))
            .map(|_| ck)
    }

    pub(super) fn on_dialog_ack(&mut self, req: &Request) {
        let Some(ck) = self.find_call(req) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&ck) else {
            return;
        };
        if matches!(call.state, CallState::Answered { .. }) {
            call.state = CallState::Up;
            if let Some(sockets) = call.sockets.take() {
                tracing::info!(session = %call.session, role = %call.role, "leg up");
                self.handler.leg_up(LegUp {
                    session: call.session.clone(),
                    role: call.role,
                    sockets,
                    params: call.params.clone(),
                });
            }
        } else {
            call.reinvite = None;
        }
    }

    pub(super) fn on_in_dialog(&mut self, req: Request, key: &str, now: Instant) {
        let Some(ck) = self.find_call(&req) else {
            self.respond(key, Self::simple(&req, 481), now);
            return;
        };
        let seq = req.headers.cseq().map(|c| c.0).unwrap_or(0);
        let in_order = self
            .calls
            .get_mut(&ck)
            .map(|c| c.dialog.accept_remote_cseq(seq))
            .unwrap_or(false);
        if !in_order {
            self.respond(key, Self::simple(&req, 500), now);
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond(key, Self::simple(&req, 200), now);
                if let Some(call) = self.calls.remove(&ck) {
                    tracing::info!(session = %call.session, role = %call.role, "leg ended by BYE");
                    self.handler
                        .leg_ended(&call.session, call.role, LegEnd::Bye);
                    self.leg_gone(&call.session, call.role, now);
                }
            }
            Method::Invite => self.on_reinvite(req, key, &ck, now),
            Method::Notify => self.on_notify(&req, key, &ck, now),
            Method::Refer => {
                let tag = self.calls.get(&ck).map(|c| c.dialog.local_tag.clone());
                self.respond(key, req.response(403, "Forbidden", tag.as_deref()), now);
            }
            Method::Options | Method::Info => {
                self.respond(key, Self::simple(&req, 200), now);
            }
            _ => {
                let r = Self::simple(&req, 501).with_header("Allow", ALLOW);
                self.respond(key, r, now);
            }
        }
    }

    pub(super) fn on_reinvite(&mut self, req: Request, key: &str, ck: &str, now: Instant) {
        let codecs = self.cfg.codecs.clone();
        let Some(call) = self.calls.get_mut(ck) else {
            return;
        };
        let offer = String::from_utf8_lossy(&req.body);
        let version = call.sdp_version + 1;
        match sdp::answer(&offer, &codecs, call.media_ip, call.media_port, version) {
            Ok((params, answer)) => {
                call.sdp_version = version;
                call.params = params.clone();
                if let Some(c) = req.headers.contact_uri() {
                    call.dialog.remote_target = c;
                }
                let (session, role) = (call.session.clone(), call.role);
                let tag = call.dialog.local_tag.clone();
                let flow = call.flow.clone();
                let ok = req
                    .response(200, "OK", Some(&tag))
                    .with_header("Contact", self.contact(&flow))
                    .with_header("Allow", ALLOW)
                    .with_body("application/sdp", answer);
                let reliable = flow.transport.reliable();
                if let Some(call) = self.calls.get_mut(ck) {
                    call.reinvite = Some(AnswerRetransmit::new(ok.clone(), reliable, now));
                }
                self.respond(key, ok, now);
                tracing::info!(%session, %role, direction = ?params.direction, "leg media changed");
                self.handler.leg_media(&session, role, params);
            }
            Err(_) => {
                let tag = call.dialog.local_tag.clone();
                self.respond(key, req.response(488, reason_phrase(488), Some(&tag)), now);
            }
        }
    }

    pub(super) fn hang_up(&mut self, session: &SessionId, role: LegRole, now: Instant) {
        let Some(ck) = self
            .calls
            .iter()
            .find(|(_, c)| c.session == *session && c.role == role)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(call) = self.calls.remove(&ck) else {
            return;
        };
        if matches!(call.state, CallState::Ringing { .. }) {
            if let Some(st) = self.server_txs.get(&call.invite_key) {
                let r = st.tx.request().response(
                    480,
                    "Temporarily Unavailable",
                    Some(&call.dialog.local_tag),
                );
                self.respond(&call.invite_key, r, now);
            }
        } else {
            self.send_bye(call.dialog, &call.flow, now);
        }
        tracing::info!(%session, %role, "leg hung up");
        self.handler.leg_ended(session, role, LegEnd::HungUp);
        self.leg_gone(session, role, now);
    }

    pub(super) fn send_bye(&mut self, mut dialog: Dialog, flow: &Flow, now: Instant) {
        let (bye, f) = self.dialog_request(&mut dialog, Method::Bye, flow);
        self.send_client(bye, f, now);
    }

    /// Our host and SIP port as the peer on `flow` reaches them (advertise, or local).
    pub(super) fn local_host(&self, flow: &Flow) -> (String, u16) {
        let local = self.transports.first(flow.transport).unwrap_or(flow.local);
        let host = self
            .cfg
            .advertise
            .clone()
            .unwrap_or_else(|| host_of(local_ip_towards(local, flow.peer)));
        (host, local.port())
    }

    /// A new in-dialog request from us, and the flow it goes out on (towards the first
    /// route when it is an IP literal, else the dialog's flow).
    pub(super) fn dialog_request(
        &self,
        dialog: &mut Dialog,
        method: Method,
        flow: &Flow,
    ) -> (Request, Flow) {
        let (host, port) = self.local_host(flow);
        let branch = format!("z9hG4bK{}", random_token());
        let via = format!(
            "SIP/2.0/{} {host}:{port};branch={branch};rport",
            flow.transport.as_str(),
        );
        let req = dialog.request(method, &via);
        let mut f = flow.clone();
        if let Some(addr) = route_addr(dialog.route_set.first().map(String::as_str)) {
            f.peer = addr;
        }
        (req, f)
    }

    /// Send `req` through a new client transaction; returns its key (`branch|METHOD`).
    pub(super) fn send_client(&mut self, req: Request, flow: Flow, now: Instant) -> String {
        let key = format!(
            "{}|{}",
            req.branch().unwrap_or_default(),
            req.method.as_str()
        );
        let (tx, out) = Transaction::client(req, flow.transport.reliable(), now);
        self.process(&flow, out);
        self.client_txs.insert(key.clone(), ServerTx { tx, flow });
        key
    }
}

/// The address of a route URI whose host is an IP literal (`<sip:192.0.2.1:5060;lr>`).
fn route_addr(route: Option<&str>) -> Option<SocketAddr> {
    let r = route?.trim().trim_start_matches('<');
    let r = r.split('>').next()?;
    let uri = sipx_sip::uri::Uri::parse(bytes::Bytes::copy_from_slice(r.as_bytes())).ok()?;
    match uri.host()? {
        sipx_sip::uri::Host::Ip(ip) => Some(SocketAddr::new(*ip, uri.port().unwrap_or(5060))),
        _ => None,
    }
}
