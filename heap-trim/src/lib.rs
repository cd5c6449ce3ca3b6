//! glibc's `malloc_trim(0)`: the free pages of every malloc arena handed back to the system.
//!
//! glibc keeps what a process frees for its next allocations and returns pages to the system
//! only from the top of its main heap; memory freed in the middle of a heap, or in another
//! thread's arena, stays resident. `malloc_trim` walks the free lists of every arena and
//! releases the whole pages inside free chunks; memory in use is never touched.

/// Trims every arena. Elsewhere than on glibc, nothing to do (musl's allocator returns freed
/// pages itself).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the allocator's own locks and frees no memory in use.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Caps the number of malloc arenas at `max`. glibc gives every thread that allocates an arena
/// of its own (up to eight per core), and memory freed into one arena serves only the threads
/// of that arena; a few arenas each holding a burst's leftovers add up. Takes effect for
/// threads that have not yet allocated: call it before any other thread starts. False where
/// the allocator refused it or is not glibc's.
pub fn limit_arenas(max: u16) -> bool {
    set(M_ARENA_MAX, i32::from(max))
}

/// Serves every allocation of `bytes` or more from a mapping of its own, returned to the
/// system when freed. glibc's threshold otherwise rises to the size of each large block freed
/// (up to 32 MiB), after which a large buffer (a page of a list, a growing table) is carved
/// from the heap and leaves a hole there when it goes. False where refused or not glibc.
pub fn fix_mmap_threshold(bytes: u32) -> bool {
    i32::try_from(bytes).is_ok_and(|bytes| set(M_MMAP_THRESHOLD, bytes))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use libc::{M_ARENA_MAX, M_MMAP_THRESHOLD};
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_ARENA_MAX: i32 = -8;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const M_MMAP_THRESHOLD: i32 = -3;

fn set(param: i32, value: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of the allocator, under its own lock.
        #[allow(unsafe_code)]
        let set = unsafe { libc::mallopt(param, value) };
        set == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (param, value);
        false
    }
}

/// What the heap holds: bytes in use (in the heaps and in mappings of their own) by the program and bytes free inside the allocator's
/// heaps (kept for later allocations; a trim returns the whole pages among them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUsage {
    pub in_use: u64,
    pub free: u64,
}

/// The allocator's own count, summed over every arena; `None` off glibc.
pub fn usage() -> Option<HeapUsage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 reads the allocator's counters under its own locks.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUsage {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free: info.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The process's anonymous resident memory (its heaps and stacks), in KiB.
pub fn anonymous_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    resident_field(&status, "RssAnon:")
}

fn resident_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that move megabytes through the heap, one at a time: each reads figures the
    /// other's blocks would change.
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_anonymous_resident_set_is_read_from_the_status_file() {
        let status = "VmRSS:\t   30720 kB\nRssAnon:\t   20480 kB\nRssFile:\t    9216 kB\n";
        assert_eq!(resident_field(status, "RssAnon:"), Some(20480));
        assert_eq!(resident_field(status, "RssShmem:"), None);
        assert!(anonymous_resident_kib().is_some_and(|kib| kib > 0));
    }

    #[test]
    fn a_trim_gives_back_what_was_freed_and_keeps_what_is_in_use() {
        let _alone = ALONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Blocks below malloc's mmap threshold (so in a heap), all freed but for copies of
        // every 64th made after them: 62 MiB free below memory in use, which free() alone
        // cannot give back (only a heap's top is).
        let mut blocks: Vec<Box<[u8; 4000]>> = (0..16_384).map(|_| Box::new([7u8; 4000])).collect();
        let kept: Vec<Box<[u8; 4000]>> = blocks.iter().step_by(64).cloned().collect();
        blocks.clear();
        blocks.shrink_to_fit();
        let before = anonymous_resident_kib().unwrap();
        trim();
        let after = anonymous_resident_kib().unwrap();
        let returned = before.saturating_sub(after);
        assert!(
            returned > 48 * 1024,
            "a trim gave back {returned} KiB of 62 MiB freed"
        );
        assert!(kept.iter().all(|block| block.iter().all(|b| *b == 7)));
    }

    #[test]
    fn glibc_takes_a_cap_on_its_arenas_and_a_fixed_mmap_threshold() {
        // 64 is above what this test binary's threads reach on a small machine: the cap is
        // set without changing how the other tests allocate.
        assert!(limit_arenas(64));
        let _alone = ALONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(fix_mmap_threshold(128 * 1024));
        // A block above the threshold is a mapping: counted in use while held, and gone, not
        // left free in a heap, once dropped; even after a larger one was freed, which would
        // have raised glibc's own threshold above it.
        drop(std::hint::black_box(vec![1u8; 8 * 1024 * 1024]));
        let before = usage().unwrap();
        let block = vec![7u8; 4 * 1024 * 1024];
        let held = usage().unwrap();
        assert!(held.in_use >= before.in_use + 4 * 1024 * 1024);
        drop(block);
        let after = usage().unwrap();
        assert!(
            after.free < before.free + 1024 * 1024,
            "{before:?} then {after:?}"
        );
    }

    #[test]
    fn the_heap_counts_what_is_in_use_and_what_is_free() {
        let _alone = ALONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = usage().unwrap();
        let blocks: Vec<Box<[u8; 4000]>> = (0..4096).map(|_| Box::new([7u8; 4000])).collect();
        let during = usage().unwrap();
        assert!(
            during.in_use >= before.in_use + 15 * 1024 * 1024,
            "{before:?} then {during:?}"
        );
        drop(blocks);
        let after = usage().unwrap();
        assert!(
            after.in_use + 15 * 1024 * 1024 <= during.in_use,
            "{during:?} then {after:?}"
        );
    }
}
