//! An optional global allocator for training processes: the system allocator for small blocks,
//! and a bounded cache of `mmap`ed blocks, advised to use transparent huge pages, for large
//! ones.
//!
//! candle allocates a fresh buffer for every tensor: activations, every gradient (and the zero
//! tensor each gradient is accumulated into), every intermediate. Through the system allocator
//! the large ones come straight from `mmap`, are faulted in page by page, cleared by the
//! kernel and unmapped when dropped (with TLB shoot-downs across the worker threads). That was
//! a quarter of the samples of a BatchNorm forward+backward, and 10-25 % of the CPU time of a
//! ResNet-18 train step (system time and `clear_page`).
//!
//! Here blocks of [`CACHE_MIN`] to [`CACHE_BLOCK_MAX`] bytes are rounded up to a size class (at most 1/8
//! larger) and mapped by this allocator; when freed they are kept (up to [`CACHE_MAX`] bytes
//! in all; beyond that freed blocks are unmapped) and handed out again for the next request of the same
//! class (`WICK_ALLOC_CACHE=0` in the environment turns this off). A training step allocates the same sizes step after step, so after the first step
//! nearly every large tensor reuses a block that is already mapped. Blocks of
//! [`HUGE_THRESHOLD`] bytes or more are advised `MADV_HUGEPAGE` (they fault in 2 MiB at a
//! time where the kernel's `transparent_hugepage` mode is `madvise` or `always`).
//!
//! Install it in the binary (not in the library):
//! ```ignore
//! #[global_allocator]
//! static ALLOC: wick::ops::alloc::HugePageAlloc = wick::ops::alloc::HugePageAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large get `MADV_HUGEPAGE`.
pub const HUGE_THRESHOLD: usize = 4 << 20;
/// Blocks at least this large are mapped and cached by [`HugePageAlloc`].
pub const CACHE_MIN: usize = 256 << 10;
/// Blocks larger than this are mapped and unmapped every time, as by the system allocator.
pub const CACHE_BLOCK_MAX: usize = 256 << 20;
/// At most this many bytes of freed blocks are kept mapped (the price in peak RSS).
pub const CACHE_MAX: usize = 2 << 30;

/// [`System`] for small blocks; cached, huge-page-advised `mmap` blocks for large ones.
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

/// The size class of a request of `size` bytes: whole pages, rounded up to one of 8 steps per
/// power of two (so at most 1/8 larger).
pub fn size_class(size: usize) -> usize {
    const PAGE: usize = 4096;
    let pages = size.div_ceil(PAGE).max(1);
    if pages <= 8 {
        return pages * PAGE;
    }
    let top = usize::BITS - 1 - pages.leading_zeros(); // pages in [2^top, 2^(top+1))
    let step = 1usize << (top - 3);
    pages.div_ceil(step) * step * PAGE
}

#[cfg(target_os = "linux")]
mod cache {
    use std::sync::Mutex;

    /// Cached blocks at most (a fixed table: the allocator must not allocate for itself).
    const SLOTS: usize = 2048;

    struct Cache {
        /// `(address, class size, age)`, address 0 = empty slot.
        slots: [(usize, usize, u64); SLOTS],
        bytes: usize,
        clock: u64,
    }

    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        slots: [(0, 0, 0); SLOTS],
        bytes: 0,
        clock: 0,
    });

    fn lock() -> std::sync::MutexGuard<'static, Cache> {
        CACHE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached block of exactly `class` bytes (the most recently freed), if any.
    pub fn take(class: usize) -> Option<*mut u8> {
        let mut c = lock();
        let mut best: Option<usize> = None;
        for (i, s) in c.slots.iter().enumerate() {
            if s.0 != 0 && s.1 == class && best.is_none_or(|b| c.slots[b].2 < s.2) {
                best = Some(i);
            }
        }
        let i = best?;
        let addr = c.slots[i].0;
        c.slots[i] = (0, 0, 0);
        c.bytes -= class;
        Some(addr as *mut u8)
    }

    /// Keeps a freed block of `class` bytes, or unmaps it when the cache is full (no slot, or
    /// over [`super::CACHE_MAX`] bytes). Refusing newcomers rather than evicting the oldest
    /// keeps a stable subset cached when a step's blocks exceed the budget (evicting the
    /// oldest would miss every time on a cyclic pattern).
    pub fn put(p: *mut u8, class: usize) {
        {
            let mut c = lock();
            c.clock += 1;
            let age = c.clock;
            if c.bytes + class <= super::CACHE_MAX {
                if let Some(i) = c.slots.iter().position(|s| s.0 == 0) {
                    c.slots[i] = (p as usize, class, age);
                    c.bytes += class;
                    return;
                }
            }
        }
        super::unmap(p, class);
    }
}

#[cfg(target_os = "linux")]
fn map(class: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            class,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let p = p as *mut u8;
    advise(p, class);
    p
}

#[cfg(target_os = "linux")]
fn unmap(p: *mut u8, class: usize) {
    // SAFETY: `p` is a mapping of `class` bytes made by `map` and no longer referenced.
    unsafe {
        libc::munmap(p as *mut libc::c_void, class);
    }
}

/// Whether a block of this layout goes through the cache (page alignment suffices).
#[inline]
fn cached(layout: &Layout) -> bool {
    (CACHE_MIN..=CACHE_BLOCK_MAX).contains(&layout.size())
        && layout.align() <= 4096
        && cache_enabled()
}

/// The cache is on unless the environment sets `WICK_ALLOC_CACHE=0` (read once, without
/// allocating: this runs inside the allocator).
fn cache_enabled() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::{AtomicU8, Ordering};
        static STATE: AtomicU8 = AtomicU8::new(0);
        match STATE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                // SAFETY: a NUL-terminated name; the result is only read, before any other
                // use of the environment by this code.
                let off = unsafe {
                    let v = libc::getenv(c"WICK_ALLOC_CACHE".as_ptr());
                    !v.is_null() && *v == b'0' as libc::c_char
                };
                STATE.store(if off { 2 } else { 1 }, Ordering::Relaxed);
                !off
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

// SAFETY: small blocks are forwarded to `System` with the same layout. Large blocks
// (`cached`) are page-aligned anonymous mappings of `size_class(size)` bytes, owned by exactly
// one live allocation or by the cache; `dealloc`/`realloc` recompute the same class from the
// layout they are given, as the `GlobalAlloc` contract guarantees it is the allocating one.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if cached(&layout) {
            let class = size_class(layout.size());
            return cache::take(class).unwrap_or_else(|| map(class));
        }
        let p = System.alloc(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if cached(&layout) {
            let class = size_class(layout.size());
            return match cache::take(class) {
                Some(p) => {
                    std::ptr::write_bytes(p, 0, layout.size());
                    p
                }
                // Fresh anonymous mappings are zero.
                None => map(class),
            };
        }
        let p = System.alloc_zeroed(layout);
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(target_os = "linux")]
        if cached(&layout) {
            cache::put(ptr, size_class(layout.size()));
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !cached(&layout) && !cached(&new_layout) {
            let p = System.realloc(ptr, layout, new_size);
            if new_size >= HUGE_THRESHOLD && layout.size() < HUGE_THRESHOLD {
                advise(p, new_size);
            }
            return p;
        }
        if cached(&layout)
            && cached(&new_layout)
            && size_class(layout.size()) == size_class(new_size)
        {
            return ptr;
        }
        let p = self.alloc(new_layout);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_cover_requests_within_an_eighth() {
        let mut last = 0;
        for size in (1..40_000_000usize).step_by(4093) {
            let c = size_class(size);
            assert!(c >= size && c.is_multiple_of(4096), "{size} -> {c}");
            assert!(
                c <= size.div_ceil(4096) * 4096 * 9 / 8 + 4096,
                "{size} -> {c}"
            );
            assert!(c >= last, "classes are monotonic");
            last = c;
        }
        assert_eq!(size_class(CACHE_MIN), CACHE_MIN);
    }

    #[test]
    fn large_blocks_round_trip_through_the_cache() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(3 << 20, 64).expect("layout");
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, layout.size())
                .iter()
                .all(|&b| b == 0));
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            // The same class comes back from the cache, zeroed on request.
            let q = a.alloc_zeroed(layout);
            assert!(std::slice::from_raw_parts(q, layout.size())
                .iter()
                .all(|&b| b == 0));
            // Growing within the class keeps the block; beyond it moves the contents.
            std::ptr::write_bytes(q, 5, layout.size());
            let r = a.realloc(q, layout, 5 << 20);
            assert_eq!(*r, 5);
            assert_eq!(*r.add(layout.size() - 1), 5);
            let big = Layout::from_size_align(5 << 20, 64).expect("layout");
            let s = a.realloc(r, big, 100);
            assert_eq!(*s, 5);
            a.dealloc(s, Layout::from_size_align(100, 64).expect("layout"));
        }
    }
}
