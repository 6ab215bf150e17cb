//! Consumer-lag evaluation over a window of recent commits, with no thresholds.
//!
//! For each group and partition a [`CommitWindow`] keeps the last few committed offsets, each
//! with the time it was committed and the lag at that moment (the partition's end offset then,
//! minus the committed offset). [`evaluate_partition`] reads the window against the partition's
//! end offset now and answers one of Burrow's statuses; [`roll_up`] folds a group's partitions
//! into one. The rules, in the order they are tried:
//!
//! 1. No current lag (the last commit is at the end offset), or no known end offset: **OK**.
//! 2. The last commit is older than the window is long (`now − last > last − first`, with the
//!    span raised to [`LagConfig::stop_floor_ms`]): the consumer stopped committing, **STOP**,
//!    unless a recently sampled end offset was at or below the last commit (it had caught up
//!    moments ago and new records only just arrived).
//! 3. Some commit in the window had lag 0: the consumer keeps up, **OK**.
//! 4. The committed offset went down between two commits: **REWIND**; every commit carries the
//!    same offset: **STALL**; the lag never decreased from one commit to the next: **WARN**
//!    (moving, but falling behind); otherwise **OK**.
//!
//! Two deliberate departures from Burrow, both because its rules read a healthy consumer as
//! failing when the window holds little: the STOP rule's span has a floor (with one commit, or
//! commits bunched within a second, `last − first` is about 0 and every pause between two
//! commits would read STOP), and rule 4 needs two commits (one commit shows no motion at all;
//! `complete` says how much the window holds). Entries whose lag is unknown (replayed from a
//! commit that did not record the end offset) take part in the offset and time rules and are
//! skipped by the lag rules.
//!
//! Everything here is pure: time and end offsets are passed in.

use std::collections::VecDeque;

/// How windows are kept and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagConfig {
    /// Commits kept per group partition (`strata.lag.window.commits`).
    pub window_commits: usize,
    /// A commit closer than this to the newest entry replaces it instead of pushing the
    /// oldest out (`strata.lag.min.commit.distance.ms`), so a consumer committing every few
    /// milliseconds still leaves a window spanning real time.
    pub min_distance_ms: i64,
    /// The least span the STOP rule compares the last commit's age with
    /// (`strata.lag.stop.floor.ms`).
    pub stop_floor_ms: i64,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            window_commits: 10,
            min_distance_ms: 1_000,
            stop_floor_ms: 30_000,
        }
    }
}

/// One commit as the window keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitEntry {
    pub offset: i64,
    pub commit_ms: i64,
    /// The partition's end offset when the commit was accepted, minus `offset`; `None` when the
    /// end offset was not known.
    pub lag: Option<i64>,
}

impl CommitEntry {
    /// The entry for a commit of `offset` at `commit_ms`, when the partition ended at
    /// `end_offset` (negative: unknown).
    pub fn new(offset: i64, commit_ms: i64, end_offset: Option<i64>) -> Self {
        let lag = end_offset
            .filter(|end| *end >= 0)
            .map(|end| (end - offset).max(0));
        CommitEntry {
            offset,
            commit_ms,
            lag,
        }
    }
}

/// The latest commits of one group partition, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitWindow {
    entries: VecDeque<CommitEntry>,
}

impl CommitWindow {
    pub fn new() -> Self {
        CommitWindow::default()
    }

    /// Records a commit: replaces the newest entry when the two are closer than
    /// `min_distance_ms`, else appends and drops the oldest beyond `window_commits`.
    pub fn push(&mut self, entry: CommitEntry, config: &LagConfig) {
        if let Some(newest) = self.entries.back_mut() {
            if entry.commit_ms - newest.commit_ms < config.min_distance_ms {
                *newest = entry;
                return;
            }
        }
        self.entries.push_back(entry);
        while self.entries.len() > config.window_commits.max(1) {
            self.entries.pop_front();
        }
    }

    pub fn entries(&self) -> impl ExactSizeIterator<Item = &CommitEntry> + '_ {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn first(&self) -> Option<&CommitEntry> {
        self.entries.front()
    }

    pub fn last(&self) -> Option<&CommitEntry> {
        self.entries.back()
    }

    /// How full the window is, 0.0 to 1.0 (Burrow's `complete`).
    pub fn complete(&self, config: &LagConfig) -> f64 {
        (self.entries.len() as f64 / config.window_commits.max(1) as f64).min(1.0)
    }
}

/// Burrow's statuses. Partitions are OK, WARN, STOP, STALL or REWIND; groups OK, WARN, ERR or
/// NOTFOUND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LagStatus {
    NotFound,
    Ok,
    Warn,
    Err,
    Stop,
    Stall,
    Rewind,
}

impl LagStatus {
    /// Burrow's name, as the REST answer and the CLI print it.
    pub fn as_str(self) -> &'static str {
        match self {
            LagStatus::NotFound => "NOTFOUND",
            LagStatus::Ok => "OK",
            LagStatus::Warn => "WARN",
            LagStatus::Err => "ERR",
            LagStatus::Stop => "STOP",
            LagStatus::Stall => "STALL",
            LagStatus::Rewind => "REWIND",
        }
    }

    /// Burrow's numbering, used as the value of the status gauges.
    pub fn code(self) -> i64 {
        match self {
            LagStatus::NotFound => 0,
            LagStatus::Ok => 1,
            LagStatus::Warn => 2,
            LagStatus::Err => 3,
            LagStatus::Stop => 4,
            LagStatus::Stall => 5,
            LagStatus::Rewind => 6,
        }
    }

    /// How a partition status counts in its group: STOP, STALL and REWIND are errors.
    pub fn for_group(self) -> LagStatus {
        match self {
            LagStatus::Stop | LagStatus::Stall | LagStatus::Rewind => LagStatus::Err,
            other => other,
        }
    }
}

impl std::fmt::Display for LagStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partition as it is now.
#[derive(Debug, Clone, Copy)]
pub struct PartitionNow<'a> {
    /// The end offset (high watermark) now; negative when unknown.
    pub end_offset: i64,
    /// End offsets sampled in the recent past, any order (the STOP exception).
    pub recent_end_offsets: &'a [i64],
    pub now_ms: i64,
}

/// One partition's evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub status: LagStatus,
    /// End offset now minus the last committed offset; `None` without a commit or an end
    /// offset.
    pub current_lag: Option<i64>,
    pub committed_offset: Option<i64>,
    pub end_offset: Option<i64>,
    pub complete: f64,
    /// The oldest and newest entries of the window.
    pub start: Option<CommitEntry>,
    pub end: Option<CommitEntry>,
}

/// Evaluates one partition's window; see the module documentation for the rules.
pub fn evaluate_partition(
    window: &CommitWindow,
    now: PartitionNow<'_>,
    config: &LagConfig,
) -> PartitionLag {
    let end_offset = (now.end_offset >= 0).then_some(now.end_offset);
    let (first, last) = match (window.first(), window.last()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => {
            return PartitionLag {
                status: LagStatus::Ok,
                current_lag: None,
                committed_offset: None,
                end_offset,
                complete: 0.0,
                start: None,
                end: None,
            }
        }
    };
    let current_lag = end_offset.map(|end| (end - last.offset).max(0));
    let status = status_of(window, &first, &last, current_lag, now, config);
    PartitionLag {
        status,
        current_lag,
        committed_offset: Some(last.offset),
        end_offset,
        complete: window.complete(config),
        start: Some(first),
        end: Some(last),
    }
}

fn status_of(
    window: &CommitWindow,
    first: &CommitEntry,
    last: &CommitEntry,
    current_lag: Option<i64>,
    now: PartitionNow<'_>,
    config: &LagConfig,
) -> LagStatus {
    // Rule 1.
    if current_lag.unwrap_or(0) == 0 {
        return LagStatus::Ok;
    }
    // Rule 2.
    let span = (last.commit_ms - first.commit_ms).max(config.stop_floor_ms);
    if now.now_ms - last.commit_ms > span {
        let caught_up_recently = now.recent_end_offsets.iter().any(|e| *e <= last.offset);
        if !caught_up_recently {
            return LagStatus::Stop;
        }
    }
    let known_lags: Vec<i64> = window.entries().filter_map(|e| e.lag).collect();
    // Rule 3.
    if known_lags.contains(&0) {
        return LagStatus::Ok;
    }
    // Rule 4.
    if window.len() < 2 {
        return LagStatus::Ok;
    }
    let offsets: Vec<i64> = window.entries().map(|e| e.offset).collect();
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return LagStatus::Rewind;
    }
    if offsets.iter().all(|o| *o == offsets[0]) {
        return LagStatus::Stall;
    }
    if known_lags.len() >= 2 && known_lags.windows(2).all(|w| w[1] >= w[0]) {
        return LagStatus::Warn;
    }
    LagStatus::Ok
}

/// A group's evaluation: its partitions, keyed by whatever the caller names them with.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag<K> {
    pub status: LagStatus,
    /// The share of partitions whose window is full.
    pub complete: f64,
    pub total_lag: i64,
    /// Index into `partitions` of the partition with the largest current lag.
    pub max_lag: Option<usize>,
    pub partitions: Vec<(K, PartitionLag)>,
}

/// Folds a group's partitions into one status: the worst of them, with STOP, STALL and
/// REWIND counting as ERR. A group without partitions to evaluate is NOTFOUND only when the
/// caller says it does not exist (`exists`); an existing group without commits is OK.
pub fn roll_up<K>(exists: bool, partitions: Vec<(K, PartitionLag)>) -> GroupLag<K> {
    if !exists {
        return GroupLag {
            status: LagStatus::NotFound,
            complete: 0.0,
            total_lag: 0,
            max_lag: None,
            partitions: Vec::new(),
        };
    }
    let status = partitions
        .iter()
        .map(|(_, p)| p.status.for_group())
        .max()
        .unwrap_or(LagStatus::Ok);
    let full = partitions.iter().filter(|(_, p)| p.complete >= 1.0).count();
    let complete = if partitions.is_empty() {
        0.0
    } else {
        full as f64 / partitions.len() as f64
    };
    let total_lag = partitions
        .iter()
        .filter_map(|(_, p)| p.current_lag)
        .sum::<i64>();
    let max_lag = partitions
        .iter()
        .enumerate()
        .filter_map(|(i, (_, p))| p.current_lag.map(|lag| (lag, i)))
        // Largest lag; the first such partition on ties.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i);
    GroupLag {
        status,
        complete,
        total_lag,
        max_lag,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000;

    fn config() -> LagConfig {
        LagConfig {
            window_commits: 5,
            min_distance_ms: SEC,
            stop_floor_ms: 30 * SEC,
        }
    }

    /// A window from `(offset, commit second, end offset at commit)`.
    fn window(commits: &[(i64, i64, Option<i64>)]) -> CommitWindow {
        let mut w = CommitWindow::new();
        for &(offset, at, end) in commits {
            w.push(CommitEntry::new(offset, at * SEC, end), &config());
        }
        w
    }

    fn eval(w: &CommitWindow, end_offset: i64, now_s: i64, recent: &[i64]) -> PartitionLag {
        let now = PartitionNow {
            end_offset,
            recent_end_offsets: recent,
            now_ms: now_s * SEC,
        };
        evaluate_partition(w, now, &config())
    }

    fn status(w: &CommitWindow, end_offset: i64, now_s: i64) -> LagStatus {
        eval(w, end_offset, now_s, &[]).status
    }

    #[test]
    fn caught_up_now_is_ok_whatever_the_window_says() {
        // Offsets go backwards, yet the consumer sits at the end: OK.
        let w = window(&[(50, 0, Some(60)), (40, 10, Some(60)), (60, 20, Some(70))]);
        let lag = eval(&w, 60, 25, &[]);
        assert_eq!(lag.status, LagStatus::Ok);
        assert_eq!(lag.current_lag, Some(0));
        assert_eq!(lag.committed_offset, Some(60));
    }

    #[test]
    fn lag_zero_somewhere_in_the_window_is_ok() {
        let w = window(&[(10, 0, Some(20)), (30, 10, Some(30)), (40, 20, Some(55))]);
        assert_eq!(status(&w, 60, 25), LagStatus::Ok);
    }

    #[test]
    fn advancing_while_lag_grows_is_warn() {
        let w = window(&[
            (10, 0, Some(20)),
            (20, 10, Some(35)),
            (30, 20, Some(50)),
            (40, 30, Some(70)),
        ]);
        let lag = eval(&w, 80, 35, &[]);
        assert_eq!(lag.status, LagStatus::Warn);
        assert_eq!(lag.current_lag, Some(40));
        assert_eq!(lag.start.unwrap().offset, 10);
        assert_eq!(lag.end.unwrap().offset, 40);
    }

    #[test]
    fn advancing_with_lag_shrinking_once_is_ok() {
        let w = window(&[(10, 0, Some(20)), (20, 10, Some(40)), (45, 20, Some(50))]);
        assert_eq!(status(&w, 60, 25), LagStatus::Ok);
    }

    #[test]
    fn same_offset_with_lag_is_stall() {
        let w = window(&[(10, 0, Some(20)), (10, 10, Some(25)), (10, 20, Some(30))]);
        assert_eq!(status(&w, 30, 25), LagStatus::Stall);
    }

    #[test]
    fn offset_going_back_is_rewind() {
        let w = window(&[(10, 0, Some(20)), (30, 10, Some(40)), (15, 20, Some(45))]);
        assert_eq!(status(&w, 50, 25), LagStatus::Rewind);
    }

    #[test]
    fn last_commit_older_than_the_window_is_stop() {
        // Span 100 s; the last commit is 150 s old.
        let w = window(&[(10, 0, Some(20)), (20, 50, Some(30)), (30, 100, Some(40))]);
        assert_eq!(status(&w, 50, 250), LagStatus::Stop);
        // Within the span it is WARN (lag never decreased).
        assert_eq!(status(&w, 50, 150), LagStatus::Warn);
    }

    #[test]
    fn stop_is_suppressed_by_a_recent_end_offset_at_the_commit() {
        let w = window(&[(10, 0, Some(20)), (20, 50, Some(30)), (30, 100, Some(32))]);
        // Records only just arrived: a recent sample had the end at the last commit.
        let lag = eval(&w, 35, 250, &[30, 35]);
        assert_eq!(lag.status, LagStatus::Ok, "advancing, lag shrank once");
        // Without that sample it stopped.
        assert_eq!(eval(&w, 35, 250, &[33, 35]).status, LagStatus::Stop);
    }

    #[test]
    fn stop_span_has_a_floor() {
        // Two commits 2 s apart: Burrow's span would be 2 s and 5 s of silence read STOP.
        let w = window(&[(10, 0, Some(20)), (20, 2, Some(30))]);
        assert_eq!(status(&w, 40, 7), LagStatus::Warn);
        assert_eq!(status(&w, 40, 2 + 31), LagStatus::Stop);
    }

    #[test]
    fn one_commit_shows_no_motion() {
        let w = window(&[(10, 0, Some(20))]);
        let lag = eval(&w, 20, 5, &[]);
        assert_eq!(lag.status, LagStatus::Ok);
        assert_eq!(lag.complete, 0.2);
        // Silence past the floor is still a stop.
        assert_eq!(status(&w, 20, 31), LagStatus::Stop);
    }

    #[test]
    fn no_commits_or_no_end_offset_is_ok() {
        let lag = eval(&CommitWindow::new(), 100, 10, &[]);
        assert_eq!(lag.status, LagStatus::Ok);
        assert_eq!((lag.current_lag, lag.committed_offset), (None, None));
        let w = window(&[(10, 0, Some(20)), (10, 10, Some(20))]);
        let lag = eval(&w, -1, 20, &[]);
        assert_eq!(lag.status, LagStatus::Ok);
        assert_eq!(lag.current_lag, None);
    }

    #[test]
    fn unknown_lags_are_skipped_by_the_lag_rules_only() {
        // Replayed entries without an end offset: offsets still show a stall...
        let w = window(&[(10, 0, None), (10, 10, None), (10, 20, None)]);
        assert_eq!(status(&w, 30, 25), LagStatus::Stall);
        // ...and a rewind...
        let w = window(&[(10, 0, None), (5, 10, None), (8, 20, Some(30))]);
        assert_eq!(status(&w, 30, 25), LagStatus::Rewind);
        // ...but one known lag is not a trend: advancing offsets with one known lag are OK.
        let w = window(&[(10, 0, None), (20, 10, None), (30, 20, Some(40))]);
        assert_eq!(status(&w, 45, 25), LagStatus::Ok);
        // Known lags growing around an unknown one: WARN.
        let w = window(&[(10, 0, Some(15)), (20, 10, None), (30, 20, Some(40))]);
        assert_eq!(status(&w, 45, 25), LagStatus::Warn);
    }

    #[test]
    fn close_commits_replace_the_newest_and_the_window_is_bounded() {
        let mut w = CommitWindow::new();
        let c = config();
        w.push(CommitEntry::new(1, 0, Some(5)), &c);
        w.push(CommitEntry::new(2, 400, Some(5)), &c);
        w.push(CommitEntry::new(3, 900, Some(5)), &c);
        assert_eq!(w.len(), 1, "commits within a second merge");
        assert_eq!(w.last().unwrap().offset, 3);
        assert_eq!(w.last().unwrap().commit_ms, 900);
        for i in 1..=10 {
            w.push(CommitEntry::new(3 + i, 900 + i * SEC, Some(20)), &c);
        }
        assert_eq!(w.len(), 5);
        assert_eq!(w.first().unwrap().offset, 9);
        assert_eq!(w.complete(&c), 1.0);
    }

    #[test]
    fn commit_entry_lag_clamps_and_knows_unknown() {
        assert_eq!(CommitEntry::new(10, 0, Some(15)).lag, Some(5));
        // A commit past the end recorded (end sampled before a racing append): lag 0.
        assert_eq!(CommitEntry::new(10, 0, Some(8)).lag, Some(0));
        assert_eq!(CommitEntry::new(10, 0, Some(-1)).lag, None);
        assert_eq!(CommitEntry::new(10, 0, None).lag, None);
    }

    fn part(status: LagStatus, lag: Option<i64>, complete: f64) -> PartitionLag {
        PartitionLag {
            status,
            current_lag: lag,
            committed_offset: lag.map(|_| 0),
            end_offset: lag,
            complete,
            start: None,
            end: None,
        }
    }

    #[test]
    fn group_is_its_worst_partition_with_errors_folded() {
        let g = roll_up(
            true,
            vec![
                ("a", part(LagStatus::Ok, Some(0), 1.0)),
                ("b", part(LagStatus::Stall, Some(7), 1.0)),
                ("c", part(LagStatus::Warn, Some(30), 0.5)),
            ],
        );
        assert_eq!(g.status, LagStatus::Err);
        assert_eq!(g.total_lag, 37);
        assert_eq!(g.max_lag, Some(2));
        assert!((g.complete - 2.0 / 3.0).abs() < 1e-9);

        let g = roll_up(
            true,
            vec![
                ("a", part(LagStatus::Ok, Some(3), 1.0)),
                ("b", part(LagStatus::Warn, Some(3), 1.0)),
            ],
        );
        assert_eq!(g.status, LagStatus::Warn);
        assert_eq!(g.max_lag, Some(0), "ties go to the first partition");
        for bad in [LagStatus::Stop, LagStatus::Rewind] {
            let g = roll_up(true, vec![((), part(bad, Some(1), 1.0))]);
            assert_eq!(g.status, LagStatus::Err);
        }
    }

    #[test]
    fn unknown_and_empty_groups() {
        let g = roll_up::<()>(false, Vec::new());
        assert_eq!(g.status, LagStatus::NotFound);
        assert_eq!(g.status.code(), 0);
        let g = roll_up::<()>(true, Vec::new());
        assert_eq!(g.status, LagStatus::Ok);
        assert_eq!((g.total_lag, g.max_lag, g.complete), (0, None, 0.0));
        let g = roll_up(true, vec![((), part(LagStatus::Ok, None, 0.0))]);
        assert_eq!((g.status, g.max_lag), (LagStatus::Ok, None));
    }

    #[test]
    fn names_and_codes_are_burrows() {
        let all = [
            (LagStatus::NotFound, "NOTFOUND", 0),
            (LagStatus::Ok, "OK", 1),
            (LagStatus::Warn, "WARN", 2),
            (LagStatus::Err, "ERR", 3),
            (LagStatus::Stop, "STOP", 4),
            (LagStatus::Stall, "STALL", 5),
            (LagStatus::Rewind, "REWIND", 6),
        ];
        for (s, name, code) in all {
            assert_eq!((s.as_str(), s.code()), (name, code));
        }
    }
}
