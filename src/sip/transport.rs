//! SIP transports: UDP sockets and TCP listeners from `sip.listen` strings, TCP framing by
//! Content-Length (through `sipx-sip`'s stream framer), and sending back on the same socket or
//! connection. Inbound messages are delivered on one channel to the endpoint.
//!
//! Must never: panic on input, interpret SIP beyond framing, or log message bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use sipx_sip::parser::{Limits, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::message::{Message, Via};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    pub fn reliable(self) -> bool {
        self == Transport::Tcp
    }
}

/// Parse `udp:IP:PORT` / `tcp:IP:PORT` (`[v6]` allowed).
pub fn parse_listen(s: &str) -> anyhow::Result<(Transport, SocketAddr)> {
    let (proto, addr) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("sip.listen: expected udp:ADDR:PORT or tcp:ADDR:PORT, got {s:?}"))?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return Err(anyhow!("sip.listen: unsupported transport in {s:?}")),
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("sip.listen: bad address in {s:?}"))?;
    Ok((t, addr))
}

/// Where a message came from / goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub transport: Transport,
    /// The local socket (listener) address.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The TCP connection, when there is one.
    pub conn: Option<u64>,
}

/// One framed inbound message, or bytes that did not parse (UDP only).
#[derive(Debug)]
pub struct Inbound {
    pub flow: Flow,
    pub msg: Result<Message, Vec<u8>>,
}

/// Where to send a response over UDP (RFC 3261 §18.2.2 with RFC 3581 rport): the source
/// address and port when rport is present, else the source address and the Via port.
pub fn udp_response_target(via: Option<&Via>, source: SocketAddr) -> SocketAddr {
    match via {
        Some(v) if v.rport.is_none() => SocketAddr::new(source.ip(), v.port.unwrap_or(5060)),
        _ => source,
    }
}

type Conns = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>>;

/// The running transports.
pub struct Transports {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    tcp_addrs: Vec<SocketAddr>,
    conns: Conns,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    inbound: mpsc::UnboundedSender<Inbound>,
}

impl Transports {
    /// Bind every `listen` entry; inbound messages arrive on the returned receiver.
    pub async fn bind(
        listen: &[String],
    ) -> anyhow::Result<(Transports, mpsc::UnboundedReceiver<Inbound>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut t = Transports {
            udp: Vec::new(),
            tcp_addrs: Vec::new(),
            conns: Arc::new(Mutex::new(HashMap::new())),
            next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            tasks: Vec::new(),
            inbound: tx.clone(),
        };
        for entry in listen {
            let (proto, addr) = parse_listen(entry)?;
            match proto {
                Transport::Udp => {
                    let sock = Arc::new(
                        UdpSocket::bind(addr)
                            .await
                            .with_context(|| format!("binding {entry}"))?,
                    );
                    let local = sock.local_addr()?;
                    t.udp.push((local, sock.clone()));
                    t.tasks
                        .push(tokio::spawn(udp_loop(sock, local, tx.clone())));
                }
                Transport::Tcp => {
                    let l = TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding {entry}"))?;
                    let local = l.local_addr()?;
                    t.tcp_addrs.push(local);
                    let conns = t.conns.clone();
                    let next = t.next_conn.clone();
                    let tx = tx.clone();
                    t.tasks.push(tokio::spawn(async move {
                        while let Ok((stream, peer)) = l.accept().await {
                            let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            spawn_conn(stream, local, peer, id, conns.clone(), tx.clone());
                        }
                    }));
                }
            }
        }
        Ok((t, rx))
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let mut v: Vec<_> = self.udp.iter().map(|(a, _)| (Transport::Udp, *a)).collect();
        v.extend(self.tcp_addrs.iter().map(|a| (Transport::Tcp, *a)));
        v
    }

    /// The first listener of `transport` (for Via/Contact of requests we originate).
    pub fn first(&self, transport: Transport) -> Option<SocketAddr> {
        self.local_addrs()
            .into_iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| a)
    }

    /// Send bytes along `flow`: UDP from the local socket, TCP on the connection (a new one
    /// to `flow.peer` when it is gone).
    pub async fn send(&self, flow: &Flow, bytes: Vec<u8>) {
        match flow.transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|(a, _)| *a == flow.local)
                    .or_else(|| self.udp.first())
                    .map(|(_, s)| s.clone());
                if let Some(s) = sock {
                    if let Err(e) = s.send_to(&bytes, flow.peer).await {
                        tracing::debug!(peer = %flow.peer, error = %e, "sip udp send failed");
                    }
                }
            }
            Transport::Tcp => {
                let existing = flow.conn.and_then(|id| {
                    self.conns
                        .lock()
                        .ok()
                        .and_then(|c| c.get(&id).cloned())
                        .filter(|s| !s.is_closed())
                });
                if let Some(s) = existing {
                    let _ = s.send(bytes);
                    return;
                }
                match TcpStream::connect(flow.peer).await {
                    Ok(stream) => {
                        let id = self
                            .next_conn
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let local = stream.local_addr().unwrap_or(flow.local);
                        let s = spawn_conn(
                            stream,
                            local,
                            flow.peer,
                            id,
                            self.conns.clone(),
                            self.inbound.clone(),
                        );
                        let _ = s.send(bytes);
                    }
                    Err(e) => {
                        tracing::debug!(peer = %flow.peer, error = %e, "sip tcp connect failed")
                    }
                }
            }
        }
    }

    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(mut c) = self.conns.lock() {
            c.clear();
        }
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, local: SocketAddr, tx: mpsc::UnboundedSender<Inbound>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(_) => continue, // e.g. ICMP port unreachable surfacing on Linux
        };
        let data = buf.get(..n).unwrap_or(&[]);
        // Keep-alives (CRLF) and tiny junk: nothing to parse.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let msg = Message::parse(data).map_err(|_| data.to_vec());
        let flow = Flow {
            transport: Transport::Udp,
            local,
            peer,
            conn: None,
        };
        if tx.send(Inbound { flow, msg }).is_err() {
            return;
        }
    }
}

fn spawn_conn(
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    id: u64,
    conns: Conns,
    tx: mpsc::UnboundedSender<Inbound>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if let Ok(mut c) = conns.lock() {
        c.insert(id, out_tx.clone());
    }
    let (mut rd, mut wr) = stream.into_split();
    tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let flow = Flow {
            transport: Transport::Tcp,
            local,
            peer,
            conn: Some(id),
        };
        let mut parser = StreamParser::new(Limits::stream());
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match parser.push(buf.get(..n).unwrap_or(&[])) {
                Ok(msgs) => {
                    for m in msgs {
                        let msg = Ok(Message::from_sipx(m));
                        if tx
                            .send(Inbound {
                                flow: flow.clone(),
                                msg,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                }
                Err(e) => {
                    // Framing is lost on a stream: close the connection.
                    tracing::debug!(%peer, error = %e, "sip tcp framing error, closing");
                    break;
                }
            }
        }
        if let Ok(mut c) = conns.lock() {
            c.remove(&id);
        }
    });
    out_tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_strings() {
        assert_eq!(
            parse_listen("udp:127.0.0.1:0").ok(),
            Some((Transport::Udp, "127.0.0.1:0".parse().expect("addr")))
        );
        assert!(parse_listen("tcp:[::1]:5060").is_ok());
        assert!(parse_listen("tls:1.2.3.4:5061").is_err());
        assert!(parse_listen("udp:nope").is_err());
    }

    #[test]
    fn rport_decides_response_port() {
        let src: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
        let mut via = Via::parse_first("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx").expect("via");
        assert_eq!(udp_response_target(Some(&via), src).port(), 5070);
        via.rport = Some(None);
        assert_eq!(udp_response_target(Some(&via), src), src);
    }

    #[tokio::test]
    async fn tcp_framing_partial_and_batched() {
        let (t, mut rx) = Transports::bind(&["tcp:127.0.0.1:0".to_string()])
            .await
            .expect("bind");
        let addr = t.first(Transport::Tcp).expect("tcp");
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let m = |n: u32| {
            format!(
                "OPTIONS sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK{n}\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: c{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
            )
        };
        let one = m(1);
        let (a, b) = one.split_at(30);
        s.write_all(b"\r\n\r\n").await.expect("write");
        s.write_all(a.as_bytes()).await.expect("write");
        s.flush().await.expect("flush");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s.write_all(format!("{b}{}{}", m(2), m(3)).as_bytes())
            .await
            .expect("write");
        for n in 1..=3 {
            let inb = rx.recv().await.expect("inbound");
            let Ok(Message::Request(r)) = inb.msg else {
                panic!("request")
            };
            assert_eq!(r.headers.call_id(), Some(format!("c{n}").as_str()));
            assert_eq!(&r.body[..], b"body");
            assert_eq!(inb.flow.transport, Transport::Tcp);
        }
        t.shutdown();
    }
}
