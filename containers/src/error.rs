//! The crate's error type.

use std::path::Path;

/// Everything that can go wrong in the runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// config.json is malformed or asks for something impossible.
    #[error("invalid config: {0}")]
    Config(String),
    /// A valid request this runtime or this host cannot honour.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No container of that id under the state root.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A container of that id already exists.
    #[error("container {0} already exists")]
    Exists(String),
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// A file or I/O operation failed.
    #[error("{ctx}")]
    Io {
        /// What was being done.
        ctx: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{ctx}")]
    Sys {
        /// What was being done.
        ctx: String,
        /// The underlying errno.
        #[source]
        source: nix::Error,
    },
    /// A message from another process of the runtime (the container's init).
    #[error("{0}")]
    Child(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds context to I/O and errno results.
pub trait Context<T> {
    /// Wraps the error with a description of what was being done.
    fn ctx<S: Into<String>>(self, ctx: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<S: Into<String>>(self, ctx: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            ctx: ctx().into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx<S: Into<String>>(self, ctx: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Sys {
            ctx: ctx().into(),
            source,
        })
    }
}

impl Error {
    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<nix::Error> {
        match self {
            Error::Sys { source, .. } => Some(*source),
            Error::Io { source, .. } => source.raw_os_error().map(nix::Error::from_raw),
            _ => None,
        }
    }

    /// Renders the error with its whole source chain on one line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// Shorthand for a path in messages.
pub(crate) fn p(path: &Path) -> String {
    path.display().to_string()
}
