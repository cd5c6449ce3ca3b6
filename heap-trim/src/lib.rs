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

    #[test]
    fn the_anonymous_resident_set_is_read_from_the_status_file() {
        let status = "VmRSS:\t   30720 kB\nRssAnon:\t   20480 kB\nRssFile:\t    9216 kB\n";
        assert_eq!(resident_field(status, "RssAnon:"), Some(20480));
        assert_eq!(resident_field(status, "RssShmem:"), None);
        assert!(anonymous_resident_kib().is_some_and(|kib| kib > 0));
    }

    #[test]
    fn a_trim_gives_back_what_was_freed_and_keeps_what_is_in_use() {
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
}
