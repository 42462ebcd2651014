//! Read-only access to a host's `/proc`, `/sys`, `/boot` under a root directory: `/` for the
//! running host, a fixture directory in tests.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// A host's file system, rooted at a directory. Every read is optional: a missing file is a
/// finding, never an error.
#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
}

impl Root {
    /// The host whose `/` is `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into() }
    }

    /// The root directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Whether this is the running host's own root (live-only probes apply).
    pub fn is_live(&self) -> bool {
        self.base == Path::new("/")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel.trim_start_matches('/'))
    }

    /// The file's content.
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    /// The file's content without surrounding whitespace.
    pub fn read_trim(&self, rel: &str) -> Option<String> {
        self.read(rel).map(|s| s.trim().to_owned())
    }

    /// A gzip-compressed file's content (`/proc/config.gz`).
    pub fn read_gz(&self, rel: &str) -> Option<String> {
        let f = std::fs::File::open(self.path(rel)).ok()?;
        let mut s = String::new();
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut s)
            .ok()?;
        Some(s)
    }

    /// Whether the path exists (a dangling symlink counts: sysfs links are read, not followed).
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    /// Names in a directory, sorted; empty if it does not exist.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Where a symlink points (as written). A regular file holding the target is accepted too,
    /// for fixtures kept where symlinks are inconvenient.
    pub fn link(&self, rel: &str) -> Option<String> {
        let p = self.path(rel);
        match std::fs::read_link(&p) {
            Ok(t) => Some(t.to_string_lossy().into_owned()),
            Err(_) if p.is_file() => self.read_trim(rel),
            Err(_) => None,
        }
    }

    /// The last component of a symlink's target (`.../drivers/ixgbe` → `ixgbe`).
    pub fn link_name(&self, rel: &str) -> Option<String> {
        let t = self.link(rel)?;
        t.trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}
