//! Xsi over HTTPS: the Xsi stub served over TLS on 127.0.0.1 with a certificate for
//! `localhost`/`127.0.0.1` signed by a throwaway CA made here. Through `xsi_ca_file`
//! (`Broadworks::from_config`) an action succeeds with Basic auth and an event arrives on
//! the channel and is acknowledged; without the CA the action fails `Unreachable` and the
//! stub never sees a request.

mod xsi_stub;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use tonewall::carrier::broadworks::Broadworks;
use tonewall::carrier::{CallEventKind, Carrier, CarrierError};
use tonewall::config::{CarrierConfig, CarrierKind};
use xsi_stub::*;

/// A throwaway CA and a server certificate it signed.
struct Pki {
    ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "tonewall test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: leaf_cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// Accepts TCP, runs each TLS handshake in its own task, and hands finished streams to
/// axum; failed handshakes are counted.
struct TlsListener {
    local: std::net::SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The Xsi stub over HTTPS: the stub, its port, and the count of failed handshakes.
async fn tls_stub(pki: &Pki) -> (Arc<Stub>, u16, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = tcp.local_addr().unwrap();
    let failed = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel(16);
    let f = failed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, peer)) = tcp.accept().await else {
                continue;
            };
            let (acceptor, tx, f) = (acceptor.clone(), tx.clone(), f.clone());
            tokio::spawn(async move {
                let hs = tokio::time::timeout(Duration::from_secs(3), acceptor.accept(sock));
                match hs.await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    _ => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let st = Stub::new();
    let app = axum::Router::new().fallback(handle).with_state(st.clone());
    let listener = TlsListener { local, rx };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (st, local.port(), failed)
}

fn carrier_config(url: &str, ca_file: Option<&std::path::Path>) -> CarrierConfig {
    let var = "TONEWALL_TEST_XSI_TLS_PASSWORD";
    std::env::set_var(var, PASSWORD);
    CarrierConfig {
        id: "bw".into(),
        kind: CarrierKind::Broadworks,
        peers: vec![],
        xsi_url: Some(url.into()),
        user: Some(USER.into()),
        password_env: Some(var.into()),
        dial_prefix: None,
        xsi_ca_file: ca_file.map(|p| p.to_string_lossy().into_owned()),
        step_timeout_s: 10,
    }
}

fn ca_file(pem: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), pem).unwrap();
    f
}

#[tokio::test]
async fn actions_and_events_over_https_with_a_private_ca() {
    let pki = pki();
    let (st, port, failed) = tls_stub(&pki).await;
    let ca = ca_file(&pki.ca_pem);
    let url = format!("https://127.0.0.1:{port}");
    let bw = Broadworks::from_config(&carrier_config(&url, Some(ca.path())))
        .unwrap()
        .with_timing(timing());

    // An action, with Basic auth, over TLS.
    bw.hold(REP, "callhalf-1:0").await.expect("Hold over https");
    let holds = st.requests("PUT", &format!("{ACT}/user/{REP}/calls/callhalf-1:0/Hold"));
    assert_eq!(holds.len(), 1, "{:?}", st.log());
    assert_eq!(holds[0].auth.as_deref(), Some(AUTH));

    // The event channel over TLS: one event arrives and is acknowledged.
    let mut rx = bw.events();
    bw.watch(REP).await.expect("watch over https");
    until("a subscription", || {
        st.requests("POST", &format!("{EVT}/user/{REP}")).len() == 1
    })
    .await;
    st.write(&event("event_call_answered.xml", "tls-ev-1"));
    assert_eq!(
        next(&mut rx).await,
        call_event("tls-ev-1", "callhalf-1:0", CallEventKind::Answered)
    );
    until("the event's ack", || st.acks("tls-ev-1") == 1).await;
    assert!(st.log().iter().all(|r| r.auth.as_deref() == Some(AUTH)));

    // The DNS name in the certificate works too.
    let by_name = Broadworks::from_config(&carrier_config(
        &format!("https://localhost:{port}"),
        Some(ca.path()),
    ))
    .unwrap()
    .with_timing(timing());
    by_name
        .resume(REP, "callhalf-1:0")
        .await
        .expect("Talk over https://localhost");

    // Closing deletes the channel over TLS.
    bw.close().await;
    assert_eq!(
        st.requests("DELETE", &format!("{EVT}/channel/ch-1")).len(),
        1,
        "{:?}",
        st.log()
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_untrusted_certificate_is_unreachable_never_accepted() {
    let pki = pki();
    let (st, port, failed) = tls_stub(&pki).await;
    let url = format!("https://127.0.0.1:{port}");
    // Neither the built-in roots nor another CA trust the stub's certificate.
    let other = pki_other_ca();
    for bw in [
        Broadworks::new("bw", &url, USER, SecretString::from(PASSWORD)).unwrap(),
        Broadworks::from_config(&carrier_config(&url, Some(other.path()))).unwrap(),
    ] {
        let bw = bw.with_timing(timing());
        match bw.hold(REP, "callhalf-1:0").await {
            Err(CarrierError::Unreachable { action, detail }) => {
                assert_eq!(action, "Hold");
                assert!(detail.contains("certificate"), "{detail}");
                assert!(!detail.contains(PASSWORD), "{detail}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
    until("the refused handshakes", || {
        failed.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(st.log().is_empty(), "a request got through: {:?}", st.log());
}

fn pki_other_ca() -> tempfile::NamedTempFile {
    ca_file(&pki().ca_pem)
}

#[test]
fn a_ca_file_without_a_certificate_fails_start_up() {
    let empty = ca_file("not a certificate\n");
    let e = Broadworks::from_config(&carrier_config("https://127.0.0.1:1", Some(empty.path())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("xsi_ca_file"), "{e}");
    let missing = std::path::Path::new("/nonexistent/tonewall-ca.pem");
    let e = Broadworks::from_config(&carrier_config("https://127.0.0.1:1", Some(missing)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("xsi_ca_file"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}
