//! The slots of a coordinator sharded per partition of its internal topic (group
//! coordination per `__consumer_offsets` partition, transaction coordination per
//! `__transaction_state` partition): one lock per partition, holding its shard while this
//! node leads the partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use strata_protocol::ErrorCode;

pub struct Shards<T> {
    /// One slot per partition: its shard when loaded here.
    slots: Vec<Mutex<Option<T>>>,
    /// A shard has been loaded, so the internal topic exists (it is created on first use).
    /// Before that no key has any state, so lookups answer as for an unknown key rather than
    /// NOT_COORDINATOR.
    created: AtomicBool,
}

impl<T> Shards<T> {
    pub fn new(partitions: i32) -> Self {
        Shards {
            slots: (0..partitions.max(1)).map(|_| Mutex::new(None)).collect(),
            created: AtomicBool::new(false),
        }
    }

    /// The slot of `partition`, locked (`None` for a partition the topic does not have).
    pub fn slot(&self, partition: i32) -> Option<MutexGuard<'_, Option<T>>> {
        let slot = self.slots.get(usize::try_from(partition).ok()?)?;
        Some(slot.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` on the shard of `partition` with its lock held. Before the topic exists, on
    /// a scratch shard from `empty` (nothing is known yet); NOT_COORDINATOR if the shard is
    /// not loaded here.
    pub fn with<R>(
        &self,
        partition: i32,
        empty: impl FnOnce() -> T,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, ErrorCode> {
        let mut slot = self.slot(partition).ok_or(ErrorCode::NotCoordinator)?;
        match slot.as_mut() {
            Some(shard) => Ok(f(shard)),
            None if !self.created.load(Ordering::Acquire) => Ok(f(&mut empty())),
            None => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Runs `f` on every loaded shard, one locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(&mut T)) {
        for slot in &self.slots {
            if let Some(shard) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                f(shard);
            }
        }
    }

    /// Loads the shard of `partition` with `build` unless it is loaded (its slot stays
    /// locked meanwhile, so requests for it wait for the load). The metadata publisher calls
    /// it when this node becomes the partition's leader.
    pub fn load(&self, partition: i32, build: impl FnOnce() -> T) {
        if let Some(mut slot) = self.slot(partition) {
            if slot.is_none() {
                *slot = Some(build());
            }
            self.created.store(true, Ordering::Release);
        }
    }

    /// Drops the shard of `partition` (this node no longer leads it).
    pub fn unload(&self, partition: i32) {
        if let Some(mut slot) = self.slot(partition) {
            *slot = None;
        }
    }
}
