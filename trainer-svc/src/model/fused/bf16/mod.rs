//! Products against a frozen bf16 matrix in bf16 arithmetic, as a GPU runs a bf16 base: both
//! operands rounded to bf16, products summed in f32. The adapters, their gradients and the
//! optimizer's state stay f32 (`lora_linear`).
//!
//! The kernel is chosen at run time ([`kernel`]):
//! - where the CPU multiplies bf16 itself (AMX-BF16 tiles, or AVX512-BF16 dot products; x86-64
//!   only), a GEMM over packed bf16 pairs (`packed`);
//! - elsewhere the f32 GEMM (faer) over the same rounded operands: the same products, summed
//!   in another order, so a run's numbers hardly depend on the machine.

#[cfg(target_arch = "x86_64")]
mod packed;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{CHUNK, gemm, threads};

/// Whether bf16 products run on the CPU's own bf16 instructions in this process.
pub fn native() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        packed::kernel().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernel bf16 products run on here, for the trainer's startup line.
pub fn kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    match packed::kernel() {
        Some(packed::Kernel::Tiles) => return "AMX-BF16 tiles",
        Some(packed::Kernel::DotPairs) => return "AVX512-BF16 dot products (vdpbf16ps)",
        None => {}
    }
    "f32 GEMM over bf16-rounded operands (neither AMX-BF16 nor AVX512-BF16, or both turned off: \
     ARF_TRAINER_AMX=off, ARF_TRAINER_AVX512_BF16=off)"
}

/// `v` rounded to the nearest bf16 (ties to even), as its bits: branch-free, so the packing
/// loops vectorize (`half`'s conversion checks for NaN first). Finite values and infinities
/// round as `half` does; a NaN stays a NaN unless its payload fills the mantissa.
fn bits(v: f32) -> u16 {
    let b = v.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn rounded(v: f32) -> f32 {
    f32::from_bits(u32::from(bits(v)) << 16)
}

/// Every value of `x` rounded to bf16 (and back to f32), in parallel.
fn all_rounded(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    threads::for_each(
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)),
        1,
        |(out, x)| out.iter_mut().zip(x).for_each(|(o, &v)| *o = rounded(v)),
    );
    out
}

fn widened(w: &[bf16]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    w.convert_to_f32_slice(&mut out);
    out
}

/// `bf16(x) W^T` for `x` `[n, k]` and a frozen `W` `[out, k]`: `[n, out]`, f32.
pub fn times_transposed(x: &[f32], n: usize, k: usize, w: &[bf16], out: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out];
    times_transposed_into(x, n, k, w, out, &mut y);
    y
}

/// [`times_transposed`] into `y` (`[n, out]`, overwritten): the output layer's blocks reuse one
/// buffer.
pub fn times_transposed_into(x: &[f32], n: usize, k: usize, w: &[bf16], out: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if native() {
        return packed::times_transposed(x, n, k, w.reinterpret_cast(), out, y);
    }
    let x = all_rounded(x);
    let w = widened(w);
    gemm::matmul(
        gemm::rows_mut(y, n, out, out),
        gemm::rows(&x, n, k, k),
        gemm::rows(&w, out, k, k).transpose(),
        1.0,
        false,
        gemm::Threads::All,
    );
}

/// A frozen `W` `[out, k]` ready for [`times`]: packed in bf16 pairs, or widened to f32.
pub enum Packed {
    #[cfg(target_arch = "x86_64")]
    Pairs(packed::PackedRows),
    Widened {
        values: Vec<f32>,
        out: usize,
        k: usize,
    },
}

/// Prepares `W` for products `g W` (once per op: the output layer's gradient reuses it for
/// every block of rows).
pub fn pack(w: &[bf16], out: usize, k: usize) -> Packed {
    #[cfg(target_arch = "x86_64")]
    if native() {
        return Packed::Pairs(packed::pack(w.reinterpret_cast(), out, k));
    }
    Packed::Widened {
        values: widened(w),
        out,
        k,
    }
}

/// `bf16(g) W` for `g` `[n, out]` and a packed `W` `[out, k]`: `[n, k]`, f32.
pub fn times(g: &[f32], n: usize, w: &Packed) -> Vec<f32> {
    match w {
        #[cfg(target_arch = "x86_64")]
        Packed::Pairs(pairs) => packed::times(g, n, pairs),
        Packed::Widened { values, out, k } => {
            let g = all_rounded(g);
            gemm::times(&g, n, *out, values, *k)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The products of the rounded operands in f64: what either kernel should give.
    fn reference(x: &[f32], w: &[bf16], n: usize, k: usize, out: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * out];
        for t in 0..n {
            for o in 0..out {
                y[t * out + o] = (0..k)
                    .map(|i| f64::from(rounded(x[t * k + i])) * f64::from(w[o * k + i].to_f32()))
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Shapes with and without padding (the tiny models' 64-wide layers, a 37-token batch),
    /// and a K longer than one panel.
    #[test]
    fn rounding_matches_half() {
        for v in [
            0.0,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // halfway between two bf16 values: ties to even
            1.0 + 3.0 / 512.0,
            -3.1e-39,
            3.4e38,
            f32::INFINITY,
            -7.77,
        ] {
            assert_eq!(bits(v), bf16::from_f32(v).to_bits(), "{v}");
        }
        for i in 0..100_000u32 {
            let v = f32::from_bits(i.wrapping_mul(2_654_435_761) & 0xff7f_ffff);
            assert_eq!(bits(v), bf16::from_f32(v).to_bits(), "{v:e}");
        }
    }

    #[test]
    fn both_products_match_the_rounded_operands_in_f64() {
        eprintln!("bf16 kernel: {}", kernel());
        for (n, k, out) in [(37, 64, 48), (64, 96, 32), (33, 576, 600)] {
            let x = values(n * k, 1);
            let w: Vec<bf16> = values(out * k, 2).into_iter().map(bf16::from_f32).collect();
            let y = times_transposed(&x, n, k, &w, out);
            assert_close("x W^T", &y, &reference(&x, &w, n, k, out));
            // g W = g (W^T)^T: the reference with W^T as the weight.
            let g = values(n * out, 3);
            let mut wt = vec![bf16::ZERO; out * k];
            for o in 0..out {
                for i in 0..k {
                    wt[i * out + o] = w[o * k + i];
                }
            }
            let dx = times(&g, n, &pack(&w, out, k));
            assert_close("g W", &dx, &reference(&g, &wt, n, out, k));
        }
    }
}
