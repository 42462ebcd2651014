//! The flow module's only `unsafe` code: the table's memory and cache prefetch.
//!
//! [`Region`] is a slice of `T` in anonymous memory mapped at start, aligned to 2 MiB and
//! advised `MADV_HUGEPAGE` (transparent huge pages are in `madvise` mode on the project's
//! machines), then touched page by page so that the kernel faults it in before the worker
//! runs: a 2 MiB fault on the frame path would cost a loop of a hundred microseconds. One
//! TLB entry then covers 2 MiB, so a lookup into a 100 MiB table misses the cache but not the
//! TLB. Under Miri (no `mmap`) the memory comes from the global allocator.
#![allow(unsafe_code)]

use std::{io, marker::PhantomData, ptr::NonNull};

/// Types whose all-zero bytes are a valid value (integers, atomics, arrays of them).
///
/// # Safety
/// Implement only for types made of integers and atomics, with no padding that matters and
/// no invariant a zero could break.
pub(crate) unsafe trait Zeroable {}

/// Huge-page alignment.
#[cfg(not(miri))]
const HUGE: usize = 2 << 20;

/// A fixed-size, zero-initialised slice of `T` in its own mapping.
pub(crate) struct Region<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped (what the table counts as allocated).
    bytes: usize,
    /// Where the mapping starts and how long it is (alignment slack included).
    map: (*mut u8, usize),
    _own: PhantomData<T>,
}

// SAFETY: a Region owns its memory like a Box<[T]>: moving it to another thread moves the
// ownership of the Ts (Send if T is), and &Region only hands out &T (Sync if T is).
unsafe impl<T: Zeroable + Send> Send for Region<T> {}
// SAFETY: see Send: shared access is shared access to the Ts.
unsafe impl<T: Zeroable + Sync> Sync for Region<T> {}

impl<T: Zeroable> std::fmt::Debug for Region<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl<T: Zeroable> Region<T> {
    /// `len` zeroed `T`s.
    ///
    /// # Errors
    /// The `mmap` error.
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let size = std::mem::size_of::<T>()
            .checked_mul(len.max(1))
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        assert!(std::mem::align_of::<T>() <= 4096, "page alignment at most");
        let bytes = size.div_ceil(4096) * 4096;
        let (map, base) = Self::map(bytes)?;
        Ok(Self {
            // The mapping is non-null (checked in map) and aligned for T (page-aligned).
            ptr: base.cast(),
            len,
            bytes,
            map,
            _own: PhantomData,
        })
    }

    #[cfg(not(miri))]
    fn map(bytes: usize) -> io::Result<((*mut u8, usize), NonNull<u8>)> {
        // Large regions get 2 MiB of slack so that a 2 MiB-aligned start exists in them.
        let huge = bytes >= HUGE;
        let len = if huge { bytes + HUGE } else { bytes };
        // SAFETY: an anonymous private mapping at an address the kernel picks: no existing
        // memory is affected; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let p = p.cast::<u8>();
        let off = if huge {
            (HUGE - (p as usize) % HUGE) % HUGE
        } else {
            0
        };
        // SAFETY: off < HUGE and len = bytes + HUGE, so p + off .. p + off + bytes lies
        // inside the mapping.
        let base = unsafe { p.add(off) };
        if huge {
            // SAFETY: madvise on a range inside our own mapping; failure (no THP in this
            // kernel) only means 4 KiB pages, so its result is ignored.
            unsafe { libc::madvise(base.cast(), bytes, libc::MADV_HUGEPAGE) };
        }
        // Fault every page in now (the mapping is zero already; writing a zero makes the
        // kernel back it), not on the frame path.
        let mut at = 0;
        while at < bytes {
            // SAFETY: at < bytes, inside the mapping, which is writable and not yet shared.
            unsafe { base.add(at).write_volatile(0) };
            at += 4096;
        }
        // p is not null: mmap succeeded.
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(((p, len), base))
    }

    #[cfg(miri)]
    fn map(bytes: usize) -> io::Result<((*mut u8, usize), NonNull<u8>)> {
        let layout = std::alloc::Layout::from_size_align(bytes, 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: layout has a non-zero size (bytes ≥ 4096).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(((p, bytes), base))
    }

    /// Bytes this region holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The address of element `i`, for a prefetch (no access).
    #[inline(always)]
    pub(crate) fn addr(&self, i: usize) -> *const u8 {
        self.ptr.as_ptr().wrapping_add(i).cast()
    }
}

impl<T: Zeroable> std::ops::Deref for Region<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: ptr points to len zero-initialised Ts (valid by Zeroable) in memory this
        // Region owns until drop; shared access is tied to &self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for Region<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for Region<T> {
    fn drop(&mut self) {
        #[cfg(not(miri))]
        // SAFETY: (map.0, map.1) is exactly the mapping made in new; no reference into it
        // outlives self. T needs no drop (integers and atomics).
        unsafe {
            libc::munmap(self.map.0.cast(), self.map.1);
        }
        #[cfg(miri)]
        // SAFETY: allocated in map with this size and alignment.
        unsafe {
            std::alloc::dealloc(
                self.map.0,
                std::alloc::Layout::from_size_align_unchecked(self.map.1, 4096),
            );
        }
    }
}

/// Starts loading the cache line at `p` (no effect on memory; any address is allowed).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no effect on memory, whatever
    // the address; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Bitmask of the words of a 64-byte line equal to `want` under `mask` (bit `i`: word `i`):
/// four SSE2 compares and one mask extraction (what an index bucket's tag search is).
#[inline(always)]
pub(crate) fn match16(line: &[u32; 16], mask: u32, want: u32) -> u32 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_packs_epi16, _mm_packs_epi32, _mm_set1_epi32,
        };
        let p = line.as_ptr().cast::<__m128i>();
        // SAFETY: `line` is 64 readable bytes, so the four unaligned 16-byte loads at offsets
        // 0, 16, 32 and 48 stay inside it; the other intrinsics only compute on registers, and
        // SSE2 (all of them) is part of the x86-64 baseline.
        unsafe {
            let m = _mm_set1_epi32(mask as i32);
            let w = _mm_set1_epi32(want as i32);
            let eq = |i| _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128(p.add(i)), m), w);
            // Each all-ones 32-bit lane saturates to an all-ones 16-bit, then 8-bit lane.
            let ab = _mm_packs_epi32(eq(0), eq(1));
            let cd = _mm_packs_epi32(eq(2), eq(3));
            _mm_movemask_epi8(_mm_packs_epi16(ab, cd)) as u32
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        let mut r = 0u32;
        for (i, &x) in line.iter().enumerate() {
            r |= u32::from((x & mask) == want) << i;
        }
        r
    }
}

// SAFETY: the records are arrays of AtomicU32: zero is a valid value.
unsafe impl Zeroable for super::record::Record {}
// SAFETY: buckets are arrays of u32: zero is a valid (empty) bucket.
unsafe impl Zeroable for super::index::Bucket {}
// SAFETY: links are arrays of u16.
unsafe impl Zeroable for super::wheel::Link {}

/// The CPU's time-stamp counter (x86-64; elsewhere nanoseconds since an arbitrary start),
/// for benchmarks that compare cycle counts with DPDK's.
#[inline]
pub fn tsc() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: RDTSC reads a register; it has no memory effects and exists on every x86-64.
    return unsafe { std::arch::x86_64::_rdtsc() };
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}
