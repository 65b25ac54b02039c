//! An optional global allocator for training processes: the system allocator, with large
//! blocks advised to use transparent huge pages.
//!
//! candle allocates a fresh buffer for every tensor; the large ones (activations and their
//! gradients, tens to hundreds of MB at 224 px) come straight from `mmap`, are faulted in
//! 4 KiB at a time and unmapped when dropped. The page-fault path was a quarter of the samples
//! of a BatchNorm forward+backward. With `MADV_HUGEPAGE` on blocks of 4 MiB and more, they
//! fault in 2 MiB at a time (where the kernel's `transparent_hugepage` mode is `madvise` or
//! `always`; elsewhere the advice is a no-op).
//!
//! Install it in the binary (not in the library):
//! ```ignore
//! #[global_allocator]
//! static ALLOC: wick::ops::alloc::HugePageAlloc = wick::ops::alloc::HugePageAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large get `MADV_HUGEPAGE`.
pub const HUGE_THRESHOLD: usize = 4 << 20;

/// [`System`] plus `madvise(MADV_HUGEPAGE)` on blocks of [`HUGE_THRESHOLD`] bytes or more.
pub struct HugePageAlloc;

#[cfg(target_os = "linux")]
pub(crate) fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < HUGE_THRESHOLD {
        return;
    }
    const PAGE: usize = 4096;
    let start = (p as usize).div_ceil(PAGE) * PAGE;
    let end = (p as usize + size) / PAGE * PAGE;
    if end > start {
        // SAFETY: the range lies inside a block this allocator just handed out; the advice
        // changes no contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise(_p: *mut u8, _size: usize) {}

// SAFETY: every call forwards to `System` with the same layout; `advise` only adds a hint.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if new_size >= HUGE_THRESHOLD && layout.size() < HUGE_THRESHOLD {
            advise(p, new_size);
        }
        p
    }
}
