//! Cross-checks against real tools and real modules: GNU cpio must list
//! what the writer wrote, and the Debian kernel's own modules (from
//! `ci/assets.sh`) must resolve into a valid load order.

use std::path::{Path, PathBuf};
use std::process::Command;

use zvisor_mkinitramfs::{write_image, FileSpec, ImageSpec, ModuleIndex};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assets_modules() -> Option<PathBuf> {
    let base = std::env::var_os("ZVISOR_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".zvisor-assets"));
    let dir = base.join("x86_64/modules");
    dir.is_dir().then_some(dir)
}

#[test]
fn gnu_cpio_lists_and_extracts_what_we_wrote() {
    if Command::new("cpio").arg("--version").output().is_err() {
        eprintln!("skipping: GNU cpio is not installed");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("zvisor-cpio-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("payload");
    let payload: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &payload).unwrap();
    let spec = ImageSpec {
        init: Some(src.clone()),
        files: vec![FileSpec {
            src: src.clone(),
            dst: "/deep/dir/payload".into(),
        }],
        texts: vec![("/etc/zvisor/init.conf".into(), b"report\n".to_vec())],
        modules: vec![],
    };
    let img = tmp.join("img.cpio");
    let mut bytes = Vec::new();
    write_image(&spec, &mut bytes).unwrap();
    std::fs::write(&img, &bytes).unwrap();

    let out = Command::new("cpio")
        .args(["-it", "--quiet", "-F"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = list.lines().collect();
    for want in [
        "dev/console",
        "init",
        "deep",
        "deep/dir",
        "deep/dir/payload",
        "etc/zvisor/init.conf",
    ] {
        assert!(names.contains(&want), "cpio did not list {want}: {names:?}");
    }

    let x = tmp.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let st = Command::new("cpio")
        .args(["-id", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&img)
        .arg("deep/dir/payload")
        .arg("init")
        .current_dir(&x)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(x.join("deep/dir/payload")).unwrap(), payload);
    assert_eq!(std::fs::read(x.join("init")).unwrap(), payload);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn debian_kvm_amd_resolves_in_dependency_order() {
    let Some(dir) = assets_modules() else {
        eprintln!("skipping: no .zvisor-assets/x86_64/modules (run ci/assets.sh x86_64)");
        return;
    };
    let idx = ModuleIndex::scan(&dir).unwrap();
    assert!(idx.len() > 100, "only {} modules found", idx.len());
    let mods = idx.resolve(&["kvm-amd".to_string()]).unwrap();
    let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing: {names:?}"))
    };
    assert!(pos("kvm") < pos("kvm_amd"));
    // Every module comes after all of its own dependencies.
    for (i, m) in mods.iter().enumerate() {
        for d in &m.depends {
            assert!(pos(d) < i, "{} loaded before its dependency {d}", m.name);
        }
    }
    assert_eq!(names.last(), Some(&"kvm_amd"));
}
