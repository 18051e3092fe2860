//! `zvisor-mkinitramfs`: builds an uncompressed newc initramfs.
//!
//! ```text
//! zvisor-mkinitramfs -o l2.cpio --init target/.../zvisor-init \
//!     --modules-dir .zvisor-assets/x86_64/modules --module kvm_amd \
//!     --file target/.../zvisor:/bin/zvisor --text /etc/zvisor/init.conf=@conf.txt
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};

#[derive(Parser, Debug)]
#[command(
    name = "zvisor-mkinitramfs",
    version,
    about = "Build a newc initramfs for zvisor test guests"
)]
struct Args {
    /// Output file (uncompressed newc cpio; Linux unpacks it as is).
    #[arg(short, long)]
    output: PathBuf,
    /// Static init binary, packed as /init.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Host file to add, as SRC:DST (DST absolute in the image).
    #[arg(long = "file", value_name = "SRC:DST")]
    files: Vec<String>,
    /// Small file to add, as DST=CONTENT, or DST=@HOSTFILE.
    #[arg(long = "text", value_name = "DST=CONTENT")]
    texts: Vec<String>,
    /// An unpacked lib/modules/<version> directory.
    #[arg(long)]
    modules_dir: Option<PathBuf>,
    /// Module to include with its dependencies (needs --modules-dir).
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
}

fn run(a: Args) -> Result<()> {
    let mut spec = ImageSpec {
        init: a.init,
        ..Default::default()
    };
    for f in &a.files {
        let Some((src, dst)) = f.rsplit_once(':') else {
            bail!("--file {f:?}: expected SRC:DST");
        };
        if !dst.starts_with('/') {
            bail!("--file {f:?}: DST must be absolute");
        }
        spec.files.push(FileSpec {
            src: src.into(),
            dst: dst.into(),
        });
    }
    for t in &a.texts {
        let Some((dst, content)) = t.split_once('=') else {
            bail!("--text {t:?}: expected DST=CONTENT");
        };
        let data = match content.strip_prefix('@') {
            Some(host) => std::fs::read(host).with_context(|| format!("--text {dst}: {host}"))?,
            None => content.as_bytes().to_vec(),
        };
        spec.texts.push((dst.to_string(), data));
    }
    if !a.modules.is_empty() {
        let Some(dir) = &a.modules_dir else {
            bail!("--module needs --modules-dir");
        };
        let idx = ModuleIndex::scan(dir)?;
        if idx.is_empty() {
            bail!("{}: no kernel modules found", dir.display());
        }
        spec.modules = idx.resolve(&a.modules)?;
        let names: Vec<&str> = spec.modules.iter().map(|m| m.name.as_str()).collect();
        eprintln!(
            "zvisor-mkinitramfs: modules in load order: {}",
            names.join(" ")
        );
    }
    let n = write_image_file(&spec, &a.output)?;
    eprintln!(
        "zvisor-mkinitramfs: wrote {} ({n} bytes)",
        a.output.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zvisor-mkinitramfs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
