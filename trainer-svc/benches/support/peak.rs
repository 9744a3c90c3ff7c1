//! The machine's f32 FMA peak, measured: the denominator of "share of peak". Independent
//! accumulators hide the FMA latency, so the loop runs at the units' throughput.

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
