//! Facts about this process's memory: for benches that report it next to an alternative's, and
//! for giving back what a model it no longer serves held.

/// This process's peak resident memory so far (Linux `VmHWM`), in MiB; NaN where unknown.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Starts this process's peak RSS (`VmHWM`) again from its resident memory now (Linux 4.0 on,
/// `/proc/self/clear_refs`); false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's resident memory now (Linux `VmRSS`), in MiB; NaN where unknown.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// A memory figure of `/proc/self/status` (given in kB there), in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Returns the memory freed so far to the system (glibc's `malloc_trim`); where it is not
/// glibc, nothing. glibc keeps freed memory in its per-thread arenas, and its mmap threshold
/// grows to the largest block freed (up to 32 MiB), so a model's KV caches and activations end up
/// in the arenas: once an engine is dropped, its threads' arenas hold several GB that the next
/// model's threads do not reuse. Measured (a model served for 16 summaries and their references,
/// unloaded, the next loaded, six times): resident memory 3.3 GB after the first, 10.6 GB after
/// the sixth, 10.2 GB with none loaded. Called after a model is unloaded; costs nothing between.
/// Returns whether any memory was given back.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; any thread may call it.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
