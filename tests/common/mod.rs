//! Shared harness for the end-to-end tests: runs the real `tonewall` binary on loopback with
//! a generated config, talks to its REST API, builds RTP pcaps for SIPp, runs SIPp.
#![allow(dead_code)]

pub mod carrier;
pub mod corpus;
pub mod detect;
pub mod pcap;
pub mod tones;
pub mod uac;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The API key the generated configs accept (tenant `acme`).
pub const API_KEY: &str = "test-key-acme-0123456789";
/// A second tenant's key.
pub const OTHER_KEY: &str = "test-key-other-0123456789";

pub fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A UDP+TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(t) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = t.local_addr() else { continue };
        if UdpSocket::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free port");
}

/// A free even-aligned block of `n` UDP ports (for `media.ports`).
pub fn free_port_block(n: u16) -> u16 {
    'outer: for _ in 0..200 {
        let base = (20000 + (rand_u16() % 20000)) & !1;
        for p in base..base + n {
            if UdpSocket::bind(("127.0.0.1", p)).is_err() {
                continue 'outer;
            }
        }
        return base;
    }
    panic!("no free port block");
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (std::process::id() << 7)) as u16
}

/// Options for a test server.
pub struct ServerOpts {
    pub dnis: String,
    pub ttl_s: u64,
    pub peers: String,
    pub rtp_ports: u16,
    pub rtp_timeout_s: u64,
    pub extra: String,
    /// Extra keys for tenant `acme` (e.g. `webhook_url = "..."`).
    pub tenant_extra: String,
    /// Extra environment variables for the server process (e.g.
    /// `TONEWALL_TEST_DISABLE_MASKING=1`).
    pub env: Vec<(String, String)>,
    /// The SIP port to listen on (picked free when `None`); known ahead when a carrier
    /// simulator must be told where the trunk is before the server starts.
    pub sip_port: Option<u16>,
    /// The `[[carrier]]` id tenant `acme` uses (`main` is manual; define others in `extra`).
    pub carrier: String,
}

impl ServerOpts {
    pub fn with_rtp_timeout(mut self, s: u64) -> Self {
        self.rtp_timeout_s = s;
        self
    }
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            dnis: "+61390001000-+61390001009".into(),
            ttl_s: 30,
            peers: "127.0.0.0/8".into(),
            rtp_ports: 64,
            rtp_timeout_s: 30,
            extra: String::new(),
            tenant_extra: String::new(),
            env: Vec::new(),
            sip_port: None,
            carrier: "main".into(),
        }
    }
}

/// The real binary, running with a generated config; killed on drop.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http: String,
    pub sip_port: u16,
    pub log_path: PathBuf,
}

impl Server {
    pub fn start(opts: ServerOpts) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let sip_port = opts.sip_port.unwrap_or_else(free_port);
        let http_port = free_port();
        let rtp_base = free_port_block(opts.rtp_ports);
        let config = format!(
            r#"
[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]

[media]
bind = "127.0.0.1"
ports = "{rtp_lo}-{rtp_hi}"
holdback_ms = 40
rtp_timeout_s = {rtp_timeout}

[http]
listen = "127.0.0.1:{http_port}"

[dnis]
ttl_s = {ttl}

[[carrier]]
id = "main"
kind = "manual"
peers = ["{peers}"]

[[tenant]]
id = "acme"
carrier = "{carrier}"
api_keys = ["{key}"]
dnis = ["{dnis}"]
fields = ["pan", "expiry", "cvv"]
{tenant_extra}

[[tenant]]
id = "other"
carrier = "main"
api_keys = ["{other}"]
dnis = ["+61290002000-+61290002009"]

[audit]
path = "{audit}"
{extra}
"#,
            rtp_lo = rtp_base,
            rtp_hi = rtp_base + opts.rtp_ports - 1,
            ttl = opts.ttl_s,
            rtp_timeout = opts.rtp_timeout_s,
            peers = opts.peers,
            key = key_hash(API_KEY),
            other = key_hash(OTHER_KEY),
            dnis = opts.dnis,
            audit = dir.path().join("audit.db").display(),
            extra = opts.extra,
            tenant_extra = opts.tenant_extra,
            carrier = opts.carrier,
        );
        let config_path = dir.path().join("tonewall.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let log2 = log.try_clone().expect("log clone");
        let child = Command::new(env!("CARGO_BIN_EXE_tonewall"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "debug")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .expect("spawn tonewall");
        let server = Server {
            child: Some(child),
            dir,
            http: format!("http://127.0.0.1:{http_port}"),
            sip_port,
            log_path,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest_blocking_get(&format!("{}/healthz", self.http)) {
                if r == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server not ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn sip_target(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    /// Stop the server (SIGTERM, then kill) and return its whole log.
    pub fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Minimal blocking GET returning the status (no client needed before the runtime exists).
fn reqwest_blocking_get(url: &str) -> std::io::Result<u16> {
    use std::io::Write;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad response"))
}

/// Whether SIPp can be used; in CI (`CI` set) its absence is a failure, not a skip.
pub fn sipp_available() -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok && std::env::var_os("CI").is_some() {
        panic!("sipp is not installed but CI is set: .ci/run must install sip-tester");
    }
    if !ok {
        eprintln!("skipping: sipp not installed (apt-get install sip-tester)");
    }
    ok
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A SIPp run in the background.
pub struct Sipp {
    child: Child,
    pub name: String,
}

impl Sipp {
    /// Start SIPp for one call with scenario `sf` against `target`, dialling `service`.
    pub fn start(name: &str, sf: &Path, target: &str, service: &str, args: &[&str]) -> Sipp {
        let mut cmd = Command::new("sipp");
        cmd.arg(target)
            .arg("-sf")
            .arg(sf)
            .args([
                "-s",
                service,
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
            ])
            .args(["-timeout", "60", "-timeout_error", "-nostdin"])
            .args(["-p", &free_port().to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn sipp");
        Sipp {
            child,
            name: name.into(),
        }
    }

    /// Wait for SIPp to finish; returns (success, output).
    pub fn wait(mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let mut out = String::new();
                    if let Some(mut o) = self.child.stdout.take() {
                        let _ = o.read_to_string(&mut out);
                    }
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut out);
                    }
                    return (status.success(), out);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return (false, format!("{}: timed out", self.name));
                }
            }
        }
    }
}

/// SIPp dialling `dnis` as a waiting leg (`rep_uac.xml`: INVITE, ACK, then answer
/// tonewall's BYE), with its media on `rtp_port` (a socket the test owns), speaking PCMU.
pub fn sipp_waiting_leg(name: &str, sip_target: &str, dnis: &str, rtp_port: u16) -> Sipp {
    Sipp::start(
        name,
        &scenario("rep_uac.xml"),
        sip_target,
        dnis,
        &[
            "-key",
            "rtp_port",
            &rtp_port.to_string(),
            "-key",
            "codec_pt",
            "0",
            "-key",
            "codec_name",
            "PCMU",
        ],
    )
}

/// A scenario that expects the INVITE to be refused with `code`, written to `dir`.
pub fn refused_scenario(dir: &Path, code: u16) -> PathBuf {
    let text = std::fs::read_to_string(scenario("invite_expect.xml")).expect("scenario");
    let path = dir.join(format!("invite_expect_{code}.xml"));
    let mut text = text.replace("[expect]", &code.to_string());
    if code == 503 {
        // At capacity the refusal must say when to come back.
        text = text.replace(
            "<recv response=\"503\"/>",
            "<recv response=\"503\"><action><ereg regexp=\"[0-9]+\" search_in=\"hdr\" \
             header=\"Retry-After:\" check_it=\"true\" assign_to=\"ra\"/></action></recv><Reference variables=\"ra\"/>",
        );
    }
    std::fs::write(&path, text).expect("write");
    path
}

/// Every run of `n` or more consecutive digits of `number` (to grep logs for card data).
pub fn digit_runs(number: &str, n: usize) -> Vec<String> {
    let b = number.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len() {
        if i + n <= b.len() {
            out.push(number[i..i + n].to_string());
        }
    }
    out
}
