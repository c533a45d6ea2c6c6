//! `tonewall demo --non-interactive` runs the whole walk-through on loopback to completion:
//! simulated carrier and phones, securing through the API, digits masked, payment approved,
//! the customer handed back.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn demo_runs_to_completion() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tonewall"))
        .args(["demo", "--non-interactive", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the demo");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "/v1/sessions",
        "/ui/",
        "session ",
        "bridged",
        "pan ************1111",
        "telephone-events that reached the representative's phone: 0",
        "approved",
        "Done.",
        "carrier: channel delete",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
    for run in common::digit_runs("4111111111111111", 7) {
        assert!(
            !stdout.contains(&run) && !stderr.contains(&run),
            "the demo printed card digits"
        );
    }
}
