//! The AVX512-BF16 kernel: one 32 x 32 block of a bf16 product as `vdpbf16ps` dot products of
//! pairs. One instruction multiplies 16 columns' (even, odd) K pairs of B by one row's pair of
//! A, broadcast, into 16 f32 sums: 32 multiply-adds, twice an f32 FMA's. B comes in the tiles'
//! packing (`super::pack`), where a tile's row `p` is one vector: 16 columns' pairs `p`.
//! Intrinsics, chosen at run time ([`usable`]); the build itself targets x86-64-v3.

use std::arch::x86_64::*;
use std::mem::transmute;

use super::tiles::{B_TILE_PAIRS, BLOCK, TILE, TILE_K};
use super::{Block, BlockKernel};

/// Rows of C per pass over the block's K: 8 rows x 2 vectors of 16 columns are 16
/// accumulators of the 32 vector registers, beside B's two vectors and A's broadcast.
const ROWS: usize = 8;

/// Whether this CPU has AVX512-BF16 (CPUID; the OS saves the AVX-512 state wherever
/// `is_x86_feature_detected!` reports AVX-512).
pub fn usable() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// The kernel (no state: the registers are plain vector registers).
pub struct DotPairs;

impl BlockKernel for DotPairs {
    unsafe fn block(&self, block: Block) {
        debug_assert!(usable(), "AVX512-BF16 used on a CPU without it");
        for r0 in (0..BLOCK).step_by(ROWS) {
            // SAFETY: rows `r0..r0 + 8` of the caller's 32-row A and C blocks; the CPU has
            // AVX512-BF16 (the kernel is chosen only where `usable`).
            unsafe {
                rows(Block {
                    a: block.a.add(r0 * block.a_stride),
                    c: block.c.add(r0 * block.c_stride),
                    ..block
                })
            }
        }
    }
}

/// The block's first [`ROWS`] rows by its 32 columns.
///
/// # Safety
/// As [`BlockKernel::block`] for 8 rows; the CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows(
    Block {
        a,
        a_stride,
        b,
        k_chunks,
        c,
        c_stride,
        accumulate,
    }: Block,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: C's row `r`, columns 16j..16j + 16 of the block.
                *v = unsafe { _mm512_loadu_ps(c.add(r * c_stride + j * TILE)) };
            }
        }
    }
    for kc in 0..k_chunks {
        // Borrowed once per chunk, so that the loop below indexes arrays of known length: the
        // test build checks every raw pointer step (debug assertions), which in the innermost
        // loop cost two thirds of the kernel's rate.
        // SAFETY: chunk `kc`'s pair of tiles lies inside B, and row `r`'s 32 values of the
        // chunk inside A (the caller's contract); `u32` and `u16` alignment hold.
        let (tile0, tile1, pairs): (
            &[[u32; TILE]; TILE],
            &[[u32; TILE]; TILE],
            [&[u16; TILE_K]; ROWS],
        ) = unsafe {
            let b0 = b.add(kc * 2 * B_TILE_PAIRS).cast::<[[u32; TILE]; TILE]>();
            (
                &*b0,
                &*b0.add(1),
                std::array::from_fn(|r| {
                    &*a.add(r * a_stride + kc * TILE_K).cast::<[u16; TILE_K]>()
                }),
            )
        };
        for p in 0..TILE {
            // SAFETY: 16 pairs of a tile's row; the transmutes reinterpret 512 bits as 32 bf16,
            // the layout `vdpbf16ps` reads.
            let (w0, w1): (__m512bh, __m512bh) = unsafe {
                (
                    transmute::<__m512i, __m512bh>(_mm512_loadu_si512(tile0[p].as_ptr().cast())),
                    transmute::<__m512i, __m512bh>(_mm512_loadu_si512(tile1[p].as_ptr().cast())),
                )
            };
            for (row, values) in acc.iter_mut().zip(&pairs) {
                let pair = u32::from(values[2 * p]) | (u32::from(values[2 * p + 1]) << 16);
                // SAFETY: as above.
                let x: __m512bh = unsafe { transmute(_mm512_set1_epi32(pair as i32)) };
                row[0] = _mm512_dpbf16_ps(row[0], x, w0);
                row[1] = _mm512_dpbf16_ps(row[1], x, w1);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: as the loads above.
            unsafe { _mm512_storeu_ps(c.add(r * c_stride + j * TILE), *v) };
        }
    }
}
