//! The Xsi HTTP client: URLs under the XSP's three roots, percent-encoding of user ids,
//! call ids and addresses, Basic auth, the per-request timeout, and the mapping of every
//! answer to `CarrierResult` (`ErrorInfo` → `Refused`, no answer → `Unreachable`, an
//! unreadable answer → `BadResponse`).
//!
//! Must never: log or format the password or the Authorization header (the password is a
//! `SecretString`, exposed only to reqwest's `basic_auth`, which marks the header
//! sensitive); follow redirects (they could carry the credentials elsewhere).

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use super::xml;
use crate::carrier::{CarrierError, CarrierResult};

/// What stays literal in a path segment: unreserved characters, `@` and `:`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b':');
/// What stays literal in a query value: unreserved characters only (`+` is `%2B`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A user id or call id as one path segment.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A query value.
pub fn query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// Speaks HTTP to one XSP as one Xsi login.
pub struct XsiClient {
    http: reqwest::Client,
    base: String,
    user: String,
    password: SecretString,
    /// Limit on each request, answer body included (not on the event channel's body).
    pub timeout: Duration,
}

impl std::fmt::Debug for XsiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsiClient")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Why a request got no answer, without the URL's query or any header.
fn detail(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut s = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

impl XsiClient {
    pub fn new(base: &str, user: &str, password: SecretString) -> anyhow::Result<XsiClient> {
        XsiClient::with_roots(base, user, password, Vec::new())
    }

    /// As `new`, trusting `extra_roots` (a private CA) besides the built-in web roots.
    pub fn with_roots(
        base: &str,
        user: &str,
        password: SecretString,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> anyhow::Result<XsiClient> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5));
        for cert in extra_roots {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build()?;
        Ok(XsiClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            password,
            timeout: Duration::from_secs(5),
        })
    }

    /// `{xsi_url}/com.broadsoft.xsi-actions/v2.0{path}`.
    pub fn actions_url(&self, path: &str) -> String {
        format!("{}/com.broadsoft.xsi-actions/v2.0{path}", self.base)
    }

    /// `{xsi_url}/com.broadsoft.xsi-events/v2.0{path}`.
    pub fn events_url(&self, path: &str) -> String {
        format!("{}/com.broadsoft.xsi-events/v2.0{path}", self.base)
    }

    /// The streaming channel's URL.
    pub fn channel_url(&self) -> String {
        format!(
            "{}/com.broadsoft.async/com.broadsoft.xsi-events/v2.0/channel",
            self.base
        )
    }

    fn builder(&self, method: Method, url: &str, body: Option<String>) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, url)
            .basic_auth(&self.user, Some(self.password.expose_secret()));
        if let Some(b) = body {
            rb = rb
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/xml; charset=UTF-8",
                )
                .body(b);
        }
        rb
    }

    /// One request; the body of a 2xx answer, or the error it maps to.
    pub async fn send(
        &self,
        action: &'static str,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> CarrierResult<String> {
        let resp = self
            .builder(method, url, body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| CarrierError::Unreachable {
                action,
                detail: detail(&e, self.timeout),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CarrierError::Unreachable {
            action,
            detail: detail(&e, self.timeout),
        })?;
        answer(action, status, &text)
    }

    /// Open the event channel: the response once its headers are in (its body is the
    /// stream, read without a time limit).
    pub async fn open_channel(&self, body: String) -> CarrierResult<Response> {
        const ACTION: &str = "channel";
        let fut = self
            .builder(Method::POST, &self.channel_url(), Some(body))
            .send();
        let resp = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                return Err(CarrierError::Unreachable {
                    action: ACTION,
                    detail: format!("no answer within {} ms", self.timeout.as_millis()),
                })
            }
            Ok(r) => r.map_err(|e| CarrierError::Unreachable {
                action: ACTION,
                detail: detail(&e, self.timeout),
            })?,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = tokio::time::timeout(self.timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(answer(ACTION, status, &text)
            .err()
            .unwrap_or(CarrierError::BadResponse {
                action: ACTION,
                detail: format!("unexpected HTTP {}", status.as_u16()),
            }))
    }
}

/// Map a status and body to the action's result.
pub fn answer(action: &'static str, status: StatusCode, body: &str) -> CarrierResult<String> {
    if status.is_success() {
        return Ok(body.to_owned());
    }
    if status.is_client_error() || status.is_server_error() {
        let summary = match xml::parse_error_info(body) {
            Ok(info) if !info.summary.is_empty() => info.summary,
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        };
        return Err(CarrierError::Refused {
            action,
            status: status.as_u16(),
            summary,
        });
    }
    Err(CarrierError::BadResponse {
        action,
        detail: format!("unexpected HTTP {}", status.as_u16()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(seg("rep1@sim.example"), "rep1@sim.example");
        assert_eq!(seg("callhalf-1:0"), "callhalf-1:0");
        assert_eq!(seg("a/b c?#%"), "a%2Fb%20c%3F%23%25");
        assert_eq!(query("+61390001000"), "%2B61390001000");
        assert_eq!(query("sip:a@b"), "sip%3Aa%40b");
    }

    #[test]
    fn answers_map_to_errors() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><ErrorInfo xmlns="http://schema.broadsoft.com/xsi"><summary>[Error 4008] Call not found</summary><summaryEnglish>[Error 4008] Call not found</summaryEnglish><errorCode>4008</errorCode></ErrorInfo>"#;
        assert_eq!(
            answer("Hold", StatusCode::NOT_FOUND, body),
            Err(CarrierError::Refused {
                action: "Hold",
                status: 404,
                summary: "[Error 4008] Call not found".into()
            })
        );
        assert_eq!(
            answer("Hold", StatusCode::UNAUTHORIZED, ""),
            Err(CarrierError::Refused {
                action: "Hold",
                status: 401,
                summary: "Unauthorized".into()
            })
        );
        assert!(matches!(
            answer("Hold", StatusCode::FOUND, ""),
            Err(CarrierError::BadResponse { .. })
        ));
        assert_eq!(answer("Hold", StatusCode::OK, "x"), Ok("x".into()));
    }
}
