//! Shared by the expansion targets: a counting allocator (per thread: the bytes held and
//! their peak) and the check that a decode stays within its limits, in the value it gives
//! and in the heap it uses on the way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use slapos_proto::marshal;
use slapos_proto::Limits;

/// Small limits, so that references can cross them with inputs of a few KB.
pub const LIMITS: Limits = Limits {
    max_bytes: 16 * 1024,
    max_depth: 12,
    max_elements: 512,
    max_expanded_bytes: 32 * 1024,
};

pub struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = CURRENT.try_with(|current| {
        let now = current.get().saturating_add(delta);
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(signed(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(signed(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        track(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(signed(new_size) - signed(layout.size()));
        }
        p
    }
}

/// Runs `f`; returns its result and the most heap this thread held meanwhile above what it
/// held before.
pub fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let out = f();
    let peak = PEAK.with(Cell::get).saturating_sub(before);
    (out, usize::try_from(peak).unwrap_or(0))
}

/// Decodes `data` under [`LIMITS`]: the heap used on the way is bounded by the limits (not
/// by what references would expand to), and an accepted value measures within them.
pub fn check(data: &[u8]) {
    let (result, peak) = peak_heap(|| marshal::decode(data, &LIMITS));
    // Text is at most the expanded bytes (doubled by `String` growth), values at most
    // the elements (a few machine words each, doubled by `Vec` growth), plus the input-sized
    // id sets and small fixed costs.
    let bound =
        4 * (data.len() + LIMITS.max_expanded_bytes) + 256 * LIMITS.max_elements + 64 * 1024;
    assert!(
        peak <= bound,
        "decoding {} bytes peaked at {peak} bytes of heap (bound {bound}): {result:?}",
        data.len()
    );
    let Ok(value) = result else {
        return;
    };
    let size = value.size();
    assert!(size.values < LIMITS.max_elements, "{size:?}");
    assert!(size.height < LIMITS.max_depth, "{size:?}");
    assert!(size.text_bytes <= LIMITS.max_expanded_bytes, "{size:?}");
    let xml = marshal::encode(&value).expect("a decoded value always encodes");
    let again = marshal::decode(xml.as_bytes(), &Limits::DEFAULT).expect("our own output decodes");
    assert_eq!(
        marshal::encode(&again).expect("encodes"),
        xml,
        "encoding is not canonical"
    );
}
