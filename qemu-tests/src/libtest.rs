//! Parses the human output of a Rust test executable (libtest's "pretty"
//! format) run with `--test-threads=1 --nocapture`, as it arrives over a
//! guest console: every test's name, its result, and whether it skipped.
//!
//! With one thread, libtest prints `test NAME ... ` before running a test,
//! then whatever the test prints (`--nocapture`), then `ok`, `FAILED` or
//! `ignored` on a line of its own (or right after the `... `). Our tests
//! skip by printing `SKIPPED: why` and returning, which libtest counts as
//! passed; this parser reports them as skipped. The `test result:` summary
//! is cross-checked against the tests seen, so a garbled transcript cannot
//! pass.

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Passed and did not print `SKIPPED:`.
    Passed,
    /// Passed after printing `SKIPPED: <reason>`.
    Skipped(String),
    /// Failed.
    Failed,
    /// `#[ignore]`d.
    Ignored,
}

/// One test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// The test's path, e.g. `create_start_state_kill_delete`.
    pub name: String,
    /// Its result.
    pub status: Status,
}

/// The `test result:` line's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// `N passed`.
    pub passed: u32,
    /// `N failed`.
    pub failed: u32,
    /// `N ignored`.
    pub ignored: u32,
    /// `N filtered out`.
    pub filtered: u32,
}

/// A whole test executable's run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// `running N tests`.
    pub announced: Option<u32>,
    /// The tests, in order.
    pub tests: Vec<TestCase>,
    /// The summary line, if it arrived.
    pub summary: Option<Summary>,
    /// A test that started but never ended (the executable died or hung).
    pub unfinished: Option<String>,
}

impl Report {
    /// Tests with `status`.
    pub fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.tests.iter().filter(|t| f(&t.status)).count()
    }

    /// Passed (not skipped) tests.
    pub fn passed(&self) -> usize {
        self.count(|s| *s == Status::Passed)
    }

    /// Skipped tests.
    pub fn skipped(&self) -> usize {
        self.count(|s| matches!(s, Status::Skipped(_)))
    }

    /// Failed tests.
    pub fn failed(&self) -> usize {
        self.count(|s| *s == Status::Failed)
    }

    /// Why this run is not a clean, complete, all-passed run; `None` if it
    /// is one. A complete run has a summary that agrees with the tests seen.
    pub fn problem(&self) -> Option<String> {
        if let Some(t) = &self.unfinished {
            return Some(format!("test {t} started but never finished"));
        }
        let Some(s) = self.summary else {
            return Some("no `test result:` summary line".into());
        };
        let seen_passed = self.passed() + self.skipped();
        let ignored = self.count(|s| *s == Status::Ignored);
        if (s.passed as usize, s.failed as usize, s.ignored as usize)
            != (seen_passed, self.failed(), ignored)
        {
            return Some(format!(
                "summary says {} passed, {} failed, {} ignored but the transcript shows {seen_passed}, {}, {ignored}",
                s.passed,
                s.failed,
                s.ignored,
                self.failed()
            ));
        }
        if let Some(n) = self.announced {
            if n as usize != self.tests.len() {
                return Some(format!("announced {n} tests, saw {}", self.tests.len()));
            }
        }
        let failed: Vec<&str> = self
            .tests
            .iter()
            .filter(|t| t.status == Status::Failed)
            .map(|t| t.name.as_str())
            .collect();
        if !failed.is_empty() {
            return Some(format!("failed: {}", failed.join(", ")));
        }
        None
    }
}

/// The result word at the end of a test, if `s` is one.
fn result_word(s: &str) -> Option<Status> {
    match s.trim_end() {
        "ok" => Some(Status::Passed),
        "FAILED" => Some(Status::Failed),
        s if s == "ignored" || s.starts_with("ignored, ") => Some(Status::Ignored),
        _ => None,
    }
}

/// `running 5 tests` / `running 1 test`.
fn running(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("running ")?;
    let (n, what) = rest.split_once(' ')?;
    matches!(what.trim_end(), "tests" | "test")
        .then(|| n.parse().ok())
        .flatten()
}

/// `test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`
fn summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut s = Summary::default();
    for part in counts.split(';') {
        let mut w = part.split_whitespace();
        let (Some(n), Some(what)) = (w.next(), w.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "passed" => s.passed = n,
            "failed" => s.failed = n,
            "ignored" => s.ignored = n,
            "filtered" => s.filtered = n,
            _ => {}
        }
    }
    Some(s)
}

/// Parses the lines of one test executable's output.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Report {
    let mut r = Report::default();
    // The test running now and the skip reason it printed.
    let mut current: Option<(String, Option<String>)> = None;
    for raw in lines {
        let line = raw.trim_end_matches(['\r', '\n']);
        if let Some((name, skip)) = current.as_mut() {
            // Output of the running test, or its result.
            if let Some(status) = result_word(line) {
                let status = match (status, skip.take()) {
                    (Status::Passed, Some(why)) => Status::Skipped(why),
                    (s, _) => s,
                };
                r.tests.push(TestCase {
                    name: std::mem::take(name),
                    status,
                });
                current = None;
            } else if let Some(why) = line.trim_start().strip_prefix("SKIPPED:") {
                skip.get_or_insert_with(|| why.trim().to_string());
            }
            continue;
        }
        if let Some(n) = running(line) {
            r.announced = Some(n);
        } else if let Some(s) = summary(line) {
            r.summary = Some(s);
        } else if let Some(rest) = line.strip_prefix("test ") {
            let Some((name, after)) = rest.split_once(" ... ") else {
                continue;
            };
            if let Some(status) = result_word(after) {
                r.tests.push(TestCase {
                    name: name.to_string(),
                    status,
                });
            } else {
                let skip = after
                    .trim_start()
                    .strip_prefix("SKIPPED:")
                    .map(|w| w.trim().to_string());
                current = Some((name.to_string(), skip));
            }
        }
    }
    r.unfinished = current.map(|(n, _)| n);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_skipped_failed_and_ignored() {
        let out = "\nrunning 5 tests\n\
            test a ... ok\n\
            test b ... zvisor-runc [\"run\"] -> Some(0)\n\
            stdout: chown-ok\n\
            \n\
            ok\n\
            test c ... SKIPPED: needs podman\n\
            ok\n\
            test d ... thread 'd' panicked at x.rs:1:1:\n\
            boom\n\
            FAILED\n\
            test e ... ignored, slow\n\
            \n\
            failures:\n\
            \n\
            failures:\n    d\n\n\
            test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 9.01s\n";
        let r = parse(out.lines());
        assert_eq!(r.announced, Some(5));
        let got: Vec<(&str, &Status)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), &t.status))
            .collect();
        assert_eq!(
            got,
            [
                ("a", &Status::Passed),
                ("b", &Status::Passed),
                ("c", &Status::Skipped("needs podman".into())),
                ("d", &Status::Failed),
                ("e", &Status::Ignored),
            ]
        );
        assert_eq!((r.passed(), r.skipped(), r.failed()), (2, 1, 1));
        assert_eq!(r.problem().as_deref(), Some("failed: d"));
    }

    #[test]
    fn clean_run_has_no_problem_and_skip_may_come_later() {
        let r = parse(
            "running 2 tests\ntest x ... some output\nSKIPPED: checks v1 files\nok\ntest y ... ok\n\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n"
                .lines(),
        );
        assert_eq!(r.problem(), None, "{r:?}");
        assert_eq!(r.tests[0].status, Status::Skipped("checks v1 files".into()));
        assert_eq!(r.passed(), 1);
    }

    #[test]
    fn incomplete_or_inconsistent_runs_are_problems() {
        // Died in the middle of a test.
        let r = parse("running 2 tests\ntest x ... ok\ntest y ... output\n".lines());
        assert!(r.problem().unwrap().contains("test y started"), "{r:?}");
        // No summary.
        let r = parse("running 1 test\ntest x ... ok\n".lines());
        assert!(r.problem().unwrap().contains("no `test result:`"));
        // The summary disagrees with what was seen (a lost line).
        let r = parse(
            "running 2 tests\ntest x ... ok\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
                .lines(),
        );
        assert!(
            r.problem().unwrap().contains("summary says 2 passed"),
            "{r:?}"
        );
        // Announced more than ran.
        let r = parse(
            "running 3 tests\ntest x ... ok\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
                .lines(),
        );
        assert!(r.problem().unwrap().contains("announced 3"), "{r:?}");
        // Zero tests is complete here; callers decide whether it is enough.
        let r = parse(
            "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
                .lines(),
        );
        assert_eq!(r.problem(), None);
        assert!(r.tests.is_empty());
    }

    #[test]
    fn summary_and_running_lines() {
        assert_eq!(running("running 1 test"), Some(1));
        assert_eq!(running("running 12 tests\r"), Some(12));
        assert_eq!(running("running fast"), None);
        let s = summary("test result: ok. 7 passed; 2 failed; 3 ignored; 0 measured; 4 filtered out; finished in 2.5s").unwrap();
        assert_eq!(
            s,
            Summary {
                passed: 7,
                failed: 2,
                ignored: 3,
                filtered: 4
            }
        );
        assert_eq!(summary("test resulted"), None);
        assert_eq!(result_word("ok\r"), Some(Status::Passed));
        assert_eq!(result_word("chown-ok"), None);
    }
}
