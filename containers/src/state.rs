//! Per-container state directories under `--root`: written atomically
//! (write, then rename), serialized per container by an flock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{p, Context, Error, Result};

/// The file a container's init blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// Lifecycle status, as reported by `state`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` has not finished (or was killed).
    Creating,
    /// Init waits on the exec fifo.
    Created,
    /// The user process runs.
    Running,
    /// Frozen.
    Paused,
    /// Init has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// What the runtime records about a container.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// The root filesystem (absolute).
    pub rootfs: PathBuf,
    /// Status at the last write.
    pub status: Status,
    /// Host pid of the container's init, once known.
    pub pid: Option<i32>,
    /// Start time (clock ticks since boot) of that pid, against pid reuse.
    pub pid_start: Option<u64>,
    /// Cgroup path relative to each hierarchy's root.
    pub cgroup: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// Annotations from config.json.
    pub annotations: BTreeMap<String, String>,
    /// True when the container has its own pid namespace.
    pub own_pidns: bool,
}

/// The state root and one container's directory in it.
pub struct StateDir {
    /// `<root>/<id>`.
    pub dir: PathBuf,
    _lock: File,
}

/// Validates a container id (it becomes a directory name and a cgroup name).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid container id {id:?} (allowed: letters, digits, _ + - .)"
        )))
    }
}

fn lock(dir: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(LOCK_FILE))
        .ctx(|| format!("opening the lock in {}", p(dir)))?;
    loop {
        // SAFETY: flock on an fd we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            break;
        }
        let e = nix::Error::last();
        if e != nix::Error::EINTR {
            return Err(e).ctx(|| format!("locking {}", p(dir)));
        }
    }
    Ok(f)
}

impl StateDir {
    /// Creates `<root>/<id>` (fails if it exists) and locks it.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        check_id(id)?;
        fs::create_dir_all(root).ctx(|| format!("creating the state root {}", p(root)))?;
        let dir = root.join(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.into()))
            }
            Err(e) => return Err(e).ctx(|| format!("creating {}", p(&dir))),
        }
        let _lock = lock(&dir)?;
        Ok(StateDir { dir, _lock })
    }

    /// Opens and locks an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        check_id(id)?;
        let dir = root.join(id);
        if !dir.is_dir() {
            return Err(Error::NotFound(id.into()));
        }
        let _lock = lock(&dir)?;
        // It may have been deleted while we waited for the lock.
        if !dir.is_dir() {
            return Err(Error::NotFound(id.into()));
        }
        Ok(StateDir { dir, _lock })
    }

    /// Reads the record (None if `create` died before writing it).
    pub fn load(&self) -> Result<Option<Record>> {
        read_record(&self.dir)
    }

    /// Writes the record atomically.
    pub fn save(&self, rec: &Record) -> Result<()> {
        let data = serde_json::to_vec(rec).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&self.dir.join(STATE_FILE), &data)
    }

    /// The lock's fd (a forked container process must close it).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self._lock.as_raw_fd()
    }

    /// Path of the exec fifo.
    pub fn fifo(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).ctx(|| format!("removing {}", p(&self.dir)))
    }
}

/// Reads a record without locking (for `list`, `state`).
pub fn read_record(dir: &Path) -> Result<Option<Record>> {
    match fs::read(dir.join(STATE_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State(format!("corrupt state in {}: {e}", p(dir)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("reading state in {}", p(dir))),
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp).ctx(|| format!("creating {}", p(&tmp)))?;
    f.write_all(data).ctx(|| format!("writing {}", p(&tmp)))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming to {}", p(path)))
}

/// Start time of a process (field 22 of /proc/PID/stat), if it exists.
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&s)
}

/// Parses field 22 of a /proc/PID/stat line (the comm may hold spaces).
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` still is the process recorded (same start time) and is
/// not a zombie.
pub fn alive(pid: i32, start: Option<u64>) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = s
        .rfind(')')
        .and_then(|i| s[i + 2..].split_whitespace().next());
    if matches!(state, Some("Z") | Some("X")) {
        return false;
    }
    match start {
        Some(t) => parse_start_time(&s) == Some(t),
        None => true,
    }
}

/// Current time in RFC 3339 (UTC, seconds precision plus nanoseconds).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lists the ids under the root.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e).ctx(|| format!("reading {}", p(root))),
    };
    for e in rd.flatten() {
        if e.path().is_dir() {
            ids.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn start_time_survives_spaces_in_comm() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987_654));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn create_is_exclusive_and_state_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::create(t.path(), "c1").unwrap();
        assert!(matches!(
            StateDir::create(t.path(), "c1"),
            Err(Error::Exists(_))
        ));
        assert!(sd.load().unwrap().is_none());
        let rec = Record {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            status: Status::Created,
            pid: Some(7),
            pid_start: Some(9),
            cgroup: "/zvisor-runc/c1".into(),
            created: now_rfc3339(),
            annotations: BTreeMap::new(),
            own_pidns: true,
        };
        sd.save(&rec).unwrap();
        let back = read_record(&sd.dir).unwrap().unwrap();
        assert_eq!(back.pid, Some(7));
        assert_eq!(back.status, Status::Created);
        assert_eq!(list_ids(t.path()).unwrap(), vec!["c1".to_string()]);
        sd.remove().unwrap();
        assert!(matches!(
            StateDir::open(t.path(), "c1"),
            Err(Error::NotFound(_))
        ));
    }
}
