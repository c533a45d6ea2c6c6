# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin tonewall

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tonewall --create-home tonewall
COPY --from=build /src/target/release/tonewall /usr/local/bin/tonewall
COPY config/tonewall.toml /etc/tonewall/tonewall.toml
USER tonewall
WORKDIR /var/lib/tonewall
# SIP (UDP/TCP), HTTP; RTP uses media.ports (publish that range too, UDP).
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/tonewall"]
CMD ["serve", "--config", "/etc/tonewall/tonewall.toml"]
