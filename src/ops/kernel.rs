//! Shared plumbing for the CPU kernels: the float element trait, reusable per-thread workspace,
//! a thin wrapper over the `gemm` crate, and helpers to hand disjoint output regions to rayon
//! workers.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, WithDType};
use gemm::Parallelism;

/// Workspace buffers larger than this (in bytes) are not kept for reuse after an op.
const MAX_CACHED_BYTES: usize = 64 << 20;
/// At most this many buffers are kept per thread.
const MAX_CACHED_BUFFERS: usize = 4;

/// The float types the CPU kernels handle (f32, the training dtype, and f64, used by the
/// PyTorch parity tests).
pub trait Float: WithDType {
    /// Takes a buffer of at least `len` elements from this thread's pool (contents unspecified).
    fn take_ws(len: usize) -> Vec<Self>;
    /// Gives a buffer back to this thread's pool.
    fn give_ws(buf: Vec<Self>);
    /// The element slice of a contiguous CPU storage of this type.
    fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [Self]>;
}

macro_rules! float_impl {
    ($t:ty, $pool:ident, $variant:ident) => {
        thread_local! {
            static $pool: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
        }
        impl Float for $t {
            fn take_ws(len: usize) -> Vec<$t> {
                let mut v = $pool
                    .with(|p| {
                        let mut p = p.borrow_mut();
                        // Prefer the smallest cached buffer that is large enough.
                        let best = p
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| b.capacity() >= len)
                            .min_by_key(|(_, b)| b.capacity())
                            .map(|(i, _)| i);
                        match best {
                            Some(i) => Some(p.swap_remove(i)),
                            None => p.pop(),
                        }
                    })
                    .unwrap_or_default();
                if v.len() < len {
                    v.resize(len, 0.0);
                }
                v
            }
            fn give_ws(buf: Vec<$t>) {
                if buf.capacity() * std::mem::size_of::<$t>() > MAX_CACHED_BYTES {
                    return;
                }
                $pool.with(|p| {
                    let mut p = p.borrow_mut();
                    if p.len() < MAX_CACHED_BUFFERS {
                        p.push(buf);
                    }
                })
            }
            fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [$t]> {
                match s {
                    CpuStorage::$variant(v) => match l.contiguous_offsets() {
                        Some((a, b)) => Ok(&v[a..b]),
                        None => candle_core::bail!("{what}: expected a contiguous tensor"),
                    },
                    other => candle_core::bail!(
                        "{what}: expected {:?}, got {:?}",
                        <$t as WithDType>::DTYPE,
                        other.dtype()
                    ),
                }
            }
        }
    };
}

float_impl!(f32, WS_F32, F32);
float_impl!(f64, WS_F64, F64);

/// Whether the CPU has the AVX-512 subset the [`multiversion!`] kernels are compiled for.
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX2 and FMA.
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Defines `fn $name` that runs the `#[inline(always)]` function `$inner` compiled for
/// AVX-512 or AVX2 + FMA when the CPU has them, else as built. wick is built for the baseline
/// x86-64 target (SSE2), so its plain loops only vectorise 4 wide otherwise.
macro_rules! multiversion {
    ($vis:vis fn $name:ident [$($gen:tt)*] ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $inner:path;) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi1,bmi2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3<$($gen)*>($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if $crate::ops::kernel::has_avx512() {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if $crate::ops::kernel::has_avx2() {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// A zeroed output buffer of `len` elements; large ones are advised to use transparent huge
/// pages before they are first touched (see [`super::alloc`]).
pub fn zeroed<T: Float>(len: usize) -> Vec<T> {
    let v = vec![T::zero(); len];
    super::alloc::advise(v.as_ptr() as *mut u8, len * std::mem::size_of::<T>());
    v
}

/// A raw pointer that rayon workers may share; each worker writes a disjoint region.
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: used only to hand disjoint sub-regions of one buffer to different workers.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// # Safety
    /// `off..off + len` must lie inside the allocation and no other thread may access it
    /// while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, off: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// Number of worker threads the kernels use (rayon's global pool).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// A strided matrix operand: element `(i, j)` lives at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Mat<T> {
    /// Row-major with leading dimension `ld`.
    pub fn rm(ptr: *const T, ld: usize) -> Self {
        Mat {
            ptr,
            rs: ld as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn rm_t(ptr: *const T, ld: usize) -> Self {
        Mat {
            ptr,
            rs: 1,
            cs: ld as isize,
        }
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)` through the `gemm` crate (its AVX-512
/// kernels when the CPU has them: the crate's `x86-v4` feature is on).
///
/// # Safety
/// Every pointer must be valid for the strided extents given; `dst` must not alias the
/// operands and must not be accessed concurrently.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(T::zero());
            }
        }
        return;
    }
    let par = if parallel && threads() > 1 {
        Parallelism::Rayon(threads())
    } else {
        Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        if accumulate { T::one() } else { T::zero() },
        T::one(),
        false,
        false,
        false,
        par,
    )
}

/// `c = a · b` for row-major f32 slices (`m x k`, `k x n`, `m x n`) through [`matmul`] on
/// all threads (the benchmark's GEMM row).
pub fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above bound every access.
    unsafe {
        matmul(
            m,
            n,
            k,
            c.as_mut_ptr(),
            n,
            false,
            Mat::rm(a.as_ptr(), k),
            Mat::rm(b.as_ptr(), n),
            true,
        );
    }
}

/// Helpers shared by the kernels' tests.
#[cfg(test)]
pub(crate) mod testutil {
    /// Deterministic values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Max |a - b| over two equally long slices.
    pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len(), "lengths differ");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }
}
