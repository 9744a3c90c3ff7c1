//! The machine's peaks, measured where a bench runs: the denominators of its "share of peak"
//! (the machines differ from day to day). The f32 FMA peak: independent accumulators hide the
//! FMA latency, so the loop runs at the units' throughput. The memory read bandwidth: each
//! thread sums its part of a buffer far larger than the caches with 256-bit loads.

use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_set1_ps(0.0), |s, v| _mm256_add_ps(s, *v));
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

/// GFLOP/s of one thread's FMA loop, and the instruction set it used.
fn one_thread(duration: Duration) -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        let (lanes, name, run): (u64, _, fn(u64) -> f32) =
            if std::arch::is_x86_feature_detected!("avx512f") {
                (16, "AVX-512", |n| unsafe { fma_loop_avx512(n) })
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                (8, "AVX2", |n| unsafe { fma_loop_avx2(n) })
            } else {
                return (f64::NAN, "none");
            };
        let iters = 1_000_000u64;
        let (mut done, start) = (0u64, Instant::now());
        while start.elapsed() < duration {
            std::hint::black_box(run(std::hint::black_box(iters)));
            done += iters;
        }
        let flop = (done * 12 * lanes * 2) as f64;
        (flop / start.elapsed().as_secs_f64() / 1e9, name)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = duration;
        (f64::NAN, "none")
    }
}

/// The FMA peak of `threads` threads together (GFLOP/s), and the instruction set.
pub fn fma_peak(threads: usize) -> (f64, &'static str) {
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(|| one_thread(Duration::from_millis(400))))
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("peak thread"))
        .collect();
    (results.iter().map(|r| r.0).sum(), results[0].1)
}

/// Bytes per thread for the bandwidth loop: beyond any last-level cache seen here (32 MB).
const READ_BYTES_PER_THREAD: usize = 128 << 20;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn read_avx2(data: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let blocks = data.len() / 16;
    for i in 0..blocks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `(i * 16 + j * 4) + 4 <= blocks * 16 <= data.len()`.
            let v = unsafe { _mm256_loadu_si256(data.as_ptr().add(i * 16 + j * 4).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut out = [0u64; 4];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_si256(), |s, v| _mm256_add_epi64(s, *v));
    // SAFETY: `out` holds 32 bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), sum) };
    out.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// One thread's sum of `data`, with the widest loads this CPU has (plain `u64` adds elsewhere).
fn read_all(data: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { read_avx2(data) };
    }
    data.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

/// The memory read bandwidth of `threads` threads together (GB/s): each reads its own 128 MiB
/// over and over for ~0.4 s. The buffers count in the process's peak RSS (`VmHWM`) until
/// [`crate::process::reset_peak_rss`].
pub fn read_bandwidth(threads: usize) -> f64 {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Written first, so every page is really there (not the shared zero page).
                let data: Vec<u64> = (0..READ_BYTES_PER_THREAD / 8)
                    .map(|i| (i as u64) ^ t as u64)
                    .collect();
                barrier.wait();
                let (mut bytes, start) = (0usize, Instant::now());
                while start.elapsed() < Duration::from_millis(400) {
                    std::hint::black_box(read_all(std::hint::black_box(&data)));
                    bytes += data.len() * 8;
                }
                bytes as f64 / start.elapsed().as_secs_f64() / 1e9
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bandwidth thread"))
        .sum()
}

/// The CPU's model name and the SIMD features the kernels choose from, as one line.
pub fn cpu_line() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{name}; {}", crate::cpu::kernel_summary())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_peaks_are_measured_not_assumed() {
        let (flops, isa) = super::fma_peak(1);
        if isa != "none" {
            assert!(flops > 1.0, "{flops} GFLOP/s on {isa}");
        }
        let bandwidth = super::read_bandwidth(1);
        assert!(bandwidth > 0.1 && bandwidth < 10_000.0, "{bandwidth} GB/s");
        assert!(!super::cpu_line().is_empty());
    }
}
