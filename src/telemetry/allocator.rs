//! The allocator (glibc's): how much it has handed out, for the metrics,
//! and handing back to the system what it holds free.
//!
//! glibc keeps memory freed after a burst (the first reconcile of every
//! token at start, a relist, thousands of tokens created together) in its
//! per-thread arenas, where only later allocations of the same arena reuse
//! it: with 10 000 tokens the resident set stayed a third above the heap
//! in use. `malloc_trim` returns those free pages to the system.

use std::time::Duration;

/// How often free memory is looked at.
pub const RELEASE_EVERY: Duration = Duration::from_secs(30);
/// Free memory the allocator may keep: below this a trim is not worth its
/// walk over the arenas.
const KEPT_FREE_BYTES: usize = 8 << 20;

/// Arenas the allocator may keep (glibc's default is eight per core).
const ARENAS: libc::c_int = 1;

/// Limits the allocator's arenas to [`ARENAS`]; to be called before any
/// thread starts. glibc gives threads arenas of their own as they contend,
/// and each keeps its own free memory and fragments: with 10 000 tokens the
/// default held 71 MiB resident for 33 MiB in use, two arenas 63 MiB, one
/// 56 MiB. Threads still allocate without the lock from caches of their
/// own (glibc's tcache), so one arena costs little contention on the few
/// threads the operator runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets a tunable of the allocator.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

/// What the allocator has handed out and not taken back, where it can say.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn allocated_bytes() -> Option<i64> {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    i64::try_from(info.uordblks + info.hblkhd).ok()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn allocated_bytes() -> Option<i64> {
    None
}

/// Hands free memory back to the system when the allocator holds more than
/// [`KEPT_FREE_BYTES`] of it; returns whether it did.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    if info.fordblks <= KEPT_FREE_BYTES {
        return false;
    }
    // SAFETY: malloc_trim only returns free pages; live allocations stay.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Releases free memory every [`RELEASE_EVERY`], for the process's life.
pub async fn release_free_memory_periodically() {
    let mut ticks = tokio::time::interval(RELEASE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        release_free_memory();
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn resident_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Many small blocks freed on another thread stay in that thread's
    /// arena until trimmed.
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..400_000).map(|i| vec![i as u8; 200]).collect();
            // Keep every hundredth: the arena cannot shrink from its top.
            blocks.retain(|b| b[0] % 100 == 0);
            std::hint::black_box(&blocks);
            let before = resident_bytes();
            assert!(release_free_memory(), "there was free memory to release");
            let after = resident_bytes();
            assert!(
                after + (32 << 20) < before,
                "resident {before} bytes before the trim, {after} after"
            );
        })
        .join()
        .unwrap();
    }
}
