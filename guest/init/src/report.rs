//! Parsers for what the report prints: CPU lists and `/proc/meminfo`.

/// Counts the CPUs in a sysfs CPU list such as `0-3,5,7-8`. Returns `None`
/// for malformed input.
pub fn count_cpu_list(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    let mut n: u32 = 0;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if b < a {
            return None;
        }
        n = n.checked_add((b - a).checked_add(1)?)?;
    }
    Some(n)
}

/// Reads a `kB` field (e.g. `MemTotal`) from `/proc/meminfo` text.
pub fn meminfo_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != field {
            return None;
        }
        let v = v.trim();
        let num = v.strip_suffix("kB").unwrap_or(v).trim();
        num.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list(""), Some(0));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a"), None);
        assert_eq!(count_cpu_list("0-4294967295,1"), None);
    }

    #[test]
    fn meminfo_fields() {
        let t =
            "MemTotal:         225392 kB\nMemFree:          200000 kB\nHugePages_Total:       0\n";
        assert_eq!(meminfo_kib(t, "MemTotal"), Some(225_392));
        assert_eq!(meminfo_kib(t, "MemFree"), Some(200_000));
        assert_eq!(meminfo_kib(t, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_kib(t, "Mem"), None);
        assert_eq!(meminfo_kib("MemTotal: lots kB", "MemTotal"), None);
    }
}
