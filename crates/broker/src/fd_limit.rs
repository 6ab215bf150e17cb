//! The process's open-file limit: raised to the hard limit at start-up, and shared between
//! the segment-file cache (`strata_log::file_cache`) and everything else (connections, the
//! metadata log, checkpoints, files opened for a moment).
//!
//! A partition holds no descriptor of its own: segment files are opened on demand within the
//! cache's budget, so the number of partitions is not bounded by the limit. What still needs
//! free descriptors is the work of the moment (accepting a connection, creating a partition's
//! files), which is why CreateTopics is refused up front when the process is nearly out of
//! descriptors that the cache cannot give back ([`create_headroom_error`]).

use std::io;

/// Descriptors kept out of the cache's budget for sockets and short-lived files: a quarter
/// of the limit, at least this many.
const MIN_RESERVE: u64 = 256;
/// Free descriptors (beyond the cache's, which it gives back on demand) that creating
/// partitions needs: a few files at a time, plus room for connections meanwhile.
const CREATE_HEADROOM: u64 = 64;
/// Used when the hard limit is "unlimited" (the kernel's `nr_open` default).
const UNLIMITED_CAP: u64 = 1 << 20;

/// The open-file limit after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit in effect.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit before it was raised, if it was.
    pub raised_from: Option<u64>,
}

fn get_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes one rlimit into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The soft RLIMIT_NOFILE now.
pub fn soft_limit() -> io::Result<u64> {
    Ok(get_limit()?.rlim_cur as u64)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (as a JVM running Kafka does with
/// `-XX:+MaxFDLimit`); an unlimited hard limit is capped at 2^20. A refusal leaves the soft
/// limit as it was.
pub fn raise_to_hard_limit() -> io::Result<NofileLimit> {
    let limit = get_limit()?;
    let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        UNLIMITED_CAP.max(soft)
    } else {
        hard
    };
    if target <= soft {
        return Ok(NofileLimit {
            soft,
            hard,
            raised_from: None,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: limit.rlim_max,
    };
    // Safety: setrlimit reads one rlimit from the struct we own and pass by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: target,
        hard,
        raised_from: Some(soft),
    })
}

/// How many segment files the cache may keep open under a soft limit of `soft`: all but a
/// reserve of a quarter (at least 256) for sockets and short-lived files.
pub fn cache_budget(soft: u64) -> usize {
    let reserve = (soft / 4).max(MIN_RESERVE);
    usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX)
}

/// Descriptors the process has open now (the entries of `/proc/self/fd`).
fn open_descriptors() -> io::Result<u64> {
    let mut count = 0u64;
    // Bounded by the open-file limit.
    for entry in std::fs::read_dir("/proc/self/fd")? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// Why creating partitions cannot be served now, if it cannot: the process is so close to
/// its open-file limit that, even with every cached segment file closed, fewer than
/// `CREATE_HEADROOM` descriptors would be free. Unknown counts (no `/proc`) never refuse.
pub fn create_headroom_error() -> Option<String> {
    let soft = soft_limit().ok()?;
    let open = open_descriptors().ok()?;
    let cached = strata_log::file_cache::stats().open as u64;
    let pinned = open.saturating_sub(cached);
    let free = soft.saturating_sub(pinned);
    (free < CREATE_HEADROOM).then(|| {
        format!(
            "The broker is out of file descriptors: {pinned} of its open-file limit of {soft} \
             are held by connections and other files, leaving {free} (creating partitions \
             needs {CREATE_HEADROOM}). Close connections or raise the limit (ulimit -n / \
             LimitNOFILE) and retry."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_a_reserve() {
        assert_eq!(cache_budget(1024), 768);
        assert_eq!(cache_budget(20_000), 15_000);
        assert_eq!(cache_budget(100), 0);
    }

    #[test]
    fn raising_is_idempotent() {
        let first = raise_to_hard_limit().expect("raise");
        let second = raise_to_hard_limit().expect("raise again");
        assert_eq!(second.raised_from, None);
        assert_eq!(first.soft, second.soft);
        assert!(open_descriptors().expect("count") > 0);
    }
}
