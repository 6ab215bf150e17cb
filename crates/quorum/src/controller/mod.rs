//! What the controller is asked to do. The operations are plain data (serde) because they are
//! the same value whether the controller runs in this process or, later, on another node; the
//! planning that turns an operation into records lives with the broker's config validation
//! (`strata_broker::controller::plan`).

pub mod ops;
