//! Parsers for the device options people know from other VMMs:
//! `--disk path=...,readonly=on,serial=...`, `--net tap=NAME,mac=...`,
//! `--vsock cid=3,socket=PATH`, `--console serial|virtio`. Parsing and
//! validation only; the CLI wires them up. Values cannot contain commas.

use std::os::fd::RawFd;
use std::path::PathBuf;

use super::block::DiskConfig;

/// A bad option value; the message is one line and names the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{opt}: {msg}")]
pub struct OptionError {
    /// Option name without dashes.
    pub opt: &'static str,
    /// What is wrong.
    pub msg: String,
}

fn err(opt: &'static str, msg: impl Into<String>) -> OptionError {
    OptionError {
        opt,
        msg: msg.into(),
    }
}

/// Splits `k=v,k=v` into pairs, refusing unknown and repeated keys.
fn pairs<'a>(
    opt: &'static str,
    s: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, OptionError> {
    if s.trim().is_empty() {
        return Err(err(opt, "empty value"));
    }
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in s.split(',') {
        let Some((k, v)) = item.split_once('=') else {
            return Err(err(opt, format!("expected key=value, got '{item}'")));
        };
        if !known.contains(&k) {
            return Err(err(
                opt,
                format!("unknown key '{k}' (expected one of: {})", known.join(", ")),
            ));
        }
        if out.iter().any(|(o, _)| *o == k) {
            return Err(err(opt, format!("'{k}' given twice")));
        }
        if v.is_empty() {
            return Err(err(opt, format!("'{k}' has an empty value")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(opt: &'static str, k: &str, v: &str) -> Result<bool, OptionError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(err(opt, format!("{k} must be on or off, not '{v}'"))),
    }
}

/// Parses `--disk path=FILE[,readonly=on|off][,serial=ID]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, OptionError> {
    const OPT: &str = "disk";
    let mut cfg = DiskConfig {
        path: PathBuf::new(),
        readonly: false,
        serial: None,
    };
    let mut have_path = false;
    for (k, v) in pairs(OPT, s, &["path", "readonly", "serial"])? {
        match k {
            "path" => {
                cfg.path = PathBuf::from(v);
                have_path = true;
            }
            "readonly" => cfg.readonly = on_off(OPT, k, v)?,
            _ => {
                if v.len() > 20 {
                    return Err(err(OPT, format!("serial '{v}' is longer than 20 bytes")));
                }
                if !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(OPT, format!("serial '{v}' must be printable ASCII")));
                }
                cfg.serial = Some(v.to_string());
            }
        }
    }
    if !have_path {
        return Err(err(OPT, "missing path=FILE"));
    }
    Ok(cfg)
}

/// Where a NIC's tap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapSpec {
    /// Open (or create) the tap with this name.
    Name(String),
    /// Use this already open tap fd.
    Fd(RawFd),
}

/// A parsed `--net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// The tap.
    pub tap: TapSpec,
    /// Guest MAC; random if `None`.
    pub mac: Option<[u8; 6]>,
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (unicast only).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parses `--net tap=NAME[,mac=MAC]` or `--net fd=N[,mac=MAC]`.
pub fn parse_net(s: &str) -> Result<NetOptions, OptionError> {
    const OPT: &str = "net";
    let mut tap = None;
    let mut mac = None;
    for (k, v) in pairs(OPT, s, &["tap", "fd", "mac"])? {
        match k {
            "tap" | "fd" if tap.is_some() => {
                return Err(err(OPT, "give either tap= or fd=, not both"));
            }
            "tap" => {
                if v.len() > 15 || v.contains('/') {
                    return Err(err(
                        OPT,
                        format!("tap name '{v}' must be 1 to 15 bytes without '/'"),
                    ));
                }
                tap = Some(TapSpec::Name(v.to_string()));
            }
            "fd" => {
                let fd: RawFd =
                    v.parse().ok().filter(|&n| n >= 0).ok_or_else(|| {
                        err(OPT, format!("fd '{v}' is not a file descriptor number"))
                    })?;
                tap = Some(TapSpec::Fd(fd));
            }
            _ => {
                let m = parse_mac(v).ok_or_else(|| {
                    err(
                        OPT,
                        format!("invalid mac '{v}': expected six hex bytes like 52:54:00:12:34:56"),
                    )
                })?;
                if m[0] & 1 != 0 {
                    return Err(err(OPT, format!("mac {v} is a multicast address")));
                }
                if m == [0; 6] {
                    return Err(err(OPT, "mac 00:00:00:00:00:00 is not usable"));
                }
                mac = Some(m);
            }
        }
    }
    let tap = tap.ok_or_else(|| err(OPT, "missing tap=NAME (or fd=N)"))?;
    Ok(NetOptions { tap, mac })
}

/// A parsed `--vsock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockOptions {
    /// Guest CID.
    pub cid: u64,
    /// Host Unix socket path.
    pub socket: PathBuf,
}

/// Parses `--vsock cid=N,socket=PATH`.
pub fn parse_vsock(s: &str) -> Result<VsockOptions, OptionError> {
    const OPT: &str = "vsock";
    let mut cid = None;
    let mut socket = None;
    for (k, v) in pairs(OPT, s, &["cid", "socket"])? {
        match k {
            "cid" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| err(OPT, format!("cid '{v}' is not a number")))?;
                if !(3..u64::from(u32::MAX)).contains(&n) {
                    return Err(err(
                        OPT,
                        format!("cid {n} is reserved (use 3 to 4294967294)"),
                    ));
                }
                cid = Some(n);
            }
            _ => {
                // sun_path holds 108 bytes; guest-initiated connections add "_<port>".
                if v.len() > 96 {
                    return Err(err(
                        OPT,
                        format!("socket path '{v}' is too long (at most 96 bytes)"),
                    ));
                }
                socket = Some(PathBuf::from(v));
            }
        }
    }
    Ok(VsockOptions {
        cid: cid.ok_or_else(|| err(OPT, "missing cid=N"))?,
        socket: socket.ok_or_else(|| err(OPT, "missing socket=PATH"))?,
    })
}

/// Where the guest console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleKind {
    /// The platform's UART / SCLP console.
    Serial,
    /// virtio-console (`hvc0`).
    Virtio,
}

/// Parses `--console serial|virtio`.
pub fn parse_console(s: &str) -> Result<ConsoleKind, OptionError> {
    match s {
        "serial" => Ok(ConsoleKind::Serial),
        "virtio" => Ok(ConsoleKind::Virtio),
        _ => Err(err(
            "console",
            format!("expected serial or virtio, not '{s}'"),
        )),
    }
}

/// The host end of a `--channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelHost {
    /// A Unix stream socket zvisor creates and listens on.
    Socket(PathBuf),
    /// A file that receives the guest's output (created or truncated).
    File(PathBuf),
}

/// A parsed `--channel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Where the bytes go on the host.
    pub host: ChannelHost,
    /// A port name: the channel is then a named port of the multiport
    /// console (`/sys/class/virtio-ports/vportNpM/name`), not an `hvc`.
    pub name: Option<String>,
}

/// Parses `--channel socket=PATH[,name=NAME]` or `--channel file=PATH[,name=NAME]`.
pub fn parse_channel(s: &str) -> Result<ChannelOptions, OptionError> {
    const OPT: &str = "channel";
    let mut host = None;
    let mut name = None;
    for (k, v) in pairs(OPT, s, &["socket", "file", "name"])? {
        if k == "name" {
            if !super::console::valid_name(v) {
                return Err(err(
                    OPT,
                    format!("name '{v}' must be 1 to 127 letters, digits, '.', '_' or '-'"),
                ));
            }
            name = Some(v.to_string());
            continue;
        }
        if host.is_some() {
            return Err(err(OPT, "give either socket= or file=, not both"));
        }
        host = Some(if k == "socket" {
            // sun_path holds 108 bytes including the terminating NUL.
            if v.len() > 107 {
                return Err(err(
                    OPT,
                    format!("socket path '{v}' is too long (at most 107 bytes)"),
                ));
            }
            ChannelHost::Socket(PathBuf::from(v))
        } else {
            ChannelHost::File(PathBuf::from(v))
        });
    }
    let host = host.ok_or_else(|| err(OPT, "missing socket=PATH (or file=PATH)"))?;
    Ok(ChannelOptions { host, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk() {
        let d = parse_disk("path=/img/root.raw,readonly=on,serial=root0").unwrap();
        assert_eq!(d.path, PathBuf::from("/img/root.raw"));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("root0"));
        assert!(!parse_disk("path=a").unwrap().readonly);
        let e = |s| parse_disk(s).unwrap_err().to_string();
        assert_eq!(e("readonly=on"), "--disk: missing path=FILE");
        assert_eq!(
            e("path=a,readonly=maybe"),
            "--disk: readonly must be on or off, not 'maybe'"
        );
        assert_eq!(
            e("path=a,size=3"),
            "--disk: unknown key 'size' (expected one of: path, readonly, serial)"
        );
        assert_eq!(e("path=a,path=b"), "--disk: 'path' given twice");
        assert_eq!(e("path="), "--disk: 'path' has an empty value");
        assert_eq!(e("a.img"), "--disk: expected key=value, got 'a.img'");
        assert_eq!(e(""), "--disk: empty value");
        assert!(e("path=a,serial=0123456789abcdef01234").contains("longer than 20"));
        assert!(e("path=a,serial=a\tb").contains("printable"));
    }

    #[test]
    fn net() {
        let n = parse_net("tap=tap0,mac=52:54:00:12:34:56").unwrap();
        assert_eq!(n.tap, TapSpec::Name("tap0".into()));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(parse_net("fd=3").unwrap().tap, TapSpec::Fd(3));
        let e = |s| parse_net(s).unwrap_err().to_string();
        assert_eq!(
            e("mac=52:54:00:12:34:56"),
            "--net: missing tap=NAME (or fd=N)"
        );
        assert!(e("tap=t,mac=52:54:00:12:34").contains("invalid mac"));
        assert!(e("tap=t,mac=52:54:00:12:34:5g").contains("invalid mac"));
        assert!(e("tap=t,mac=52:54:00:12:34:56:77").contains("invalid mac"));
        assert_eq!(
            e("tap=t,mac=01:00:5e:00:00:01"),
            "--net: mac 01:00:5e:00:00:01 is a multicast address"
        );
        assert!(e("tap=0123456789abcdef").contains("1 to 15 bytes"));
        assert_eq!(e("tap=a,fd=3"), "--net: give either tap= or fd=, not both");
        assert!(e("fd=-1").contains("not a file descriptor"));
    }

    #[test]
    fn vsock_and_console() {
        let v = parse_vsock("cid=3,socket=/run/v.sock").unwrap();
        assert_eq!((v.cid, v.socket), (3, PathBuf::from("/run/v.sock")));
        let e = |s| parse_vsock(s).unwrap_err().to_string();
        assert_eq!(
            e("cid=2,socket=/x"),
            "--vsock: cid 2 is reserved (use 3 to 4294967294)"
        );
        assert_eq!(e("cid=x,socket=/x"), "--vsock: cid 'x' is not a number");
        assert_eq!(e("socket=/x"), "--vsock: missing cid=N");
        assert_eq!(e("cid=3"), "--vsock: missing socket=PATH");
        assert!(e(&format!("cid=3,socket=/{}", "a".repeat(100))).contains("too long"));
        assert_eq!(parse_console("virtio"), Ok(ConsoleKind::Virtio));
        assert_eq!(parse_console("serial"), Ok(ConsoleKind::Serial));
        assert_eq!(
            parse_console("hvc").unwrap_err().to_string(),
            "--console: expected serial or virtio, not 'hvc'"
        );
    }

    #[test]
    fn channel() {
        assert_eq!(
            parse_channel("socket=/run/c.sock").unwrap().host,
            ChannelHost::Socket("/run/c.sock".into())
        );
        assert_eq!(
            parse_channel("file=/var/log/g.log").unwrap().host,
            ChannelHost::File("/var/log/g.log".into())
        );
        let e = |s: &str| parse_channel(s).unwrap_err().to_string();
        assert_eq!(
            e("socket=/a,file=/b"),
            "--channel: give either socket= or file=, not both"
        );
        assert_eq!(e("socket=/a,socket=/b"), "--channel: 'socket' given twice");
        assert_eq!(
            e("path=/a"),
            "--channel: unknown key 'path' (expected one of: socket, file, name)"
        );
        assert_eq!(e("socket="), "--channel: 'socket' has an empty value");
        assert_eq!(e(""), "--channel: empty value");
        assert!(e(&format!("socket=/{}", "a".repeat(107))).contains("too long"));
        assert!(parse_channel(&format!("socket=/{}", "a".repeat(106))).is_ok());
        let c = parse_channel("socket=/s,name=org.zvisor.agent.0").unwrap();
        assert_eq!(c.name.as_deref(), Some("org.zvisor.agent.0"));
        assert_eq!(c.host, ChannelHost::Socket("/s".into()));
        assert!(e("socket=/s,name=a/b").contains("name 'a/b' must be"));
        assert_eq!(e("name=x"), "--channel: missing socket=PATH (or file=PATH)");
    }
}
