//! Products against a frozen bf16 matrix in bf16 arithmetic, as a GPU runs a bf16 base: both
//! operands rounded to bf16, products summed in f32. The adapters, their gradients and the
//! optimizer's state stay f32 (`lora_linear`).
//!
//! Two kernels, chosen at run time ([`kernel`]):
//! - AMX tiles ([`amx`]) where the CPU has AMX-BF16 and Linux grants the tiles;
//! - elsewhere the f32 GEMM (faer) over the same rounded operands: the same products, summed
//!   in another order, so a run's numbers hardly depend on the machine.

pub mod amx;
mod pack;

use std::borrow::Cow;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::gemm;
use amx::{BLOCK, TILE_K, Tiles};

/// K values per pass over the output: a B panel of `K_PANEL` rows stays in the core's L2
/// while every block of the task's rows multiplies it (a 49,152-long K, the output layer's
/// gradient, would otherwise stream B from memory once per block of rows).
const K_PANEL: usize = 256;

/// The kernel bf16 products run on here, for the trainer's startup line.
pub fn kernel() -> &'static str {
    if amx::available() {
        "AMX-BF16 tiles"
    } else {
        "f32 GEMM over bf16-rounded operands (AMX-BF16 absent, or ARF_TRAINER_AMX=off)"
    }
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

fn widened(w: &[bf16]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    w.convert_to_f32_slice(&mut out);
    out
}

/// `bf16(x) W^T` for `x` `[n, k]` and a frozen `W` `[out, k]`: `[n, out]`, f32.
pub fn times_transposed(x: &[f32], n: usize, k: usize, w: &[bf16], out: usize) -> Vec<f32> {
    if !amx::available() {
        let x: Vec<f32> = x.par_iter().map(|&v| rounded(v)).collect();
        return gemm::times_transposed(&x, n, k, &widened(w), out);
    }
    // As y^T = W x^T: W's rows are the A tiles as they lie in memory (no copy of the
    // weight), x is packed once, and each task writes its band of y^T back transposed.
    let (kp, op, np) = (padded(k), padded(out), padded(n));
    let a = padded_rows(w.reinterpret_cast(), out, k, op, kp);
    let b = pack::rows_transposed(x, n, k);
    gemm_transposed(&a, &b, (op, kp, np), out, n)
}

/// A frozen `W` `[out, k]` ready for [`times`]: packed for the tiles, or widened to f32.
pub enum Packed {
    Tiles {
        values: Vec<u32>,
        out: usize,
        k: usize,
    },
    Widened {
        values: Vec<f32>,
        out: usize,
        k: usize,
    },
}

/// Prepares `W` for products `g W` (once per op: the output layer's gradient reuses it for
/// every block of rows).
pub fn pack(w: &[bf16], out: usize, k: usize) -> Packed {
    if !amx::available() {
        return Packed::Widened {
            values: widened(w),
            out,
            k,
        };
    }
    let values = pack::rows(w.reinterpret_cast(), out, k);
    Packed::Tiles { values, out, k }
}

/// `bf16(g) W` for `g` `[n, out]` and a packed `W` `[out, k]`: `[n, k]`, f32.
pub fn times(g: &[f32], n: usize, w: &Packed) -> Vec<f32> {
    let (values, out, k) = match w {
        Packed::Widened { values, out, k } => {
            let g: Vec<f32> = g.par_iter().map(|&v| rounded(v)).collect();
            return gemm::times(&g, n, *out, values, *k);
        }
        Packed::Tiles { values, out, k } => (values, *out, *k),
    };
    let (op, kp, np) = (padded(out), padded(k), padded(n));
    let mut a = vec![0u16; np * op];
    a.par_chunks_mut(op)
        .zip(g.par_chunks(out))
        .for_each(|(dst, src)| {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = bits(v));
        });
    let mut dx = vec![0f32; np * kp];
    gemm(&a, values, np, op, kp, &mut dx);
    if kp == k {
        dx.truncate(n * k);
        return dx;
    }
    dx.chunks(kp)
        .take(n)
        .flat_map(|r| &r[..k])
        .copied()
        .collect()
}

fn padded(v: usize) -> usize {
    v.next_multiple_of(BLOCK)
}

/// `rows x cols` values, zero-padded to `rows_p x cols_p` (borrowed when nothing pads).
fn padded_rows(
    v: &[u16],
    rows: usize,
    cols: usize,
    rows_p: usize,
    cols_p: usize,
) -> Cow<'_, [u16]> {
    if rows == rows_p && cols == cols_p {
        return Cow::Borrowed(v);
    }
    let mut out = vec![0u16; rows_p * cols_p];
    for (dst, src) in out.chunks_mut(cols_p).zip(v.chunks(cols)) {
        dst[..cols].copy_from_slice(src);
    }
    Cow::Owned(out)
}

/// `C = A B`: A `[mp, kp]` bf16 rows, B packed (`pack`), C `[mp, np]` f32; every
/// dimension a multiple of [`BLOCK`]. Each task takes a band of C's rows ([`band_product`]).
fn gemm(a: &[u16], b: &[u32], mp: usize, kp: usize, np: usize, c: &mut [f32]) {
    assert!(a.len() >= mp * kp && 2 * b.len() >= kp * np && c.len() >= mp * np);
    let per_task = rows_per_task(mp);
    c.par_chunks_mut(per_task * np)
        .enumerate()
        .for_each(|(task, band)| band_product(a, b, kp, np, task * per_task, band));
}

/// `y = (A B)^T`, `[n, m]` f32, for the `m` rows of A and the `n` columns of B that are not
/// padding: each task multiplies a band of A's rows into a buffer of its own and writes the
/// band's columns of `y` (no `[mp, np]` intermediate, no pass over it).
fn gemm_transposed(
    a: &[u16],
    b: &[u32],
    (mp, kp, np): (usize, usize, usize),
    m: usize,
    n: usize,
) -> Vec<f32> {
    assert!(a.len() >= mp * kp && 2 * b.len() >= kp * np && m <= mp && n <= np);
    let mut y = vec![0f32; n * m];
    let y_ptr = SharedOut(y.as_mut_ptr());
    let per_task = rows_per_task(mp);
    (0..mp.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let first_row = task * per_task;
        let rows = per_task.min(mp - first_row);
        let mut band = vec![0f32; rows * np];
        band_product(a, b, kp, np, first_row, &mut band);
        let cols = rows.min(m.saturating_sub(first_row));
        // 32 x 32 at a time: 32 lines of the band and 32 row pieces of y in cache.
        for t0 in (0..n).step_by(BLOCK) {
            for r0 in (0..cols).step_by(BLOCK) {
                let r1 = (r0 + BLOCK).min(cols);
                for t in t0..(t0 + BLOCK).min(n) {
                    // SAFETY: row `t` of `y` has `m` values; this task alone writes its
                    // columns `first_row..first_row + cols` (bands do not overlap), and `y`
                    // outlives the tasks.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(y_ptr.at(t * m + first_row + r0), r1 - r0)
                    };
                    for (r, d) in (r0..r1).zip(dst) {
                        *d = band[r * np + t];
                    }
                }
            }
        }
    });
    y
}

/// A pointer into the output that tasks writing disjoint parts of it share.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes only its own elements (see `gemm_transposed`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Rows of C per task: a multiple of [`BLOCK`], two tasks per thread.
fn rows_per_task(mp: usize) -> usize {
    (mp / BLOCK)
        .div_ceil(rayon::current_num_threads() * 2)
        .max(1)
        * BLOCK
}

/// Rows `first_row..` of `C = A B` into `band` (`[rows, np]`): for each K panel, every block of
/// the band's rows by the panel.
fn band_product(a: &[u16], b: &[u32], kp: usize, np: usize, first_row: usize, band: &mut [f32]) {
    let tiles = Tiles::load();
    for k0 in (0..kp).step_by(K_PANEL) {
        let chunks = (kp - k0).min(K_PANEL) / TILE_K;
        for (bi, c_rows) in band.chunks_mut(BLOCK * np).enumerate() {
            let a_block = &a[(first_row + bi * BLOCK) * kp + k0..];
            assert!(
                a_block.len() >= (BLOCK - 1) * kp + chunks * TILE_K && c_rows.len() == BLOCK * np
            );
            for nb in 0..np / BLOCK {
                let b_panel = &b[(nb * kp * BLOCK + k0 * BLOCK) / 2..];
                // SAFETY: A's 32 rows of the panel's `chunks * 32` values and C's 32 x 32 block
                // lie inside their slices (asserted above); B's `chunks` tile pairs lie inside
                // B (`gemm` asserted its length, every dimension a multiple of 32).
                unsafe {
                    tiles.block(
                        a_block.as_ptr(),
                        kp,
                        b_panel.as_ptr(),
                        chunks,
                        c_rows[nb * BLOCK..].as_mut_ptr(),
                        np,
                        k0 > 0,
                    );
                }
            }
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
