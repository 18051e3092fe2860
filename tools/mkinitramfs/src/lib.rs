//! Builds initramfs images for zvisor's test guests: a newc cpio archive
//! with a static init, extra files, and kernel modules in load order.
//!
//! The image layout the guest init (`zvisor-init`) relies on:
//! - `/init`: the init binary;
//! - `/dev/console` (5:1) and `/dev/null` (1:3), so init has a console
//!   before it mounts devtmpfs;
//! - `/lib/modules/<name>.ko`: modules, and `/etc/zvisor/modules`: their
//!   absolute paths in load order, one a line.

pub mod cpio;
pub mod modinfo;
pub mod modules;

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use cpio::{CpioError, CpioWriter};
pub use modules::{Module, ModuleIndex, ModulesError};

/// Where the module load order is written inside the image.
pub const MODULES_LIST: &str = "/etc/zvisor/modules";

/// Errors while building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A host file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The host file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the archive failed.
    #[error("{path}: {source}")]
    Cpio {
        /// The archive path being written.
        path: String,
        /// The cause.
        source: CpioError,
    },
}

/// A host file to copy into the image.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Host path.
    pub src: PathBuf,
    /// Absolute path in the image.
    pub dst: String,
}

/// Everything that goes into one image.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Host path of the init binary, packed as `/init`.
    pub init: Option<PathBuf>,
    /// Host files to copy (permissions are kept).
    pub files: Vec<FileSpec>,
    /// Small generated files: (absolute path in the image, contents).
    pub texts: Vec<(String, Vec<u8>)>,
    /// Modules in load order.
    pub modules: Vec<Module>,
}

fn cpio_err(path: &str) -> impl FnOnce(CpioError) -> ImageError + '_ {
    move |source| ImageError::Cpio {
        path: path.to_string(),
        source,
    }
}

fn copy_file<W: Write>(
    w: &mut CpioWriter<W>,
    src: &Path,
    dst: &str,
    perm: Option<u32>,
) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: src.to_path_buf(),
        source,
    };
    let f = File::open(src).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    let perm = perm.unwrap_or(meta.permissions().mode() & 0o7777);
    let mut r = BufReader::with_capacity(1 << 20, f);
    w.file_from_reader(dst, perm, meta.len(), &mut r)
        .map_err(cpio_err(dst))
}

/// The file name a module gets inside the image.
pub fn module_image_path(m: &Module) -> String {
    let ext = m
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.find(".ko").map(|i| n[i..].to_string()))
        .unwrap_or_else(|| ".ko".to_string());
    format!("/lib/modules/{}{ext}", m.name)
}

/// Writes the image described by `spec` to `out`; returns its size.
pub fn write_image<W: Write>(spec: &ImageSpec, out: W) -> Result<u64, ImageError> {
    let mut w = CpioWriter::new(out);
    for d in ["/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/lib"] {
        w.dir(d, 0o755).map_err(cpio_err(d))?;
    }
    w.char_dev("/dev/console", 0o600, 5, 1)
        .map_err(cpio_err("/dev/console"))?;
    w.char_dev("/dev/null", 0o666, 1, 3)
        .map_err(cpio_err("/dev/null"))?;
    if let Some(init) = &spec.init {
        copy_file(&mut w, init, "/init", Some(0o755))?;
    }
    if !spec.modules.is_empty() {
        let mut list = String::new();
        for m in &spec.modules {
            let dst = module_image_path(m);
            copy_file(&mut w, &m.path, &dst, Some(0o644))?;
            list.push_str(&dst);
            list.push('\n');
        }
        w.file(MODULES_LIST, 0o644, list.as_bytes())
            .map_err(cpio_err(MODULES_LIST))?;
    }
    for f in &spec.files {
        copy_file(&mut w, &f.src, &f.dst, None)?;
    }
    for (dst, data) in &spec.texts {
        w.file(dst, 0o644, data).map_err(cpio_err(dst))?;
    }
    let (_, n) = w.finish().map_err(cpio_err("trailer"))?;
    Ok(n)
}

/// Writes the image to a file atomically (via a temporary file and rename).
pub fn write_image_file(spec: &ImageSpec, path: &Path) -> Result<u64, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let f = File::create(&tmp).map_err(io)?;
    let mut bw = std::io::BufWriter::with_capacity(1 << 20, f);
    let n = write_image(spec, &mut bw)?;
    bw.flush().map_err(io)?;
    drop(bw);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_has_skeleton_modules_list_and_files() {
        let dir = std::env::temp_dir().join(format!("zvisor-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join("init");
        std::fs::write(&init, b"#!init").unwrap();
        let ko = dir.join("kvm-amd.ko");
        std::fs::write(&ko, b"module").unwrap();
        let spec = ImageSpec {
            init: Some(init.clone()),
            files: vec![FileSpec {
                src: init.clone(),
                dst: "/bin/zvisor".into(),
            }],
            texts: vec![("/etc/zvisor/init.conf".into(), b"report\n".to_vec())],
            modules: vec![Module {
                name: "kvm_amd".into(),
                path: ko,
                depends: vec![],
            }],
        };
        let mut buf = Vec::new();
        let n = write_image(&spec, &mut buf).unwrap();
        assert_eq!(n as usize, buf.len());
        let text = String::from_utf8_lossy(&buf);
        for needle in [
            "dev/console\0",
            "init\0",
            "lib/modules/kvm_amd.ko\0",
            "/lib/modules/kvm_amd.ko\n",
            "etc/zvisor/modules\0",
            "bin/zvisor\0",
            "etc/zvisor/init.conf\0",
            "report\n",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_host_file_is_a_clear_error() {
        let spec = ImageSpec {
            init: Some("/nonexistent/zvisor-init".into()),
            ..Default::default()
        };
        let e = write_image(&spec, Vec::new()).unwrap_err();
        assert!(
            e.to_string().starts_with("/nonexistent/zvisor-init: "),
            "{e}"
        );
    }

    #[test]
    fn module_paths_keep_compression_suffix() {
        let m = |p: &str| Module {
            name: "virtio_blk".into(),
            path: p.into(),
            depends: vec![],
        };
        assert_eq!(
            module_image_path(&m("/x/virtio_blk.ko")),
            "/lib/modules/virtio_blk.ko"
        );
        assert_eq!(
            module_image_path(&m("/x/virtio_blk.ko.xz")),
            "/lib/modules/virtio_blk.ko.xz"
        );
    }
}
