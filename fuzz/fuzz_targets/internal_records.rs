//! Decoders of records the broker and its clients read back from logs and fetches: the
//! transaction marker (`strata_protocol::records::decode_marker`), the `__consumer_offsets`
//! and `__transaction_state` record formats (`strata_coordinator`), and the Rust client's
//! in-place batch reader (`strata_client::records::read_batch`).
//!
//! Each input is also read as `<key length: u8><key><value>`; batches are also tried after
//! `fix_batches` rewrote their CRC so that mutations reach the record decoders.
//!
//! Checks: nothing panics or aborts; `read_batch` yields offsets at or above `from`, strictly
//! increasing, within the batch's offset range.
#![no_main]

#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_fuzz::fix_batches;

fn check_reader(batch: &Bytes) {
    let Ok(header) = strata_protocol::batch::check_batch(batch, 0) else {
        return;
    };
    for from in [
        header.base_offset,
        header.base_offset + 1,
        header.last_offset(),
    ] {
        let mut last: Option<i64> = None;
        let _ = strata_client::records::read_batch(batch, from, |r| {
            assert!(r.offset >= from, "record below the requested offset");
            assert!(last.is_none_or(|l| r.offset > l), "offsets not increasing");
            assert!(r.offset <= header.last_offset(), "offset past the batch");
            last = Some(r.offset);
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = strata_protocol::records::decode_marker(data);
    // <key length: u8><key><value>
    let rest = data.get(1..).unwrap_or_default();
    let split = data.first().map_or(0, |b| usize::from(*b)).min(rest.len());
    let (key, value) = rest.split_at(split);
    let _ = strata_coordinator::GroupRecord::decode(key, Some(value));
    let _ = strata_coordinator::GroupRecord::decode(key, None);
    let _ = strata_coordinator::txn::decode_record(key, Some(value));
    check_reader(&Bytes::copy_from_slice(data));
    let mut fixed = data.to_vec();
    fix_batches(&mut fixed);
    let _ = strata_protocol::records::decode_marker(&fixed);
    check_reader(&Bytes::from(fixed));
});
