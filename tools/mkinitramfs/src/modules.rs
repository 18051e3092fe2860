//! Finds kernel modules in an unpacked `lib/modules/<version>` tree and puts
//! the requested ones, with everything they depend on, in load order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::modinfo::{self, canonical_name, ModinfoError};

/// Errors while resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// Reading the tree or a module failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A module's metadata could not be read.
    #[error("{path}: {source}")]
    Modinfo {
        /// The module file.
        path: PathBuf,
        /// The cause.
        source: ModinfoError,
    },
    /// A requested module (or a dependency) is not in the tree.
    #[error("module {name:?} not found (needed by {needed_by})")]
    NotFound {
        /// The missing module.
        name: String,
        /// Who asked for it.
        needed_by: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle through module {0:?}")]
    Cycle(String),
}

/// A module ready to be packed, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (`_` instead of `-`).
    pub name: String,
    /// Where the `.ko` file is.
    pub path: PathBuf,
    /// Canonical names of its direct dependencies.
    pub depends: Vec<String>,
}

/// Every `.ko` file under a modules directory, by canonical name.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    by_name: BTreeMap<String, PathBuf>,
}

fn module_name(file: &str) -> Option<&str> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
}

impl ModuleIndex {
    /// Scans `dir` recursively for module files.
    pub fn scan(dir: &Path) -> Result<Self, ModulesError> {
        let mut idx = Self::default();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let io = |source| ModulesError::Io {
                path: d.clone(),
                source,
            };
            let mut entries = std::fs::read_dir(&d)
                .map_err(io)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let ft = e.file_type().map_err(io)?;
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if let Some(n) = e.file_name().to_str().and_then(module_name) {
                    idx.by_name.entry(canonical_name(n)).or_insert(p);
                }
            }
        }
        Ok(idx)
    }

    /// Builds an index from explicit (name, path) pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, PathBuf)>>(pairs: I) -> Self {
        Self {
            by_name: pairs
                .into_iter()
                .map(|(n, p)| (canonical_name(&n), p))
                .collect(),
        }
    }

    /// Number of modules found.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no module was found.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Path of a module by (any spelling of) its name.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.by_name
            .get(&canonical_name(name))
            .map(PathBuf::as_path)
    }

    /// Resolves `wanted` and their dependencies (read from each module's
    /// `depends=`) into load order: dependencies before their users, each
    /// module once.
    pub fn resolve(&self, wanted: &[String]) -> Result<Vec<Module>, ModulesError> {
        order(wanted, |name, needed_by| {
            let path = self.path(name).ok_or_else(|| ModulesError::NotFound {
                name: name.to_string(),
                needed_by: needed_by.to_string(),
            })?;
            let bytes = std::fs::read(path).map_err(|source| ModulesError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let info = modinfo::parse(&bytes).map_err(|source| ModulesError::Modinfo {
                path: path.to_path_buf(),
                source,
            })?;
            Ok((path.to_path_buf(), info.depends))
        })
    }
}

/// Topological order over a dependency lookup `deps(name, needed_by)`.
pub fn order<F>(wanted: &[String], mut deps: F) -> Result<Vec<Module>, ModulesError>
where
    F: FnMut(&str, &str) -> Result<(PathBuf, Vec<String>), ModulesError>,
{
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        let mut visiting = Vec::new();
        visit(
            &canonical_name(w),
            "the command line",
            &mut deps,
            &mut visiting,
            &mut done,
            &mut out,
        )?;
    }
    Ok(out)
}

fn visit<F>(
    name: &str,
    needed_by: &str,
    deps: &mut F,
    visiting: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    out: &mut Vec<Module>,
) -> Result<(), ModulesError>
where
    F: FnMut(&str, &str) -> Result<(PathBuf, Vec<String>), ModulesError>,
{
    if done.contains(name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        return Err(ModulesError::Cycle(name.to_string()));
    }
    let (path, d) = deps(name, needed_by)?;
    let d: Vec<String> = d.iter().map(|x| canonical_name(x)).collect();
    visiting.push(name.to_string());
    for dep in &d {
        visit(dep, name, deps, visiting, done, out)?;
    }
    visiting.pop();
    done.insert(name.to_string());
    out.push(Module {
        name: name.to_string(),
        path,
        depends: d,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lookup<'a> =
        Box<dyn FnMut(&str, &str) -> Result<(PathBuf, Vec<String>), ModulesError> + 'a>;

    fn graph<'a>(edges: &'a [(&'a str, &'a [&'a str])]) -> Lookup<'a> {
        Box::new(move |name: &str, needed_by: &str| {
            edges
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(n, d)| {
                    (
                        PathBuf::from(format!("{n}.ko")),
                        d.iter().map(|s| s.to_string()).collect(),
                    )
                })
                .ok_or_else(|| ModulesError::NotFound {
                    name: name.into(),
                    needed_by: needed_by.into(),
                })
        })
    }

    fn names(m: &[Module]) -> Vec<&str> {
        m.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let g: &[(&str, &[&str])] = &[
            ("kvm_amd", &["kvm", "ccp"]),
            ("kvm", &["irqbypass"]),
            ("irqbypass", &[]),
            ("ccp", &["irqbypass"]),
            ("virtio_blk", &["virtio", "virtio_ring"]),
            ("virtio", &[]),
            ("virtio_ring", &["virtio"]),
        ];
        let m = order(
            &["kvm-amd".into(), "virtio_blk".into(), "kvm".into()],
            graph(g),
        )
        .unwrap();
        assert_eq!(
            names(&m),
            [
                "irqbypass",
                "kvm",
                "ccp",
                "kvm_amd",
                "virtio",
                "virtio_ring",
                "virtio_blk"
            ]
        );
    }

    #[test]
    fn missing_dependency_names_the_user() {
        let g: &[(&str, &[&str])] = &[("kvm", &["irqbypass"])];
        let e = order(&["kvm".into()], graph(g)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "module \"irqbypass\" not found (needed by kvm)"
        );
    }

    #[test]
    fn cycles_are_detected() {
        let g: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])];
        assert!(matches!(
            order(&["a".into()], graph(g)),
            Err(ModulesError::Cycle(_))
        ));
    }

    #[test]
    fn scan_and_resolve_a_real_tree() {
        let dir = std::env::temp_dir().join(format!("zvisor-mods-{}", std::process::id()));
        let sub = dir.join("kernel/arch/x86/kvm");
        std::fs::create_dir_all(&sub).unwrap();
        let ko = |info: &[u8]| crate::modinfo::test_elf(true, false, &[(".modinfo", info)]);
        std::fs::write(sub.join("kvm-amd.ko"), ko(b"depends=kvm\0name=kvm_amd\0")).unwrap();
        std::fs::write(sub.join("kvm.ko"), ko(b"depends=irqbypass\0name=kvm\0")).unwrap();
        std::fs::write(
            dir.join("kernel/irqbypass.ko"),
            ko(b"depends=\0name=irqbypass\0"),
        )
        .unwrap();
        std::fs::write(dir.join("modules.order"), b"").unwrap();
        let idx = ModuleIndex::scan(&dir).unwrap();
        assert_eq!(idx.len(), 3);
        let m = idx.resolve(&["kvm_amd".into()]).unwrap();
        assert_eq!(names(&m), ["irqbypass", "kvm", "kvm_amd"]);
        assert_eq!(m[2].path, sub.join("kvm-amd.ko"));
        assert!(matches!(
            idx.resolve(&["nope".into()]),
            Err(ModulesError::NotFound { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
