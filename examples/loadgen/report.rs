//! The load generator's end-of-run report: what is measured, printed for people or as
//! JSON. Only aggregates; never anything a customer keyed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{self, LatencySummary};

#[derive(Default, Serialize, Clone)]
pub struct Teardown {
    pub bye_ok: usize,
    pub bye_failed: usize,
    pub partner_hung_up_by_server: usize,
    pub partner_hung_up_by_us: usize,
}

#[derive(Serialize)]
pub struct Direction {
    pub sent_total: u64,
    pub received_total: u64,
    pub sent_window: u64,
    pub received_window: u64,
    pub received_unmarked: u64,
    pub misrouted: u64,
    pub telephone_events_received: u64,
    pub loss_pct: f64,
    pub latency: LatencySummary,
}

#[derive(Serialize)]
pub struct Report {
    pub sessions_requested: usize,
    pub sessions_established: usize,
    pub sessions_failed: usize,
    pub failures: BTreeMap<String, usize>,
    pub sessions_ended_by_server: usize,
    pub setup_ms_p50: Option<u64>,
    pub setup_ms_p99: Option<u64>,
    pub window_s: f64,
    pub customer_to_rep: Direction,
    pub rep_to_customer: Direction,
    pub packets_per_s_relayed: f64,
    pub holdback_ms: u64,
    pub c2r_latency_minus_holdback_p50_ms: Option<f64>,
    pub c2r_latency_minus_holdback_p99_ms: Option<f64>,
    pub rfc4733_events_sent: u64,
    pub telephone_events_leaked: u64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_relayed_packet: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub loadgen_cpu_s: Option<f64>,
    pub send_errors: u64,
    pub late_ticks: u64,
    pub teardown: Teardown,
    pub tonewall_requests_in: BTreeMap<String, u64>,
    pub sessions_active_after: Option<f64>,
}

pub fn direction(d: &stats::DirStats) -> Direction {
    Direction {
        sent_total: d.sent_total,
        received_total: d.recv_total,
        sent_window: d.sent_window,
        received_window: d.recv_window,
        received_unmarked: d.recv_unmarked,
        misrouted: d.misrouted,
        telephone_events_received: d.events_received,
        loss_pct: d.loss_pct(),
        latency: d.latency.summary(),
    }
}

pub fn pct(v: &mut [u64], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(i).copied()
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|x| format!("{x:.2}{unit}"))
        .unwrap_or_else(|| "n/a".into())
}

pub fn print_report(r: &Report) {
    println!("tonewall loadgen report");
    println!(
        "  sessions: {} requested, {} established, {} failed, {} ended early by server",
        r.sessions_requested, r.sessions_established, r.sessions_failed, r.sessions_ended_by_server
    );
    for (why, count) in &r.failures {
        println!("    failed: {why}: {count}");
    }
    println!(
        "  setup (POST to customer ACK): p50 {} ms, p99 {} ms",
        r.setup_ms_p50
            .map(|v| v.to_string())
            .unwrap_or("n/a".into()),
        r.setup_ms_p99
            .map(|v| v.to_string())
            .unwrap_or("n/a".into())
    );
    println!("  window: {:.0} s", r.window_s);
    for (name, d) in [
        ("customer->rep", &r.customer_to_rep),
        ("rep->customer", &r.rep_to_customer),
    ] {
        println!(
            "  {name}: sent {} (window {}), received {} (window {}), loss {:.3}%, unmarked {}, misrouted {}",
            d.sent_total, d.sent_window, d.received_total, d.received_window, d.loss_pct, d.received_unmarked, d.misrouted
        );
        println!(
            "    latency p50 {} p99 {} max {} ({} samples)",
            opt(d.latency.p50_ms, " ms"),
            opt(d.latency.p99_ms, " ms"),
            opt(d.latency.max_ms, " ms"),
            d.latency.samples
        );
    }
    println!(
        "  customer->rep latency minus {} ms hold-back: p50 {} p99 {}",
        r.holdback_ms,
        opt(r.c2r_latency_minus_holdback_p50_ms, " ms"),
        opt(r.c2r_latency_minus_holdback_p99_ms, " ms")
    );
    println!("  relayed: {:.0} packets/s", r.packets_per_s_relayed);
    println!(
        "  RFC 4733: {} event packets sent, {} leaked to the rep",
        r.rfc4733_events_sent, r.telephone_events_leaked
    );
    println!(
        "  server CPU: {} in window ({} of one core), {} per relayed packet",
        opt(r.server_cpu_s, " s"),
        opt(r.server_cpu_pct, "%"),
        opt(r.server_cpu_us_per_relayed_packet, " µs")
    );
    println!(
        "  loadgen CPU: {} in window; send errors {}, late ticks {}",
        opt(r.loadgen_cpu_s, " s"),
        r.send_errors,
        r.late_ticks
    );
    println!(
        "  teardown: BYE ok {}, failed {}; rep leg hung up by server {}, by us {}",
        r.teardown.bye_ok,
        r.teardown.bye_failed,
        r.teardown.partner_hung_up_by_server,
        r.teardown.partner_hung_up_by_us
    );
    println!(
        "  tonewall_sessions_active after teardown: {}",
        opt(r.sessions_active_after, "")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile() {
        let mut v = vec![5, 1, 3, 2, 4];
        assert_eq!(pct(&mut v, 0.5), Some(3));
        assert_eq!(pct(&mut v, 0.99), Some(5));
        assert_eq!(pct(&mut [], 0.5), None);
    }
}
