//! Parses the structured lines that `zvisor-init` prints on a serial
//! console: `ZVISOR-INIT-READY`, `ZVISOR-RESULT`, `ZVISOR-INIT-DONE`, each
//! `tag=<tag> key=value ...`, possibly behind a `[name] ` prefix added by an
//! outer init that forwards a nested guest's console.

use std::collections::BTreeMap;

/// The kinds of structured line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ZVISOR-INIT-READY`: init is up.
    Ready,
    /// `ZVISOR-RESULT`: one result.
    Result,
    /// `ZVISOR-INIT-DONE`: init finished its plan.
    Done,
    /// `ZVISOR-INIT-ERROR`: init could not run its plan.
    Error,
}

/// One structured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What kind of line.
    pub kind: Kind,
    /// The forwarding prefixes, outermost first (`[a] [b] ...`).
    pub via: Vec<String>,
    /// `key=value` fields.
    pub fields: BTreeMap<String, String>,
    /// Words without `=`.
    pub words: Vec<String>,
    /// The line as received.
    pub raw: String,
}

impl Record {
    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The `tag=` field, or "".
    pub fn tag(&self) -> &str {
        self.get("tag").unwrap_or("")
    }

    /// A numeric field.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

const MARKERS: [(&str, Kind); 4] = [
    ("ZVISOR-INIT-READY", Kind::Ready),
    ("ZVISOR-RESULT", Kind::Result),
    ("ZVISOR-INIT-DONE", Kind::Done),
    ("ZVISOR-INIT-ERROR", Kind::Error),
];

/// Parses one console line; `None` if it is not a structured line.
pub fn parse_line(line: &str) -> Option<Record> {
    let raw = line.trim_end_matches(['\r', '\n']);
    let mut rest = raw.trim_start();
    let mut via = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let end = r.find(']')?;
        via.push(r[..end].to_string());
        rest = r[end + 1..].trim_start();
    }
    let (kind, body) = MARKERS.iter().find_map(|(m, k)| {
        let b = rest.strip_prefix(m)?;
        (b.is_empty() || b.starts_with(' ')).then_some((*k, b))
    })?;
    let mut fields = BTreeMap::new();
    let mut words = Vec::new();
    for w in body.split_whitespace() {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                fields.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
            _ => words.push(w.to_string()),
        }
    }
    Some(Record {
        kind,
        via,
        fields,
        words,
        raw: raw.to_string(),
    })
}

/// All structured lines of a console transcript.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// The records, in order.
    pub records: Vec<Record>,
}

impl Transcript {
    /// Parses a whole transcript.
    pub fn parse(text: &str) -> Self {
        Self {
            records: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Records with the given kind and tag.
    pub fn with(&self, kind: Kind, tag: &str) -> impl Iterator<Item = &Record> {
        let tag = tag.to_string();
        self.records
            .iter()
            .filter(move |r| r.kind == kind && r.tag() == tag)
    }

    /// The first record of `kind`/`tag` whose field `key` equals `value`.
    pub fn find(&self, kind: Kind, tag: &str, key: &str, value: &str) -> Option<&Record> {
        self.with(kind, tag).find(|r| r.get(key) == Some(value))
    }

    /// The last `check=report` result of `tag`.
    pub fn report(&self, tag: &str) -> Option<&Record> {
        self.with(Kind::Result, tag)
            .filter(|r| r.get("check") == Some("report"))
            .last()
    }

    /// The `final=` result of the exec `name` run by init `tag`.
    pub fn exec_final(&self, tag: &str, name: &str) -> Option<&Record> {
        self.with(Kind::Result, tag)
            .filter(|r| r.get("exec") == Some(name) && r.get("final").is_some())
            .last()
    }

    /// Every attempt of exec `name` run by init `tag`.
    pub fn exec_attempts(&self, tag: &str, name: &str) -> Vec<&Record> {
        self.with(Kind::Result, tag)
            .filter(|r| r.get("exec") == Some(name) && r.get("attempt").is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_forwarded_lines() {
        let r = parse_line("ZVISOR-RESULT tag=L1 check=report nproc=2 memtotal_kib=4022036\r\n")
            .unwrap();
        assert_eq!(r.kind, Kind::Result);
        assert!(r.via.is_empty());
        assert_eq!(r.tag(), "L1");
        assert_eq!(r.num("nproc"), Some(2));
        assert_eq!(r.num("memtotal_kib"), Some(4_022_036));

        let r = parse_line("[l2-c1m256] ZVISOR-INIT-READY tag=l2-c1m256 uptime_s=1.20").unwrap();
        assert_eq!(r.kind, Kind::Ready);
        assert_eq!(r.via, ["l2-c1m256"]);
        assert_eq!(r.get("uptime_s"), Some("1.20"));

        let r = parse_line("[a] [b]  ZVISOR-RESULT tag=x exec=y begin").unwrap();
        assert_eq!(r.via, ["a", "b"]);
        assert_eq!(r.words, ["begin"]);
    }

    #[test]
    fn other_lines_are_ignored() {
        for l in [
            "",
            "[    2.45] reboot: Power down",
            "ZVISOR-RESULTS tag=x",
            "xZVISOR-RESULT tag=x",
            "[unterminated ZVISOR-RESULT tag=x",
            "ZVISOR-INIT-READYtag=x",
        ] {
            assert_eq!(parse_line(l), None, "{l:?}");
        }
        assert_eq!(parse_line("ZVISOR-INIT-DONE").unwrap().kind, Kind::Done);
    }

    #[test]
    fn first_value_wins_and_bare_equals_is_a_word() {
        let r = parse_line("ZVISOR-RESULT tag=a tag=b =x k=").unwrap();
        assert_eq!(r.tag(), "a");
        assert_eq!(r.words, ["=x"]);
        assert_eq!(r.get("k"), Some(""));
        assert_eq!(r.num("k"), None);
    }

    #[test]
    fn transcript_queries() {
        let t = Transcript::parse(
            "noise\n\
             ZVISOR-RESULT tag=L1 exec=c1 begin timeout_s=60\n\
             [c1] ZVISOR-RESULT tag=c1 check=report nproc=1 memtotal_kib=200000\n\
             ZVISOR-RESULT tag=L1 exec=c1 attempt=1 status=timeout elapsed_ms=60000\n\
             [c1] ZVISOR-RESULT tag=c1 check=report nproc=1 memtotal_kib=200004\n\
             ZVISOR-RESULT tag=L1 exec=c1 attempt=2 status=exit:0 elapsed_ms=6000\n\
             ZVISOR-RESULT tag=L1 exec=c1 final=ok attempts=2\n\
             ZVISOR-INIT-DONE tag=L1 status=ok failures=0\n",
        );
        assert_eq!(t.records.len(), 7);
        assert_eq!(t.report("c1").unwrap().num("memtotal_kib"), Some(200_004));
        assert_eq!(t.exec_final("L1", "c1").unwrap().get("final"), Some("ok"));
        assert_eq!(t.exec_attempts("L1", "c1").len(), 2);
        assert!(t.find(Kind::Done, "L1", "status", "ok").is_some());
        assert!(t.report("c2").is_none());
    }
}
