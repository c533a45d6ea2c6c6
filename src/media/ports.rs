//! The RTP port pool (`media.ports`): each leg leases an even RTP port (RTCP on the next odd
//! one); the lease returns the pair to the pool when it is dropped, so a leg can't leak it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// A pool of even RTP ports in an inclusive range.
#[derive(Clone)]
pub struct PortPool {
    inner: Arc<Mutex<VecDeque<u16>>>,
    total: usize,
}

/// A leased RTP/RTCP port pair; dropping it returns the pair.
pub struct PortLease {
    port: u16,
    pool: Arc<Mutex<VecDeque<u16>>>,
}

/// The sockets of a leg: RTP on an even port, RTCP on the next one.
pub struct LegSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub lease: PortLease,
}

#[derive(Debug, thiserror::Error)]
pub enum PortRangeError {
    #[error("expected LOW-HIGH with 1024 <= LOW < HIGH <= 65535, got {0:?}")]
    Invalid(String),
}

impl PortPool {
    /// Parse `LOW-HIGH` and build the pool of even ports `p` with `p+1 <= HIGH`.
    pub fn parse(range: &str) -> Result<PortPool, PortRangeError> {
        let bad = || PortRangeError::Invalid(range.to_string());
        let (lo, hi) = range.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo < 1024 || lo >= hi {
            return Err(bad());
        }
        let first = lo + (lo % 2);
        let ports: VecDeque<u16> = (first..hi).step_by(2).collect();
        if ports.is_empty() {
            return Err(bad());
        }
        let total = ports.len();
        Ok(PortPool {
            inner: Arc::new(Mutex::new(ports)),
            total,
        })
    }

    /// Ports pairs in the pool in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Port pairs free now.
    pub fn available(&self) -> usize {
        self.inner.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Lease a pair and bind both sockets on `bind` (non-blocking). Ports that turn out to
    /// be taken by another process are skipped (and stay out of the pool while leased by
    /// nobody, so they are retried later). `None` when the pool is exhausted.
    pub fn bind(&self, bind: IpAddr) -> Option<LegSockets> {
        let tries = self.available().min(64);
        for _ in 0..tries.max(1) {
            let port = self.inner.lock().ok()?.pop_front()?;
            let lease = PortLease {
                port,
                pool: self.inner.clone(),
            };
            let rtp = UdpSocket::bind(SocketAddr::new(bind, port));
            let rtcp = UdpSocket::bind(SocketAddr::new(bind, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                        continue;
                    }
                    return Some(LegSockets { rtp, rtcp, lease });
                }
                _ => continue, // the lease goes back to the tail of the queue on drop
            }
        }
        None
    }
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut q) = self.pool.lock() {
            q.push_back(self.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_ranges() {
        assert!(PortPool::parse("30000").is_err());
        assert!(PortPool::parse("40000-30000").is_err());
        assert!(PortPool::parse("80-90").is_err());
        assert!(PortPool::parse("30000-30001").is_ok());
        assert_eq!(
            PortPool::parse("30001-30010").map(|p| p.total()).ok(),
            Some(4)
        );
    }

    #[test]
    fn leases_come_back_on_drop() {
        let pool = PortPool::parse("41000-41009").expect("pool");
        let total = pool.available();
        let a = pool.bind("127.0.0.1".parse().expect("ip")).expect("lease");
        assert_eq!(a.lease.port() % 2, 0);
        assert_eq!(pool.available(), total - 1);
        drop(a);
        assert_eq!(pool.available(), total);
    }
}
