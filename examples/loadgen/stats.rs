//! Counters and latency histograms of the load generator's media threads, and reading a
//! process's CPU time from `/proc`. Plain data, merged once at the end; nothing here does
//! I/O on the packet path or allocates per packet.

use serde::Serialize;

/// Latency histogram: 10 µs buckets up to 500 ms, one overflow bucket.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

const BUCKET_US: u64 = 10;
const N_BUCKETS: usize = 50_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; N_BUCKETS + 1],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let idx = ((us / BUCKET_US) as usize).min(N_BUCKETS);
        if let Some(b) = self.buckets.get_mut(idx) {
            *b += 1;
        }
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value (µs, upper edge of its bucket) at quantile `q` in 0..=1.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                if i == N_BUCKETS {
                    return Some(self.max_us);
                }
                return Some(((i as u64 + 1) * BUCKET_US).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
        LatencySummary {
            samples: self.count(),
            p50_ms: ms(self.quantile_us(0.50)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms((self.count > 0).then_some(self.max_us)),
            mean_ms: (self.count > 0).then(|| self.sum_us as f64 / self.count as f64 / 1000.0),
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

/// One direction of audio (customer->rep or rep->customer).
#[derive(Default, Clone)]
pub struct DirStats {
    /// Audio packets sent by the sending legs (whole run / inside the window).
    pub sent_total: u64,
    pub sent_window: u64,
    /// Our marked audio packets received by the other legs (whole run / sent inside the window).
    pub recv_total: u64,
    pub recv_window: u64,
    /// Packets received that carry none of our marks (silence while parked, masked audio).
    pub recv_unmarked: u64,
    /// Marked packets that came out on a leg of another session (must be 0).
    pub misrouted: u64,
    /// telephone-event packets received (customer->rep: leaked digits, must be 0).
    pub events_received: u64,
    /// One-way latency of packets sent inside the window.
    pub latency: Histogram,
}

impl DirStats {
    pub fn merge(&mut self, o: &DirStats) {
        self.sent_total += o.sent_total;
        self.sent_window += o.sent_window;
        self.recv_total += o.recv_total;
        self.recv_window += o.recv_window;
        self.recv_unmarked += o.recv_unmarked;
        self.misrouted += o.misrouted;
        self.events_received += o.events_received;
        self.latency.merge(&o.latency);
    }

    /// Loss in percent over the window (0 when nothing was sent).
    pub fn loss_pct(&self) -> f64 {
        if self.sent_window == 0 {
            return 0.0;
        }
        let lost = self.sent_window.saturating_sub(self.recv_window);
        lost as f64 * 100.0 / self.sent_window as f64
    }
}

/// What one media thread measured.
#[derive(Default, Clone)]
pub struct MediaStats {
    pub c2r: DirStats,
    pub r2c: DirStats,
    pub events_sent: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    pub late_ticks: u64,
}

impl MediaStats {
    pub fn merge(&mut self, o: &MediaStats) {
        self.c2r.merge(&o.c2r);
        self.r2c.merge(&o.r2c);
        self.events_sent += o.events_sent;
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
        self.late_ticks += o.late_ticks;
    }
}

/// utime+stime of a process, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|t| t as f64 / clock_ticks())
}

/// utime+stime (clock ticks) from the text of a `/proc/<pid>/stat` file.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert!(h.quantile_us(0.5).is_none());
        for us in 1..=1000 {
            h.record(us * 100); // 0.1 ms .. 100 ms
        }
        let p50 = h.quantile_us(0.5).unwrap();
        assert!((50_000..=50_010).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((99_000..=99_010).contains(&p99), "{p99}");
        h.record(10_000_000);
        assert_eq!(h.quantile_us(1.0), Some(10_000_000));
        let mut g = Histogram::default();
        g.merge(&h);
        assert_eq!(g.count(), 1001);
    }

    #[test]
    fn loss_percent() {
        let d = DirStats {
            sent_window: 1000,
            recv_window: 990,
            ..Default::default()
        };
        assert!((d.loss_pct() - 1.0).abs() < 1e-9);
        assert_eq!(DirStats::default().loss_pct(), 0.0);
    }

    #[test]
    fn proc_stat_parsing() {
        let s = "1234 (tone wall) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat_cpu_ticks(s), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_seconds("self").is_some());
    }
}
