//! bf16 products on Intel AMX tiles. Linux hands a process the tile registers only when it
//! asks (`arch_prctl`, once, for the whole process); [`available`] asks, after CPUID says the CPU
//! has AMX-BF16 and AMX-TILE.

mod pack;
mod tiles;

use std::borrow::Cow;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::bits;
use tiles::{BLOCK, TILE_K, Tiles};

/// K values per pass over the output: a B panel of `K_PANEL` rows stays in the core's L2
/// while every block of the task's rows multiplies it (a 49,152-long K, the output layer's
/// gradient, would otherwise stream B from memory once per block of rows).
const K_PANEL: usize = 256;

/// Whether this process may run AMX bf16 tiles (asked once). `ARF_TRAINER_AMX=off` says no:
/// the portable path on an AMX machine (its tests, a way around a kernel bug).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("ARF_TRAINER_AMX").is_ok_and(|v| v == "off");
        !off && cpu_has_amx_bf16() && os_grants_tiles()
    })
}

fn cpu_has_amx_bf16() -> bool {
    // Leaf 7 is read only when the CPU reports it.
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    // EDX bit 22: AMX-BF16, bit 24: AMX-TILE.
    leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0
}

fn os_grants_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it changes only whether this
    // process may use the tile state, which nothing else here touches.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
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
    (m, n): (usize, usize),
    y: &mut [f32],
) {
    assert!(a.len() >= mp * kp && 2 * b.len() >= kp * np && m <= mp && n <= np);
    assert_eq!(y.len(), n * m, "y is [n, m]");
    let y = SharedOut(y.as_mut_ptr());
    let per_task = rows_per_task(mp);
    (0..mp.div_ceil(per_task)).into_par_iter().for_each(|task| {
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
