//! What the controller is asked to do, and the pure rules it decides by.
//!
//! - [`ops`]: the operations as plain data (serde), the same value whether the controller runs in
//!   this process or, later, on another node. The planning that turns an operation into records
//!   lives with the broker's config validation (`strata_broker::controller::plan`).
//! - [`placement`]: which brokers get the replicas of new partitions (Kafka's striped,
//!   rack-aware assignment).
//! - [`partition_change`]: the next state of one partition after a broker is fenced, unfenced or
//!   shuts down, an ISR change, a leader election or a reassignment.
//!
//! The last two are pure: no I/O, no clock, no randomness of their own (placement takes its
//! random start from the caller), so the controller, its tests and the simulation get the same
//! answer for the same input.

pub mod codes;
pub mod ops;
pub mod partition_change;
pub mod placement;

/// SplitMix64's output function: a fixed, well-mixed map from one `u64` to another. Placement
/// derives its start from a seed with it; the tests' generators step through it.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator for the property tests (no `rand` dependency needed).
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}
