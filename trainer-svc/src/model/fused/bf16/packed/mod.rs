//! bf16 products over a packed B operand, one 32 x 32 block of C per kernel call, on the
//! fastest block kernel this CPU has ([`kernel`]):
//! - AMX tiles (`tiles`) where the CPU has AMX-BF16 and Linux grants the tile state (Intel
//!   Sapphire Rapids and later);
//! - AVX512-BF16 dot products of pairs (`dot_pairs`) where it has AVX512-BF16 (AMD Zen 4 and
//!   later, Intel Cooper Lake): the same packing, since `vdpbf16ps` reads B's pairs as
//!   `tdpbf16ps` does.

mod dot_pairs;
mod pack;
mod tiles;

use std::borrow::Cow;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::bits;
use crate::model::fused::threads;
use tiles::{BLOCK, TILE_K, Tiles};

/// K values per pass over the output: a B panel of `K_PANEL` rows stays in the core's L2
/// while every block of the task's rows multiplies it (a 49,152-long K, the output layer's
/// gradient, would otherwise stream B from memory once per block of rows).
const K_PANEL: usize = 256;

/// The block kernels: `C = A B` (or `C += A B`) for one 32 x 32 [`Block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Tiles,
    DotPairs,
}

/// The block kernel of this process (chosen once), or `None`: the caller's portable path.
/// `ARF_TRAINER_AMX=off` rules the tiles out, `ARF_TRAINER_AVX512_BF16=off` the dot products
/// (the other paths on a machine that has them: their tests, a way around a CPU or kernel bug).
pub fn kernel() -> Option<Kernel> {
    static KERNEL: OnceLock<Option<Kernel>> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        let off = |var: &str| std::env::var(var).is_ok_and(|v| v == "off");
        if !off("ARF_TRAINER_AMX") && tiles::usable() {
            Some(Kernel::Tiles)
        } else if !off("ARF_TRAINER_AVX512_BF16") && dot_pairs::usable() {
            Some(Kernel::DotPairs)
        } else {
            None
        }
    })
}

/// `y = bf16(x) W^T` for `x` `[n, k]` and a frozen bf16 `W` `[out, k]` (its bits), into `y`
/// (`[n, out]`, overwritten).
pub fn times_transposed(x: &[f32], n: usize, k: usize, w: &[u16], out: usize, y: &mut [f32]) {
    // As y^T = W x^T: W's rows are the A tiles as they lie in memory (no copy of the
    // weight), x is packed once, and each task writes its band of y^T back transposed.
    let (kp, op, np) = (padded(k), padded(out), padded(n));
    let a = padded_rows(w, out, k, op, kp);
    let b = pack::rows_transposed(x, n, k);
    gemm_transposed(&a, &b, (op, kp, np), (out, n), y);
}

/// A frozen bf16 `W` `[out, k]` packed for [`times`].
pub struct PackedRows {
    values: Vec<u32>,
    out: usize,
    k: usize,
}

/// Packs `W` (its bits) for products `g W`.
pub fn pack(w: &[u16], out: usize, k: usize) -> PackedRows {
    PackedRows {
        values: pack::rows(w, out, k),
        out,
        k,
    }
}

/// `bf16(g) W` for `g` `[n, out]` and a packed `W`: `[n, k]`, f32.
pub fn times(g: &[f32], n: usize, w: &PackedRows) -> Vec<f32> {
    let (values, out, k) = (&w.values, w.out, w.k);
    let (op, kp, np) = (padded(out), padded(k), padded(n));
    let mut a = vec![0u16; np * op];
    threads::for_each(
        a.par_chunks_mut(op).zip(g.par_chunks(out)),
        crate::model::fused::rows_per_task(op),
        |(dst, src)| dst.iter_mut().zip(src).for_each(|(d, &v)| *d = bits(v)),
    );
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
    threads::for_each(
        c.par_chunks_mut(per_task * np).enumerate(),
        1,
        |(task, band)| band_product(a, b, kp, np, task * per_task, band),
    );
}

/// `y = (A B)^T`, `[n, m]` f32, for the `m` rows of A and the `n` columns of B that are not
/// padding: each task multiplies a band of A's rows into a buffer of its own and writes the
/// band's columns of `y` (no `[mp, np]` intermediate, no pass over it).
fn gemm_transposed(
    a: &[u16],
    b: &[u32],
    (mp, kp, np): (usize, usize, usize),
    (m, n): (usize, usize),
    y: &mut [f32],
) {
    assert!(a.len() >= mp * kp && 2 * b.len() >= kp * np && m <= mp && n <= np);
    assert_eq!(y.len(), n * m, "y is [n, m]");
    let y = SharedOut(y.as_mut_ptr());
    let per_task = rows_per_task(mp);
    threads::for_each((0..mp.div_ceil(per_task)).into_par_iter(), 1, |task| {
        let first_row = task * per_task;
        let mut band = vec![0f32; per_task.min(mp - first_row) * np];
        band_product(a, b, kp, np, first_row, &mut band);
        // SAFETY: this task alone writes columns `first_row..first_row + rows` of `y` (bands
        // do not overlap), inside its `[n, m]` (asserted above), and `y` outlives the tasks.
        unsafe { write_transposed(&band, np, y, (m, n), first_row) };
    });
}

/// Writes `band` (`[rows, np]`, rows `first_row..` of `y^T`) into the columns of `y` (`[n, m]`)
/// it holds that are not padding, 32 x 32 at a time (32 lines of the band and 32 row pieces of
/// `y` in cache).
///
/// # Safety
/// `y` points at `n * m` values, and no one else writes those columns meanwhile.
unsafe fn write_transposed(
    band: &[f32],
    np: usize,
    y: SharedOut,
    (m, n): (usize, usize),
    first_row: usize,
) {
    let cols = (band.len() / np).min(m.saturating_sub(first_row));
    for t0 in (0..n).step_by(BLOCK) {
        for r0 in (0..cols).step_by(BLOCK) {
            let r1 = (r0 + BLOCK).min(cols);
            for t in t0..(t0 + BLOCK).min(n) {
                // SAFETY: inside row `t` of `y` (r1 <= m - first_row), per the caller.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(y.at(t * m + first_row + r0), r1 - r0)
                };
                for (r, d) in (r0..r1).zip(dst) {
                    *d = band[r * np + t];
                }
            }
        }
    }
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

/// Rows `first_row..` of `C = A B` into `band` (`[rows, np]`) on this process's kernel.
fn band_product(a: &[u16], b: &[u32], kp: usize, np: usize, first_row: usize, band: &mut [f32]) {
    match kernel() {
        Some(Kernel::Tiles) => band_product_on(&Tiles::load(), a, b, kp, np, first_row, band),
        Some(Kernel::DotPairs) => {
            band_product_on(&dot_pairs::DotPairs, a, b, kp, np, first_row, band)
        }
        None => unreachable!("bf16 products packed without a block kernel"),
    }
}

/// One 32 x 32 block of `C = A B`, as a block kernel reads it:
/// - `a`: 32 rows of `k_chunks * 32` bf16 values, rows `a_stride` values apart;
/// - `b`: `k_chunks` pairs of packed tiles (`pack`), the pair's first for columns 0-15, its
///   second for 16-31;
/// - `c`: 32 rows of 32 f32, rows `c_stride` values apart: overwritten, or added to when
///   `accumulate`.
#[derive(Clone, Copy)]
struct Block {
    a: *const u16,
    a_stride: usize,
    b: *const u32,
    k_chunks: usize,
    c: *mut f32,
    c_stride: usize,
    accumulate: bool,
}

/// A kernel that computes one [`Block`].
trait BlockKernel {
    /// # Safety
    /// Every address the block names lies inside its allocation.
    unsafe fn block(&self, block: Block);
}

/// For each K panel, every block of the band's rows by the panel.
#[allow(clippy::too_many_arguments)] // band_product's operands and the kernel
fn band_product_on(
    kernel: &impl BlockKernel,
    a: &[u16],
    b: &[u32],
    kp: usize,
    np: usize,
    first_row: usize,
    band: &mut [f32],
) {
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
                    kernel.block(Block {
                        a: a_block.as_ptr(),
                        a_stride: kp,
                        b: b_panel.as_ptr(),
                        k_chunks: chunks,
                        c: c_rows[nb * BLOCK..].as_mut_ptr(),
                        c_stride: np,
                        accumulate: k0 > 0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each block kernel this CPU has, whichever the process chose: `C = A B` against f64 sums
    /// of the same bf16 values, with K over one panel (the accumulating passes) and padding.
    #[test]
    fn each_usable_kernel_matches_f64_sums() {
        let (m, out, k) = (64, 300, 96); // A [m, out] times W [out, k]: K = 300, two panels
        let value = |i: usize, seed: usize| {
            bits((((i * 2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        };
        let (op, kp) = (padded(out), padded(k));
        let mut a = vec![0u16; m * op];
        for r in 0..m {
            for o in 0..out {
                a[r * op + o] = value(r * out + o, 1);
            }
        }
        let w: Vec<u16> = (0..out * k).map(|i| value(i, 2)).collect();
        let b = pack::rows(&w, out, k);
        let wide = |v: u16| f64::from(f32::from_bits(u32::from(v) << 16));
        let mut kernels: Vec<(&str, Box<dyn Fn(&mut [f32])>)> = vec![];
        if dot_pairs::usable() {
            kernels.push((
                "AVX512-BF16",
                Box::new(|c| band_product_on(&dot_pairs::DotPairs, &a, &b, op, kp, 0, c)),
            ));
        }
        if kernel() == Some(Kernel::Tiles) {
            kernels.push((
                "AMX",
                Box::new(|c| band_product_on(&Tiles::load(), &a, &b, op, kp, 0, c)),
            ));
        }
        eprintln!(
            "block kernels here: {:?}",
            kernels.iter().map(|k| k.0).collect::<Vec<_>>()
        );
        for (name, run) in &kernels {
            let mut c = vec![f32::NAN; m * kp];
            run(&mut c);
            for r in 0..m {
                for j in 0..k {
                    let want: f64 = (0..out)
                        .map(|o| wide(a[r * op + o]) * wide(w[o * k + j]))
                        .sum();
                    let got = c[r * kp + j];
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{name}: C[{r}, {j}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}
