//! The editor's CPU kernel candidates, side by side (see Cargo.toml for the commands).
//!
//! `q4_1`: one decode step's Q4_1 weights (66 MB of SmolLM2-shaped rows by default, more than
//! any cache) times one Q8_1 activation row, rows split over rayon tasks as candle's `matmul`
//! splits them; then the same kernels on 1 MB that stays in L2 (compute alone). Prints GB/s of
//! weights read and each kernel's result (the two-accumulator kernels agree bit for bit).
//!
//! `prompt-tiles`: one thread's f32 GEMM of a prompt's rows by a tile of dequantized weights
//! (candle-core's `matmul_dequantized`), gemm 0.19 against faer.
//!
//! `attention`: see `attention.rs`.

mod attention;

use std::arch::x86_64::*;
use std::time::Instant;

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_1, GgmlType};
use half::f16;
use rayon::prelude::*;

/// The layouts of candle's blocks (`#[repr(C)]`, fields private to candle).
#[repr(C)]
struct Q41 {
    d: f16,
    m: f16,
    qs: [u8; 16],
}
#[repr(C)]
struct Q81 {
    d: f16,
    s: f16,
    qs: [i8; 32],
}

#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    unsafe {
        let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    }
}

#[inline(always)]
unsafe fn nibbles(x: &Q41) -> __m256i {
    unsafe {
        let t = _mm_loadu_si128(x.qs.as_ptr() as *const __m128i);
        let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4));
        _mm256_and_si256(_mm256_set1_epi8(0xF), both)
    }
}

#[inline(always)]
unsafe fn dot_maddubs(bx: __m256i, by: __m256i) -> __m256i {
    unsafe { _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(bx, by)) }
}

#[inline(always)]
unsafe fn dot_vnni(bx: __m256i, by: __m256i) -> __m256i {
    unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), bx, by) }
}

#[inline(always)]
unsafe fn dot_avx_vnni(bx: __m256i, by: __m256i) -> __m256i {
    unsafe { _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), bx, by) }
}

/// The kernel before the patch: one accumulator, the scales converted one f16 at a time.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_accumulator(xs: &[Q41], ys: &[Q81]) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut offsets = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            offsets += x.m.to_f32() * y.s.to_f32();
            let d = _mm256_set1_ps(x.d.to_f32() * y.d.to_f32());
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let q = _mm256_cvtepi32_ps(dot_maddubs(nibbles(x), by));
            acc = _mm256_fmadd_ps(d, q, acc);
        }
        hsum(acc) + offsets
    }
}

/// The patched kernel's structure with another integer dot product, or with a prefetch of the
/// weights `$prefetch` bytes ahead (rows are contiguous: past a row's end is the next row).
macro_rules! two_accumulators {
    ($name:ident, $features:literal, $dot:ident) => {
        two_accumulators!($name, $features, $dot, 0);
    };
    ($name:ident, $features:literal, $dot:ident, $prefetch:expr) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(xs: &[Q41], ys: &[Q81]) -> f32 {
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 2];
                let mut offsets = [_mm_setzero_ps(); 2];
                for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                    if $prefetch > 0 {
                        let ahead = (x as *const Q41 as *const i8).wrapping_add($prefetch);
                        _mm_prefetch::<_MM_HINT_T0>(ahead);
                    }
                    let xs = (x as *const Q41 as *const i32).read_unaligned();
                    let ys = (y as *const Q81 as *const i32).read_unaligned();
                    let scales = _mm_mul_ps(
                        _mm_cvtph_ps(_mm_cvtsi32_si128(xs)),
                        _mm_cvtph_ps(_mm_cvtsi32_si128(ys)),
                    );
                    let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                    let q = _mm256_cvtepi32_ps($dot(nibbles(x), by));
                    acc[i & 1] = _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), q, acc[i & 1]);
                    offsets[i & 1] = _mm_add_ps(offsets[i & 1], scales);
                }
                let offsets = _mm_add_ps(offsets[0], offsets[1]);
                hsum(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(_mm_movehdup_ps(offsets))
            }
        }
    };
}
two_accumulators!(
    two_accumulators_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    dot_vnni
);
two_accumulators!(
    two_accumulators_avx_vnni,
    "avx2,fma,f16c,avxvnni",
    dot_avx_vnni
);
two_accumulators!(two_acc_no_prefetch, "avx2,fma,f16c", dot_maddubs, 0);
two_accumulators!(two_acc_prefetch_256, "avx2,fma,f16c", dot_maddubs, 256);
two_accumulators!(two_acc_prefetch_512, "avx2,fma,f16c", dot_maddubs, 512);
two_accumulators!(two_acc_prefetch_1024, "avx2,fma,f16c", dot_maddubs, 1024);
two_accumulators!(two_acc_prefetch_2048, "avx2,fma,f16c", dot_maddubs, 2048);

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].parse().expect(name))
        .unwrap_or(default)
}

/// Best of `reps` timings.
fn best_seconds(reps: usize, mut f: impl FnMut() -> f32) -> (f64, f32) {
    let mut value = f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        value = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, value)
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

fn q4_1(args: &[String]) {
    let k = flag(args, "--k", 576);
    let megabytes = flag(args, "--megabytes", 66);
    let threads = flag(args, "--threads", 1);
    let blocks = k / 32;
    let rows = megabytes * 1_000_000 / (blocks * 20);
    let mut w = vec![BlockQ4_1::zeros(); rows * blocks];
    BlockQ4_1::from_float(&values(rows * k, 1), &mut w);
    let mut x = vec![BlockQ8_1::zeros(); blocks];
    BlockQ8_1::from_float(&values(k, 2), &mut x);
    // SAFETY: the same #[repr(C)] layouts (20 and 36 bytes).
    let (w2, x2) = unsafe {
        (
            std::slice::from_raw_parts(w.as_ptr() as *const Q41, w.len()),
            std::slice::from_raw_parts(x.as_ptr() as *const Q81, x.len()),
        )
    };
    let vnni = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
    let avx_vnni = is_x86_feature_detected!("avxvnni");
    type Kernel<'a> = Box<dyn Fn(usize) -> f32 + Sync + 'a>;
    let row = move |r: usize| r * blocks..(r + 1) * blocks;
    type Raw = unsafe fn(&[Q41], &[Q81]) -> f32;
    let mut raw: Vec<(&str, Raw)> = vec![
        ("one accumulator (before)", one_accumulator),
        ("two acc., no prefetch", two_acc_no_prefetch),
        ("two acc., prefetch 256 B", two_acc_prefetch_256),
        ("two acc., prefetch 512 B", two_acc_prefetch_512),
        ("two acc., prefetch 1024 B", two_acc_prefetch_1024),
        ("two acc., prefetch 2048 B", two_acc_prefetch_2048),
    ];
    if vnni {
        raw.push(("two acc., AVX512-VNNI", two_accumulators_vnni));
    }
    if avx_vnni {
        raw.push(("two acc., AVX-VNNI", two_accumulators_avx_vnni));
    }
    let mut kernels: Vec<(&str, Kernel)> = vec![(
        "candle-core as patched",
        Box::new(|r| BlockQ4_1::vec_dot(k, &w[row(r)], &x)),
    )];
    for (name, kernel) in raw {
        // SAFETY: each kernel's features were checked above or are the build's baseline.
        kernels.push((name, Box::new(move |r| unsafe { kernel(&w2[row(r)], x2) })));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let bytes = w.len() * 20;
    println!(
        "Q4_1 x Q8_1: k {k}, {rows} rows, {:.1} MB of weights, {threads} thread(s)",
        bytes as f64 / 1e6
    );
    let mut out = vec![0f32; rows];
    for (name, kernel) in &kernels {
        let (s, v) = best_seconds(10, || {
            pool.install(|| {
                // As candle's matmul splits one activation row's outputs.
                out.par_iter_mut()
                    .enumerate()
                    .with_min_len(128)
                    .with_max_len(512)
                    .for_each(|(r, o)| *o = kernel(r))
            });
            out.iter().sum()
        });
        println!(
            "  from memory  {name:<26} {:>6.2} GB/s  (sum {v})",
            bytes as f64 / s / 1e9
        );
    }
    let cached = (1_000_000 / (blocks * 20)).min(rows);
    for (name, kernel) in &kernels {
        let (s, v) = best_seconds(200, || (0..cached).map(|r| kernel(r)).sum());
        println!(
            "  in L2 (1 MB) {name:<26} {:>6.2} GB/s  (sum {v})",
            (cached * blocks * 20) as f64 / s / 1e9
        );
    }
}

fn prompt_tiles() {
    println!("f32 GEMM of prompt rows x a dequantized weight tile, one thread, GFLOP/s");
    for (m, width, k) in [
        (209, 128, 576),
        (209, 128, 1536),
        (1022, 128, 576),
        (1022, 96, 1536),
        (1672, 128, 576),
    ] {
        // lhs column-major (m x k), the tile row-major (width x k), as matmul_dequantized has them.
        let (a, b) = (values(m * k, 3), values(width * k, 4));
        let mut c = vec![0f32; m * width];
        let flops = 2.0 * (m * width * k) as f64;
        let (gemm_s, _) = best_seconds(30, || {
            unsafe {
                gemm::gemm(
                    m,
                    width,
                    k,
                    c.as_mut_ptr(),
                    1,
                    width as isize,
                    false,
                    a.as_ptr(),
                    m as isize,
                    1,
                    b.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
            c[0]
        });
        let (faer_s, _) = best_seconds(30, || {
            // SAFETY: the views stay inside a, b and c.
            let (dst, lhs, rhs) = unsafe {
                (
                    faer::MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, width, width as isize, 1),
                    faer::MatRef::from_raw_parts(a.as_ptr(), m, k, 1, m as isize),
                    faer::MatRef::from_raw_parts(b.as_ptr(), k, width, 1, k as isize),
                )
            };
            faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0, faer::Par::Seq);
            c[0]
        });
        println!(
            "  {m} x {width} x {k}: gemm 0.19 {:.1}, faer {:.1} ({:.2}x)",
            flops / gemm_s / 1e9,
            flops / faer_s / 1e9,
            gemm_s / faer_s
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("q4_1") => q4_1(&args),
        Some("prompt-tiles") => prompt_tiles(),
        Some("attention") => attention::attention(&args),
        _ => eprintln!(
            "usage: kernel-candidates q4_1 [--threads N] [--megabytes M] [--k K] | prompt-tiles | attention [--context N] [--threads N]"
        ),
    }
}
