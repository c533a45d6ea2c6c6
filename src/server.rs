//! Wires SIP, media, sessions and the HTTP API together for `tonewall serve`.

use crate::config::Config;

/// Run the server until ctrl-c / SIGTERM. (Wiring lands when sip, media and session do.)
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = config;
    Ok(())
}
