//! Allocator tuning for a small, steady footprint (the goal in BENCHMARKS.md: peak RSS <= 24 MiB
//! while walking 100,000 jobs).
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core). A walk allocates a
//! few hundred KB per page body on whichever tokio worker runs it, so each worker's arena ends up
//! holding its own high-water mark of freed page buffers: measured 26-27 MiB peak with the
//! default, 22.8 MiB with one arena. glibc's dynamic mmap threshold then still let page bodies
//! come from the heap and linger there (peak 22.2-24.3 MiB from run to run); a fixed threshold
//! makes each body its own mapping, returned when dropped: peak 16.9-17.2 MiB, at the price of
//! about 0.4 CPU-seconds more per 100,000-job walk (page faults on fresh mappings).
//!
//! This module only sets those parameters; it must be called before any thread is started, and
//! does nothing where glibc is not the allocator.

/// Allocations at least this large are served by their own `mmap` (glibc's initial default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Limits glibc malloc to a single arena. Call first thing in `main`, before the runtime exists.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; no other thread exists yet, and
    // glibc reads the limit when it next creates an arena.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // A fixed threshold turns off glibc's dynamic one, which after the first freed page body
        // rises to that body's size and from then on carves every body (hundreds of KB) out of
        // the heap, where freed ones linger as fragmentation. Fixed, each body is its own
        // mapping and goes back to the system the moment it is dropped.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
