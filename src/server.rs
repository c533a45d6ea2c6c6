//! Wires SIP, media, sessions and the HTTP API together for `tonewall serve`.
