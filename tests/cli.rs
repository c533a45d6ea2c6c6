//! The `tonewall` binary: exit codes, check-config output, hash-key.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tonewall");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

const GOOD: &str = r#"
[http]
listen = "127.0.0.1:0"
[[carrier]]
id = "main"
kind = "manual"
peers = ["127.0.0.1/32"]
[[tenant]]
id = "acme"
carrier = "main"
api_keys = ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
dnis = ["+61390001000-+61390001099"]
"#;

#[test]
fn bad_key_exits_2_naming_it() {
    for (text, key) in [
        ("[media]\nholdback_ms = \"lots\"\n", "media.holdback_ms"),
        ("[sip]\nfoo = 1\n", "foo"),
        ("[media]\nports = \"5-3\"\n", "media.ports"),
    ] {
        let f = write_config(text);
        for cmd in ["check-config", "serve"] {
            let out = Command::new(BIN)
                .args([cmd, "--config"])
                .arg(f.path())
                .output()
                .expect("run");
            assert_eq!(out.status.code(), Some(2), "{cmd} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(key), "{cmd}: {err}");
        }
    }
}

#[test]
fn missing_file_and_bad_args_exit_2() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/tonewall.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["frobnicate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["--log-format", "xml", "hash-key"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_prints_effective_config() {
    let f = write_config(GOOD);
    let out = Command::new(BIN)
        .args(["--log-format", "json", "check-config", "--config"])
        .arg(f.path())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = tonewall::config::parse(&text).expect("output parses back");
    assert_eq!(parsed.media.holdback_ms, 40);
    assert_eq!(parsed.tenant[0].dnis, vec!["+61390001000-+61390001099"]);
    assert!(text.contains("holdback_ms = 40"), "{text}");
}

#[test]
fn hash_key_reads_stdin() {
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"abc\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
