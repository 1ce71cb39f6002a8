//! The allocator (glibc's): how much it has handed out, for the metrics,
//! and handing back to the system what it holds free.
//!
//! glibc keeps memory freed after a burst (the first reconcile of every
//! token at start, a relist, thousands of tokens created together) in its
//! arenas, where only later allocations reuse it: with 10 000 tokens the
//! resident set stayed a third above the heap in use. `malloc_trim` returns
//! those free pages to the system.

use std::time::Duration;

/// How often free memory is looked at: soon after a burst, so what it
/// freed is not held while the next one (a restart's first reconciles
/// follow its lists) adds to the resident set.
pub const RELEASE_EVERY: Duration = Duration::from_secs(5);
/// Memory freed since the last trim that is worth a walk over the arena.
const KEPT_FREE_BYTES: usize = 8 << 20;

/// Arenas the allocator may keep (glibc's default is eight per core).
const ARENAS: libc::c_int = 1;

/// Allocations at least this large are mapped on their own and unmapped
/// when freed. glibc's default starts at 128 KiB and rises to the largest
/// block freed so far (up to 32 MiB), after which the buffers of listing
/// thousands of objects and the tables of the caches land in the arena
/// between small long-lived blocks and stay resident as holes: a fixed
/// threshold took a tenth off the resident peak of a restart with 30 000
/// tokens. A snapshot of a large cache (800 KiB of pointers with 100 000
/// tokens, taken per issuer change or metrics scrape) is then mapped and
/// unmapped each time: a few hundred page faults, a fraction of a
/// millisecond.
const MAPPED_FROM_BYTES: libc::c_int = 256 << 10;

/// Sets the allocator up; to be called before any thread starts. glibc
/// gives threads arenas of their own as they contend, and each keeps its
/// own free memory and fragments: with 10 000 tokens the default held
/// 71 MiB resident for 33 MiB in use, two arenas 63 MiB, one 56 MiB.
/// Threads still allocate without the lock from caches of their own
/// (glibc's tcache), so one arena costs little contention on the few
/// threads the operator runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn configure() {
    // SAFETY: mallopt only sets tunables of the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

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

/// What the allocator holds free, where it can say.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_bytes() -> Option<usize> {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    Some(unsafe { libc::mallinfo2() }.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_bytes() -> Option<usize> {
    None
}

/// Hands the allocator's free pages back to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; live allocations stay.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// When free memory is worth handing back. A trim leaves the freed blocks
/// counted as free (only their pages go back), so what it looks for is
/// memory freed since: more free than the least seen since the last trim.
/// Trimming while nothing new was freed would only walk the arena again.
#[derive(Debug, Default)]
struct Releases {
    /// The least free memory seen since the last trim.
    least_free: usize,
}

impl Releases {
    /// Whether to trim now, with `free` bytes free.
    fn due(&mut self, free: usize) -> bool {
        self.least_free = self.least_free.min(free);
        if free > self.least_free + KEPT_FREE_BYTES {
            self.least_free = free;
            true
        } else {
            false
        }
    }
}

/// Looks at free memory every [`RELEASE_EVERY`] and hands it back once
/// enough was freed, for the process's life.
pub async fn release_free_memory_periodically() {
    let mut ticks = tokio::time::interval(RELEASE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut releases = Releases::default();
    loop {
        ticks.tick().await;
        if free_bytes().is_some_and(|free| releases.due(free)) {
            trim();
        }
    }
}

#[cfg(test)]
mod decisions {
    use super::*;

    const MIB: usize = 1 << 20;

    /// Free memory at each look, and whether that look trims.
    #[test]
    fn trims_once_enough_was_freed_since_the_last_trim() {
        let cases: &[(&str, &[(usize, bool)])] = &[
            (
                "little free: never",
                &[(MIB, false), (4 * MIB, false), (8 * MIB, false)],
            ),
            ("a burst freed", &[(MIB, false), (40 * MIB, true)]),
            (
                "what stays free after a trim does not trim again",
                &[(40 * MIB, true), (40 * MIB, false), (45 * MIB, false)],
            ),
            (
                "free memory reused, then freed again",
                &[(40 * MIB, true), (10 * MIB, false), (30 * MIB, true)],
            ),
            (
                "freed a little at a time adds up",
                &[
                    (0, false),
                    (5 * MIB, false),
                    (7 * MIB, false),
                    (9 * MIB, true),
                ],
            ),
        ];
        for (case, looks) in cases {
            let mut releases = Releases::default();
            for (i, (free, trims)) in looks.iter().enumerate() {
                assert_eq!(
                    releases.due(*free),
                    *trims,
                    "{case}: look {i} with {free} bytes free"
                );
            }
        }
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
            assert!(
                free_bytes().unwrap() > 32 << 20,
                "the freed blocks are free"
            );
            trim();
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
