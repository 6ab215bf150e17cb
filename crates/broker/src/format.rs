//! Formatting a data directory: what a broker's first start does to an empty `log.dirs`, also
//! on its own as `strata storage format` (kafka-storage.sh format) for scripts that fix the
//! cluster id or the first SCRAM users before any broker runs.
//!
//! There is one implementation: [`Broker::open`](crate::Broker::open) and [`format`] both lock
//! the directory with [`lock`] and call [`open_and_stamp`], which opens the metadata quorum
//! (committing the first records, `Cluster` and the `--add-scram` users, when it has no
//! cluster id yet: `ControllerService::open_quorum`) and brings `meta.properties` to the
//! current format version. A formatted directory is one with `meta.properties` or a `meta/`
//! directory (directories of format version 1 have only the latter).

use std::fs::File;
use std::path::Path;

use strata_quorum::raft::node::MetadataQuorum;
use strata_quorum::MetadataStore;

use crate::broker::StartError;
use crate::config::BrokerConfig;
use crate::controller::ControllerService;
use crate::data_dir::{self, MetaProperties};

/// What [`format`] did with the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formatted {
    /// The directory was empty and is now formatted with this cluster id.
    Formatted { dir: String, cluster_id: String },
    /// The directory was formatted before (with this cluster id) and was left alone.
    Skipped { dir: String, cluster_id: String },
}

/// Why [`format`] refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatStorageError {
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("the data directory {dir} is already formatted (cluster id {cluster_id}); use --ignore-formatted to skip it")]
    AlreadyFormatted { dir: String, cluster_id: String },
    #[error("the data directory {dir} is formatted with cluster id {found}, not {wanted}; point log.dirs at another directory or use cluster id {found}")]
    OtherCluster {
        dir: String,
        found: String,
        wanted: String,
    },
    #[error("cluster id {0:?} is not a UUID in Kafka's 22-character URL-safe base64 form (strata storage random-uuid prints one)")]
    BadClusterId(String),
}

/// A new cluster (or directory) id in Kafka's form: a random UUID as 22 characters of
/// URL-safe base64 without padding.
/// As Kafka's `Uuid.randomUuid`, never one starting with `-`, which a command line would
/// take for an option (`--cluster-id -x...`).
pub fn random_uuid() -> String {
    use base64::Engine;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// Whether `id` is a UUID in Kafka's 22-character URL-safe base64 form.
pub fn is_uuid(id: &str) -> bool {
    use base64::Engine;
    id.len() == 22
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id)
            .is_ok_and(|b| b.len() == 16)
}

/// Creates `dir` and takes the exclusive lock on `dir/.lock`, held while the file lives.
pub fn lock(dir: &Path) -> Result<File, StartError> {
    let dir_err = |source| StartError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    let lock_path = dir.join(".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(dir_err)?;
    if fs2::FileExt::try_lock_exclusive(&lock).is_err() {
        return Err(StartError::Locked {
            dir: dir.display().to_string(),
            lock: lock_path.display().to_string(),
        });
    }
    Ok(lock)
}

/// Opens the metadata quorum of the locked `dir` (formatting it at a first start: the
/// cluster id from `cluster.id` or a new one, and the `--add-scram` users; importing a
/// format-2 metadata log) and writes `meta.properties` at the current format version if
/// `previous` (what [`data_dir::check`] found) is older or absent.
///
/// `serve` runs once the quorum is open and before waiting for its leader: the broker
/// starts serving the other voters there.
pub async fn open_and_stamp<T>(
    dir: &Path,
    config: &BrokerConfig,
    previous: Option<MetaProperties>,
    serve: impl FnOnce(&MetadataQuorum) -> T,
) -> Result<(MetadataQuorum, T), StartError> {
    let had_data = dir.join("meta").exists();
    let metadata_err =
        |e: strata_quorum::raft::node::QuorumError| StartError::Metadata(e.to_string());
    let quorum = ControllerService::open_quorum_unsettled(&dir.join("meta"), config)
        .await
        .map_err(metadata_err)?;
    let served = serve(&quorum);
    ControllerService::settle(&quorum, config)
        .await
        .map_err(metadata_err)?;
    stamp(dir, config, previous, had_data, quorum.image().cluster_id)?;
    Ok((quorum, served))
}

/// Writes `meta.properties` at the current format version with `cluster_id` (the cluster
/// the metadata names) unless it is there already. `had_data`: the directory was in use
/// before (an upgrade, logged).
pub fn stamp(
    dir: &Path,
    config: &BrokerConfig,
    previous: Option<MetaProperties>,
    had_data: bool,
    cluster_id: Option<String>,
) -> Result<(), StartError> {
    let found = previous.as_ref().and_then(|m| m.cluster_id.clone());
    if let (Some(found), Some(current)) = (found, &cluster_id) {
        if found != *current {
            return Err(StartError::Metadata(format!(
                "data directory {} belongs to cluster {found}, and the controller quorum is cluster {current}: point log.dirs at this cluster's directory, or empty it",
                dir.display()
            )));
        }
    }
    let found_version = previous.as_ref().map(|m| m.format_version);
    if found_version != Some(data_dir::FORMAT_VERSION) {
        if had_data {
            tracing::info!(
                dir = %dir.display(),
                from = found_version.unwrap_or(1),
                to = data_dir::FORMAT_VERSION,
                "upgraded the data directory format"
            );
        }
        let meta = MetaProperties {
            cluster_id,
            node_id: Some(config.node_id),
            directory_id: previous
                .and_then(|m| m.directory_id)
                .or_else(|| Some(random_uuid())),
            format_version: data_dir::FORMAT_VERSION,
        };
        data_dir::write(dir, &meta).map_err(|e| StartError::DataDir {
            dir: dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

/// Runs `work` on a runtime of its own (the CLI's storage commands run outside one).
fn on_runtime<T>(work: impl std::future::Future<Output = T>) -> Result<T, StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| StartError::Metadata(format!("cannot start a runtime: {e}")))?;
    Ok(runtime.block_on(work))
}

/// Formats the data directory of `config` as a first start would: the cluster id is the
/// config's `cluster.id` if set (it must have Kafka's form), else a new one; the SCRAM users
/// are `config.add_scram`. A directory formatted before is an error unless
/// `ignore_formatted` (then left alone), and always one if it belongs to another node, or to
/// another cluster than a `cluster.id` that was set.
pub fn format(
    config: &BrokerConfig,
    ignore_formatted: bool,
) -> Result<Formatted, FormatStorageError> {
    let wanted = config.set.get("cluster.id").cloned();
    if let Some(id) = wanted.as_ref().filter(|id| !is_uuid(id)) {
        return Err(FormatStorageError::BadClusterId(id.clone()));
    }
    let dir = config.data_dir.as_path();
    let shown = dir.display().to_string();
    let _lock = lock(dir)?;
    let previous = data_dir::check(dir, config.node_id).map_err(StartError::from)?;
    let found = match (&previous, dir.join("meta").exists()) {
        (
            Some(MetaProperties {
                cluster_id: Some(id),
                ..
            }),
            _,
        ) => Some(id.clone()),
        // A directory of format version 1 or 2 (a metadata log, and an older file or none):
        // the cluster id is in the log.
        (_, true) if dir.join("meta").join("metadata.log").exists() => Some(
            MetadataStore::open_local(&dir.join("meta"))
                .map_err(|e| StartError::Metadata(e.to_string()))?
                .image()
                .cluster_id
                .clone()
                .unwrap_or_default(),
        ),
        // A metadata quorum whose meta.properties is missing: it knows the cluster id.
        (_, true) => Some(on_runtime(async {
            let quorum = ControllerService::open_quorum(&dir.join("meta"), config)
                .await
                .map_err(|e| StartError::Metadata(e.to_string()))?;
            let id = quorum.image().cluster_id.unwrap_or_default();
            quorum.shutdown().await;
            Ok::<_, StartError>(id)
        })??),
        (Some(_), false) => Some(String::new()),
        (None, false) => None,
    };
    if let Some(found) = found {
        if let Some(wanted) = wanted.filter(|w| !found.is_empty() && *w != found) {
            return Err(FormatStorageError::OtherCluster {
                dir: shown,
                found,
                wanted,
            });
        }
        if !ignore_formatted {
            return Err(FormatStorageError::AlreadyFormatted {
                dir: shown,
                cluster_id: found,
            });
        }
        return Ok(Formatted::Skipped {
            dir: shown,
            cluster_id: found,
        });
    }
    if crate::controller::quorum_voters(config).len() > 1 {
        return Err(FormatStorageError::Start(StartError::Metadata(
            "formatting a node of a quorum of several voters is not supported yet: start the nodes, and the quorum's first leader formats the cluster (with cluster.id if set)".into(),
        )));
    }
    let cluster_id = on_runtime(async {
        let (quorum, ()) = open_and_stamp(dir, config, previous, |_| ()).await?;
        let id = quorum.image().cluster_id.unwrap_or_default();
        quorum.shutdown().await;
        Ok::<_, StartError>(id)
    })??;
    Ok(Formatted::Formatted {
        dir: shown,
        cluster_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_kafkas_form() {
        let id = random_uuid();
        assert_eq!(id.len(), 22);
        assert!(is_uuid(&id), "{id}");
        assert_ne!(random_uuid(), id);
        assert!(!is_uuid("short"));
        assert!(!is_uuid("not+url+safe+base64+xx"));
        assert!(!is_uuid(""));
        assert!((0..2000).all(|_| !random_uuid().starts_with('-')));
    }
}
