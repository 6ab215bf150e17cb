//! The metadata state machine under Raft: applies committed batches to the
//! [`MetadataImage`] and hands every new image to whoever serves it.
//!
//! A snapshot is the image written as records ([`MetadataImage::to_records`]), as KRaft
//! writes one: `<meta>/raft/snapshots/<index>-<term>.snapshot` holds a header frame
//! (`{"version":1,"last_log_id","membership","snapshot_id","record_count"}`) and one frame
//! per record, written to a temporary file, fsynced and renamed; one whose frames do not
//! add up to its record count is ignored. Only the newest is kept. The image itself lives in
//! memory: a restart rebuilds it from the newest snapshot and the log.

use std::collections::VecDeque;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::log_store::{replace_durably, sync_dir};
use super::{
    io_error, storage_error, Applied, ControllerNode, Entry, LogId, StorageError, StoredMembership,
    TypeConfig,
};
use crate::image::{MetadataDelta, MetadataImage};
use crate::log::{encode_frame, split_frames};
use crate::record::MetadataRecord;

/// A new image for whoever serves metadata: the offset it is at, the image, and what
/// changed since the previous one handed over.
#[derive(Debug, Clone)]
pub struct Published {
    pub offset: u64,
    pub image: Arc<MetadataImage>,
    pub delta: MetadataDelta,
}

/// How many applied entries a voter keeps in memory for the brokers that follow the
/// metadata by fetching (`docs/design/cluster.md` §2.7); one further behind gets the image.
const FOLLOWED_ENTRIES: usize = 4096;

/// What a broker that follows the metadata by fetching is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fetched {
    /// The applied entries from the one asked for, in order, each with its index (none:
    /// nothing newer is applied yet).
    Entries(Vec<(u64, Vec<MetadataRecord>)>),
    /// The whole image at `offset`, written as records: the entry asked for is no longer
    /// kept (or the fetcher starts from nothing).
    Image {
        offset: u64,
        records: Vec<MetadataRecord>,
    },
}

/// The state shared by the machine, its snapshot builder and the node's readers.
struct State {
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Where new images go, once someone serves them.
    publish: Option<mpsc::Sender<Published>>,
    /// The latest applied entries (index and records), contiguous, oldest first.
    recent: VecDeque<(u64, Vec<MetadataRecord>)>,
    /// The offset of the image, for those who wait for a newer one.
    applied: watch::Sender<u64>,
}

impl State {
    fn new(image: MetadataImage) -> State {
        let (applied, _) = watch::channel(image.offset);
        State {
            image,
            last_applied: None,
            membership: StoredMembership::default(),
            publish: None,
            recent: VecDeque::new(),
            applied,
        }
    }

    /// Applies the records of entry `index`, adding what they touch to `delta`.
    fn apply(&mut self, index: u64, records: &[MetadataRecord], delta: &mut MetadataDelta) {
        for record in records {
            self.image.apply_into(record, delta);
        }
        self.image.offset = index;
        if self.recent.len() == FOLLOWED_ENTRIES {
            self.recent.pop_front();
        }
        self.recent.push_back((index, records.to_vec()));
    }

    /// Replaces the image (an installed snapshot); the entries kept before no longer lead
    /// up to it.
    fn reset(&mut self, image: MetadataImage) {
        self.image = image;
        self.recent.clear();
    }

    /// What to hand the attached receiver after a change (none attached: nothing), and the
    /// new offset to those who wait.
    fn published(&self, delta: MetadataDelta) -> Option<(mpsc::Sender<Published>, Published)> {
        self.applied.send_replace(self.image.offset);
        self.publish.clone().map(|tx| {
            let update = Published {
                offset: self.image.offset,
                image: Arc::new(self.image.clone()),
                delta,
            };
            (tx, update)
        })
    }
}

/// A handle on the machine's image, for the controller (which plans against it) and the
/// broker (which is handed every new image once it attaches).
#[derive(Clone)]
pub struct MachineHandle {
    state: Arc<Mutex<State>>,
}

impl MachineHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the current image, holding off applies meanwhile.
    pub fn with_image<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(&self.lock().image)
    }

    /// A copy of the current image (cheap: topics are shared).
    pub fn image(&self) -> MetadataImage {
        self.lock().image.clone()
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.lock().last_applied
    }

    /// From now on every applied entry (or installed snapshot) hands its new image to
    /// `publish`. `served` is the offset of the image the receiver already serves: if the
    /// machine is past it, the current image is sent at once as a full reset.
    pub fn attach(&self, publish: mpsc::Sender<Published>, served: u64) {
        let mut state = self.lock();
        if state.image.offset != served {
            let update = Published {
                offset: state.image.offset,
                image: Arc::new(state.image.clone()),
                delta: MetadataDelta::reset(),
            };
            let tx = publish.clone();
            tokio::spawn(async move {
                let _ = tx.send(update).await;
            });
        }
        state.publish = Some(publish);
    }

    /// The machine of a broker that is not a voter: empty until [`MachineHandle::apply_fetched`]
    /// gives it what a voter sent.
    pub fn detached() -> MachineHandle {
        MachineHandle {
            state: Arc::new(Mutex::new(State::new(MetadataImage::default()))),
        }
    }

    /// Follows the image's offset.
    pub fn applied_offsets(&self) -> watch::Receiver<u64> {
        self.lock().applied.subscribe()
    }

    /// What a broker that has applied everything before `next` is sent (0: it has nothing
    /// yet): the kept entries from `next` on (at most about `max_records` records, and always one entry when there
    /// is one), or the whole image when `next` is no longer kept. Only applied, hence
    /// committed, entries are ever sent, so a fetcher never has to take one back.
    pub fn fetch(&self, next: u64, max_records: usize) -> Fetched {
        let state = self.lock();
        if next > state.image.offset {
            return Fetched::Entries(Vec::new());
        }
        match state.recent.front() {
            Some((first, _)) if *first <= next && next > 0 => {
                let mut entries = Vec::new();
                let mut records = 0;
                for (index, batch) in state.recent.iter().skip((next - first) as usize) {
                    if !entries.is_empty() && records + batch.len() > max_records {
                        break;
                    }
                    records += batch.len();
                    entries.push((*index, batch.clone()));
                }
                Fetched::Entries(entries)
            }
            _ => Fetched::Image {
                offset: state.image.offset,
                records: state.image.to_records(),
            },
        }
    }

    /// Applies what a voter sent ([`MachineHandle::fetch`]) and hands the new image to the
    /// attached receiver. Entries that do not follow this image's offset, and an image no
    /// newer than it, are ignored (a voter that lags behind the one fetched from before).
    pub async fn apply_fetched(&self, fetched: Fetched) {
        let publish = {
            let mut state = self.lock();
            match fetched {
                Fetched::Entries(entries) => {
                    let mut delta = MetadataDelta::default();
                    let mut applied = false;
                    for (index, records) in entries {
                        if index != state.image.offset + 1 {
                            continue;
                        }
                        state.apply(index, &records, &mut delta);
                        applied = true;
                    }
                    applied.then(|| state.published(delta)).flatten()
                }
                Fetched::Image { offset, records } => {
                    if offset <= state.image.offset && state.image.cluster_id.is_some() {
                        None
                    } else {
                        let mut image = MetadataImage::from_records(&records);
                        image.offset = offset;
                        state.reset(image);
                        state.published(MetadataDelta::reset())
                    }
                }
            }
        };
        if let Some((tx, update)) = publish {
            let _ = tx.send(update).await;
        }
    }
}

/// The metadata state machine.
pub struct ImageMachine {
    handle: MachineHandle,
    snapshots: PathBuf,
}

/// A snapshot file's first frame.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHeader {
    version: u32,
    last_log_id: Option<LogId>,
    membership: StoredMembership,
    snapshot_id: String,
    record_count: u64,
}

fn encode_snapshot(header: &SnapshotHeader, records: &[MetadataRecord]) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(
        &serde_json::to_vec(header).expect("a header encodes"),
        &mut bytes,
    );
    for record in records {
        encode_frame(
            &serde_json::to_vec(record).expect("a record encodes"),
            &mut bytes,
        );
    }
    bytes
}

fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<MetadataRecord>), String> {
    let (frames, good) = split_frames(bytes);
    if good != bytes.len() {
        return Err(format!("a torn or corrupt frame at byte {good}"));
    }
    let mut frames = frames.into_iter();
    let (_, first) = frames.next().ok_or("no header")?;
    let header: SnapshotHeader =
        serde_json::from_slice(first).map_err(|e| format!("header: {e}"))?;
    if header.version != 1 {
        return Err(format!("snapshot version {} is unknown", header.version));
    }
    let records = frames
        .map(|(pos, f)| serde_json::from_slice(f).map_err(|e| format!("record at byte {pos}: {e}")))
        .collect::<Result<Vec<MetadataRecord>, String>>()?;
    if records.len() as u64 != header.record_count {
        return Err(format!(
            "{} records where the header says {}",
            records.len(),
            header.record_count
        ));
    }
    Ok((header, records))
}

/// Snapshot files in `dir`, newest (highest index) first.
fn snapshot_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let index = name
                .strip_suffix(".snapshot")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            Some((index, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Writes a snapshot file durably and deletes the older ones.
fn write_snapshot(dir: &Path, header: &SnapshotHeader, bytes: &[u8]) -> io::Result<()> {
    let (index, term) = header
        .last_log_id
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    let path = dir.join(format!("{index:020}-{term}.snapshot"));
    replace_durably(&path, bytes)?;
    for older in snapshot_files(dir)?.into_iter().filter(|p| *p != path) {
        std::fs::remove_file(&older)?;
    }
    sync_dir(dir)
}

/// Writes `image` as the snapshot at `at` with `membership` into `dir` (the import of a
/// format-2 metadata log).
pub(crate) fn write_import_snapshot(
    dir: &Path,
    image: &MetadataImage,
    at: LogId,
    membership: StoredMembership,
) -> io::Result<()> {
    let records = image.to_records();
    let header = SnapshotHeader {
        version: 1,
        last_log_id: Some(at),
        membership,
        snapshot_id: format!("{}-{}-import", at.index, at.leader_id.term),
        record_count: records.len() as u64,
    };
    write_snapshot(dir, &header, &encode_snapshot(&header, &records))
}

fn snapshot_meta(header: &SnapshotHeader) -> SnapshotMeta<u64, ControllerNode> {
    SnapshotMeta {
        last_log_id: header.last_log_id,
        last_membership: header.membership.clone(),
        snapshot_id: header.snapshot_id.clone(),
    }
}

/// An image rebuilt from a snapshot's records, at the snapshot's offset.
fn image_of(header: &SnapshotHeader, records: &[MetadataRecord]) -> MetadataImage {
    let mut image = MetadataImage::from_records(records);
    image.offset = header.last_log_id.map_or(0, |l| l.index);
    image
}

impl ImageMachine {
    /// Opens the machine on `dir` (the snapshots directory, created if needed), starting
    /// from the newest intact snapshot, or an empty image.
    pub fn open(dir: &Path) -> io::Result<ImageMachine> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::new(MetadataImage::default());
        for path in snapshot_files(dir)? {
            match decode_snapshot(&std::fs::read(&path)?) {
                Ok((header, records)) => {
                    state.reset(image_of(&header, &records));
                    state.applied.send_replace(state.image.offset);
                    state.last_applied = header.last_log_id;
                    state.membership = header.membership;
                    break;
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason, "metadata snapshot unusable; trying an older one");
                }
            }
        }
        Ok(ImageMachine {
            handle: MachineHandle {
                state: Arc::new(Mutex::new(state)),
            },
            snapshots: dir.to_path_buf(),
        })
    }

    pub fn handle(&self) -> MachineHandle {
        self.handle.clone()
    }

    /// Applies `entries` in order; returns their answers and, when someone is attached,
    /// what to hand them.
    fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> (Vec<Applied>, Option<(mpsc::Sender<Published>, Published)>) {
        let mut state = self.handle.lock();
        let mut delta = MetadataDelta::default();
        let mut answers = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            match &entry.payload {
                EntryPayload::Blank => state.apply(index, &[], &mut delta),
                EntryPayload::Normal(batch) => state.apply(index, &batch.records, &mut delta),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    state.apply(index, &[], &mut delta);
                }
            }
            state.last_applied = Some(entry.log_id);
            answers.push(Applied { index });
        }
        let publish = state.published(delta);
        (answers, publish)
    }
}

/// Builds snapshots from a copy of the image.
pub struct SnapshotBuilder {
    handle: MachineHandle,
    snapshots: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (image, last_applied, membership) = {
            let state = self.handle.lock();
            (
                state.image.clone(),
                state.last_applied,
                state.membership.clone(),
            )
        };
        let dir = self.snapshots.clone();
        let built = tokio::task::spawn_blocking(move || {
            let records = image.to_records();
            let header = SnapshotHeader {
                version: 1,
                snapshot_id: last_applied.map_or("0-0".into(), |l| {
                    format!("{}-{}", l.index, l.leader_id.term)
                }),
                last_log_id: last_applied,
                membership,
                record_count: records.len() as u64,
            };
            let bytes = encode_snapshot(&header, &records);
            write_snapshot(&dir, &header, &bytes).map(|()| (header, bytes))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match built {
            Ok((header, bytes)) => {
                tracing::info!(
                    index = header.last_log_id.map_or(0, |l| l.index),
                    records = header.record_count,
                    bytes = bytes.len(),
                    "metadata snapshot written"
                );
                Ok(Snapshot {
                    meta: snapshot_meta(&header),
                    snapshot: Box::new(Cursor::new(bytes)),
                })
            }
            Err(error) => Err(io_error(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                &error,
            )),
        }
    }
}

impl RaftStateMachine<TypeConfig> for ImageMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.handle.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let (answers, publish) = self.apply_entries(entries);
        if let Some((tx, update)) = publish {
            // A receiver that went away (the broker is stopping) needs nothing more.
            let _ = tx.send(update).await;
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            handle: self.handle.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ControllerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let (header, records) = decode_snapshot(&bytes).map_err(|reason| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                reason,
            )
        })?;
        let dir = self.snapshots.clone();
        let header = tokio::task::spawn_blocking(move || {
            write_snapshot(&dir, &header, &bytes).map(|()| header)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(|error| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &error,
            )
        })?;
        let publish = {
            let mut state = self.handle.lock();
            state.reset(image_of(&header, &records));
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.published(MetadataDelta::reset())
        };
        if let Some((tx, update)) = publish {
            let _ = tx.send(update).await;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.snapshots.clone();
        let newest = tokio::task::spawn_blocking(move || -> io::Result<_> {
            for path in snapshot_files(&dir)? {
                let bytes = std::fs::read(&path)?;
                match decode_snapshot(&bytes) {
                    Ok((header, _)) => return Ok(Some((header, bytes))),
                    Err(reason) => {
                        tracing::warn!(path = %path.display(), reason, "metadata snapshot unusable")
                    }
                }
            }
            Ok(None)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(|error| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &error))?;
        Ok(newest.map(|(header, bytes)| Snapshot {
            meta: snapshot_meta(&header),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
