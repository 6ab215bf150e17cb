//! The global allocator: the system allocator, except that huge allocations reserve address
//! space without committing memory.
//!
//! Why: the message decoder sizes a vector from the element count a request declares before
//! reading the elements, so a 14-byte frame that claims two billion topics asks for a
//! 150 GB allocation. The system allocator refuses that, and a refused allocation aborts the
//! process: one bad frame would stop the broker. Mapped with `MAP_NORESERVE`, the request
//! succeeds as a reservation; the decoder then fails at the end of the frame (each element
//! needs bytes on the wire, and frames are bounded by `socket.request.max.bytes`), having
//! touched only the pages it wrote, and the mapping is released. Legitimate allocations of this
//! size do not happen in the broker.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are served by `mmap(MAP_NORESERVE)`.
const HUGE_BYTES: usize = 1 << 30;
/// `mmap` returns page-aligned memory; stricter alignments go to the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct ReservingAllocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_BYTES && layout.align() <= PAGE_BYTES
}

// Safety: every pointer handed out is either from `System` (and returned to it) or from an
// anonymous private mapping of exactly `layout.size()` bytes (and unmapped with that size);
// `is_huge` decides which, from the same layout at allocation and deallocation.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Safety: an anonymous mapping with no address hint has no preconditions.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast()
            }
        } else {
            // Safety: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Anonymous mappings are zero-filled.
            // Safety: forwarded with the caller's guarantees.
            unsafe { self.alloc(layout) }
        } else {
            // Safety: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // Safety: `ptr` came from the mmap above with this size.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // Safety: `ptr` came from System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = match Layout::from_size_align(new_size, layout.align()) {
            Ok(l) => l,
            Err(_) => return std::ptr::null_mut(),
        };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // Safety: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Safety: a fresh allocation, then a copy of the smaller size between two live,
        // non-overlapping blocks, then the old block is freed with its own layout.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservations_succeed_and_small_ones_round_trip() {
        let a = ReservingAllocator;
        // 200 GB: more than the machine has, reserved but not committed.
        let huge = Layout::from_size_align(200 << 30, 8).expect("layout");
        // Safety: layouts are non-zero; pointers are freed with their layouts.
        unsafe {
            let p = a.alloc(huge);
            assert!(!p.is_null());
            *p = 7;
            assert_eq!(*p, 7);
            a.dealloc(p, huge);
            let small = Layout::from_size_align(64, 8).expect("layout");
            let q = a.alloc(small);
            assert!(!q.is_null());
            let r = a.realloc(q, small, HUGE_BYTES + 10);
            assert!(!r.is_null());
            let big = Layout::from_size_align(HUGE_BYTES + 10, 8).expect("layout");
            let s = a.realloc(r, big, 32);
            assert!(!s.is_null());
            a.dealloc(s, Layout::from_size_align(32, 8).expect("layout"));
        }
    }
}
