//! Parses the `L1-BENCH` lines of `qemu-tests/guest/bench-blk-l1.sh` from
//! L1's console, checks them, and prints the comparison table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The two VMMs, in table order.
pub const VMMS: [&str; 2] = ["zvisor", "qemu"];

/// One L2 boot's numbers (times in centiseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// `zvisor` or `qemu`.
    pub vmm: String,
    /// Round number (1-based).
    pub round: u32,
    /// The VMM's exit code as L1's shell saw it (`none` if unknown).
    pub rc: String,
    /// VMM launch to L2's init banner, as L1 measured it.
    pub ready_cs: Option<u64>,
    /// VMM launch to VMM exit.
    pub total_cs: Option<u64>,
    /// L2's /proc/uptime at its init banner, in centiseconds.
    pub l2_ready_cs: Option<u64>,
    /// Buffered write of `bytes` with conv=fsync.
    pub write_cs: Option<u64>,
    /// Read after dropping L2's page cache.
    pub read_cs: Option<u64>,
    /// O_DIRECT read.
    pub read_direct_cs: Option<u64>,
    /// Bytes per dd.
    pub bytes: Option<u64>,
    /// sha256 of the pattern L2 wrote.
    pub sum: String,
    /// sha256 of the backing file's first `bytes` in L1, after the run.
    pub backing: String,
    /// L2's script reached its end (its read-back sum matched).
    pub l2_ok: bool,
}

fn kv(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// `"12.34"` (seconds, as /proc/uptime prints them) to centiseconds.
fn seconds_to_cs(s: &str) -> Option<u64> {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    let frac: String = b.chars().chain("00".chars()).take(2).collect();
    Some(a.parse::<u64>().ok()? * 100 + frac.parse::<u64>().ok()?)
}

impl Sample {
    /// Parses the text after `L1-BENCH `.
    pub fn parse(rest: &str) -> Option<Self> {
        let m = kv(rest);
        let num = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
        let text = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
        let vmm = m.get("vmm")?.to_string();
        if !VMMS.contains(&vmm.as_str()) {
            return None;
        }
        Some(Self {
            vmm,
            round: num("round").and_then(|r| u32::try_from(r).ok())?,
            rc: text("rc"),
            ready_cs: num("ready_cs"),
            total_cs: num("total_cs"),
            l2_ready_cs: m.get("l2_ready_uptime").and_then(|v| seconds_to_cs(v)),
            write_cs: num("write_cs"),
            read_cs: num("read_cs"),
            read_direct_cs: num("read_direct_cs"),
            bytes: num("bytes"),
            sum: text("sum"),
            backing: text("backing"),
            l2_ok: m.get("l2_ok") == Some(&"1"),
        })
    }

    /// Everything wrong with this sample; empty means it counts.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let who = format!("{} round {}", self.vmm, self.round);
        if self.rc != "0" {
            p.push(format!("{who}: VMM exit status {}", self.rc));
        }
        if !self.l2_ok {
            p.push(format!(
                "{who}: L2's script failed (read-back sha256 differs or dd failed)"
            ));
        }
        let hex = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
        if !hex(&self.sum) || self.sum != self.backing {
            p.push(format!(
                "{who}: backing file in L1 holds {} but L2 wrote {}",
                self.backing, self.sum
            ));
        }
        for (name, v) in [
            ("write", self.write_cs),
            ("read", self.read_cs),
            ("read O_DIRECT", self.read_direct_cs),
            ("launch to init", self.ready_cs),
        ] {
            if v.is_none() {
                p.push(format!("{who}: no {name} time"));
            }
        }
        if self.bytes.unwrap_or(0) == 0 {
            p.push(format!("{who}: no byte count"));
        }
        p
    }
}

/// The last `L1-BENCH` line per (vmm, round): an L1 retry replaces the
/// failed attempt's line.
pub fn parse_all(console: &str) -> BTreeMap<(String, u32), Sample> {
    let mut out = BTreeMap::new();
    for line in console.lines() {
        if let Some((_, rest)) = line.split_once("L1-BENCH ") {
            if let Some(s) = Sample::parse(rest) {
                out.insert((s.vmm.clone(), s.round), s);
            }
        }
    }
    out
}

/// MB/s (10^6 bytes per second), from bytes and centiseconds.
pub fn mbps(bytes: Option<u64>, cs: Option<u64>) -> Option<f64> {
    let (b, c) = (bytes?, cs?);
    (c > 0).then(|| b as f64 / (c as f64 / 100.0) / 1e6)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn cell(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

type Column = fn(&Sample) -> Option<f64>;

const COLUMNS: [(&str, Column, usize); 6] = [
    ("write MB/s", |s| mbps(s.bytes, s.write_cs), 1),
    ("read MB/s", |s| mbps(s.bytes, s.read_cs), 1),
    ("O_DIRECT read MB/s", |s| mbps(s.bytes, s.read_direct_cs), 1),
    (
        "launch->init s",
        |s| s.ready_cs.map(|c| c as f64 / 100.0),
        2,
    ),
    (
        "L2 uptime@init s",
        |s| s.l2_ready_cs.map(|c| c as f64 / 100.0),
        2,
    ),
    ("run total s", |s| s.total_cs.map(|c| c as f64 / 100.0), 2),
];

/// The table: one row per boot, then the median per VMM and the
/// zvisor/QEMU ratio of the medians.
pub fn table(samples: &BTreeMap<(String, u32), Sample>) -> String {
    let mut t = String::new();
    let _ = write!(t, "{:<8} {:>5}", "vmm", "round");
    for (h, _, _) in COLUMNS {
        let _ = write!(t, " {h:>18}");
    }
    t.push('\n');
    let mut medians: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for vmm in VMMS {
        let rows: Vec<&Sample> = samples.values().filter(|s| s.vmm == vmm).collect();
        for s in &rows {
            let _ = write!(t, "{:<8} {:>5}", s.vmm, s.round);
            for (_, f, prec) in COLUMNS {
                let _ = write!(t, " {:>18}", cell(f(s), prec));
            }
            t.push('\n');
        }
        let meds: Vec<Option<f64>> = COLUMNS
            .iter()
            .map(|(_, f, _)| median(rows.iter().filter_map(|s| f(s)).collect()))
            .collect();
        let _ = write!(t, "{:<8} {:>5}", vmm, "med");
        for (m, (_, _, prec)) in meds.iter().zip(COLUMNS) {
            let _ = write!(t, " {:>18}", cell(*m, prec));
        }
        t.push('\n');
        medians.insert(vmm, meds);
    }
    let _ = write!(t, "{:<14}", "zvisor/qemu");
    for (z, q) in medians["zvisor"].iter().zip(&medians["qemu"]) {
        let r = match (z, q) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        };
        let _ = write!(t, " {:>18}", cell(r, 2));
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn line(vmm: &str, round: u32, write_cs: u64) -> String {
        format!(
            "[{vmm}-r{round}] L1-BENCH vmm={vmm} round={round} rc=0 ready_cs=450 total_cs=900 \
             l2_ready_uptime=2.5 write_cs={write_cs} read_cs=100 read_direct_cs=200 \
             bytes=33554432 sum={SUM} backing={SUM} l2_ok=1\n"
        )
    }

    #[test]
    fn lines_parse_and_a_retry_replaces_the_first_attempt() {
        let text = format!(
            "noise\n{}{}{}",
            line("zvisor", 1, 999).replace("rc=0", "rc=124"),
            line("zvisor", 1, 80),
            line("qemu", 1, 160)
        );
        let all = parse_all(&text);
        assert_eq!(all.len(), 2);
        let z = &all[&("zvisor".to_string(), 1)];
        assert_eq!(z.write_cs, Some(80));
        assert_eq!(z.l2_ready_cs, Some(250));
        assert!(z.problems().is_empty(), "{:?}", z.problems());
        let mb = mbps(z.bytes, z.write_cs).unwrap();
        assert!((mb - 41.94).abs() < 0.01, "{mb}");
    }

    #[test]
    fn wrong_sums_failed_runs_and_missing_times_are_problems() {
        let bad_backing = line("qemu", 2, 100).replace(&format!("backing={SUM}"), "backing=none");
        let failed = line("qemu", 2, 100).replace("l2_ok=1", "l2_ok=0");
        let rc = line("qemu", 2, 100).replace("rc=0", "rc=1");
        let no_time = line("qemu", 2, 100).replace("read_cs=100", "read_cs=");
        for (text, want) in [
            (bad_backing, "backing file"),
            (failed, "L2's script failed"),
            (rc, "exit status 1"),
            (no_time, "no read time"),
        ] {
            let all = parse_all(&text);
            let p = all[&("qemu".to_string(), 2)].problems();
            assert!(p.iter().any(|x| x.contains(want)), "{want}: {p:?}");
        }
        // Unknown VMMs are ignored, not counted.
        assert!(parse_all(&line("qemu", 1, 1).replace("vmm=qemu", "vmm=x")).is_empty());
    }

    #[test]
    fn table_has_medians_and_ratio() {
        let text = format!(
            "{}{}{}{}{}{}",
            line("zvisor", 1, 80),
            line("zvisor", 2, 100),
            line("zvisor", 3, 90),
            line("qemu", 1, 180),
            line("qemu", 2, 160),
            line("qemu", 3, 200)
        );
        let t = table(&parse_all(&text));
        // Median write: zvisor 90 cs (37.3 MB/s), qemu 180 cs (18.6 MB/s).
        assert!(t.contains("37.3"), "{t}");
        assert!(t.contains("18.6"), "{t}");
        let ratio = t.lines().last().unwrap();
        assert!(ratio.starts_with("zvisor/qemu"), "{t}");
        assert!(ratio.contains(" 2.00 "), "{t}");
        assert_eq!(t.lines().count(), 1 + 4 + 4 + 1, "{t}");
    }

    #[test]
    fn uptime_seconds_convert() {
        assert_eq!(seconds_to_cs("2.5"), Some(250));
        assert_eq!(seconds_to_cs("12.34"), Some(1234));
        assert_eq!(seconds_to_cs("3"), Some(300));
        assert_eq!(seconds_to_cs("x"), None);
    }
}
