//! `meta.properties`: what a data directory is, in the file Kafka uses for it.
//!
//! ```text
//! #Written by strata; read at every start
//! version=1
//! cluster.id=<22 characters>
//! node.id=1
//! directory.id=<22 characters>
//! strata.format.version=2
//! ```
//!
//! `version`, `cluster.id`, `node.id` and `directory.id` are Kafka's keys (KRaft
//! `meta.properties` version 1). `strata.format.version` is the layout of everything else in
//! the directory (`docs/on-disk-format.md`):
//!
//! - 1: directories written before the version existed (no `meta.properties`);
//! - 2: adds the recovery-point and high-watermark checkpoints, the clean-shutdown marker and
//!   per-partition `leader-epoch-checkpoint` files with epochs stamped in batches;
//! - 3: the metadata is a Raft log (`meta/raft/`: segments, vote, snapshots) instead of the
//!   single `meta/metadata.log`.
//!
//! Upgrades run at start-up: version 1 needs no rewrite (the new files are created as they
//! are needed, and its first start is treated as unclean, so every batch is validated);
//! versions 1 and 2 have their metadata log imported into the Raft log as its first snapshot
//! (`strata_quorum::raft::node`), and the old file is kept as `meta/metadata.log.imported`. A
//! directory of a newer version than this binary knows is refused with a message, as is one
//! that belongs to another node id.

use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT_VERSION: u32 = 3;
const FILE: &str = "meta.properties";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: Option<String>,
    pub node_id: Option<i32>,
    pub directory_id: Option<String>,
    /// 1 when the key is absent.
    pub format_version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a readable properties file: {reason}")]
    Malformed { path: String, reason: String },
    #[error("the data directory {dir} has format version {found}, written by a newer Strata; this binary reads versions up to {FORMAT_VERSION}. Run a newer strata, or point log.dirs at another directory")]
    TooNew { dir: String, found: u32 },
    #[error("the data directory {dir} belongs to node.id {found}, but this broker is node.id {configured}. Set node.id={found}, or point log.dirs at another directory")]
    OtherNode {
        dir: String,
        found: i32,
        configured: i32,
    },
}

/// Reads `dir/meta.properties`; `None` if the file does not exist.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, FormatError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FormatError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let malformed = |reason: String| FormatError::Malformed {
        path: path.display().to_string(),
        reason,
    };
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| malformed(format!("line without '=': {line}")))?;
        keys.insert(key.trim().to_string(), value.trim().to_string());
    }
    let format_version = match keys.get("strata.format.version") {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| malformed(format!("strata.format.version={v}")))?,
    };
    let node_id = match keys.get("node.id") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| malformed(format!("node.id={v}")))?),
    };
    Ok(Some(MetaProperties {
        cluster_id: keys.get("cluster.id").cloned(),
        node_id,
        directory_id: keys.get("directory.id").cloned(),
        format_version,
    }))
}

/// Checks that this binary may use the directory as node `node_id`; returns what it found.
pub fn check(dir: &Path, node_id: i32) -> Result<Option<MetaProperties>, FormatError> {
    let found = read(dir)?;
    if let Some(meta) = &found {
        if meta.format_version > FORMAT_VERSION {
            return Err(FormatError::TooNew {
                dir: dir.display().to_string(),
                found: meta.format_version,
            });
        }
        if let Some(found_id) = meta.node_id.filter(|id| *id != node_id) {
            return Err(FormatError::OtherNode {
                dir: dir.display().to_string(),
                found: found_id,
                configured: node_id,
            });
        }
    }
    Ok(found)
}

/// Writes `meta.properties` at the current format version (temp file, fsync, rename, fsync of
/// the directory).
pub fn write(dir: &Path, meta: &MetaProperties) -> Result<(), strata_log::LogError> {
    let mut text = String::from("#Written by strata; read at every start\nversion=1\n");
    if let Some(id) = &meta.cluster_id {
        text.push_str(&format!("cluster.id={id}\n"));
    }
    if let Some(id) = meta.node_id {
        text.push_str(&format!("node.id={id}\n"));
    }
    if let Some(id) = &meta.directory_id {
        text.push_str(&format!("directory.id={id}\n"));
    }
    text.push_str(&format!("strata.format.version={}\n", meta.format_version));
    strata_log::replace_file_durably(dir, FILE, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u32) -> MetaProperties {
        MetaProperties {
            cluster_id: Some("abc".into()),
            node_id: Some(1),
            directory_id: Some("dir".into()),
            format_version: version,
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check(dir.path(), 1).expect("fresh"), None);
        write(dir.path(), &meta(FORMAT_VERSION)).expect("write");
        assert_eq!(
            check(dir.path(), 1).expect("ok"),
            Some(meta(FORMAT_VERSION))
        );
        assert!(matches!(
            check(dir.path(), 2),
            Err(FormatError::OtherNode {
                found: 1,
                configured: 2,
                ..
            })
        ));
        write(dir.path(), &meta(FORMAT_VERSION + 1)).expect("write");
        let error = check(dir.path(), 1).expect_err("too new");
        assert!(error.to_string().contains("newer Strata"), "{error}");
        // Kafka's own file (no strata key) reads as version 1.
        std::fs::write(
            dir.path().join(FILE),
            "#\nversion=1\ncluster.id=x\nnode.id=1\ndirectory.id=y\n",
        )
        .expect("write");
        assert_eq!(
            check(dir.path(), 1).expect("ok").map(|m| m.format_version),
            Some(1)
        );
        std::fs::write(dir.path().join(FILE), "node.id=one\n").expect("write");
        assert!(matches!(
            check(dir.path(), 1),
            Err(FormatError::Malformed { .. })
        ));
    }
}
