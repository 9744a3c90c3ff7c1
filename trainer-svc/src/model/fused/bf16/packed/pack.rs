//! The B operand of a [`super::Block`], packed: for each block of 32 columns, for
//! each chunk of 32 K rows, the tile of the block's first 16 columns, then the tile of its last
//! 16. A tile is 16 rows of 16 pairs: row `p`, column `c` holds B's (2p, c) and (2p + 1, c),
//! the even K row in the low half (the order `tdpbf16ps` reads). Each pair is one `u32`, so
//! packing moves words, never single values. Padding (K or N past the matrix) is zero.

use rayon::prelude::*;

use super::bits;
use super::tiles::{B_TILE_PAIRS, BLOCK, TILE, TILE_K};
use crate::model::fused::threads;

/// B = `x^T` for `x` `[n, k]` f32 (rounded to bf16): K is `x`'s features, N its rows.
pub fn rows_transposed(x: &[f32], n: usize, k: usize) -> Vec<u32> {
    packed(k, n, |tile, k0, t0| {
        for c in 0..TILE.min(n.saturating_sub(t0)) {
            let row = &x[(t0 + c) * k..(t0 + c + 1) * k];
            let mut chunk = [0f32; TILE_K];
            let have = TILE_K.min(k - k0);
            chunk[..have].copy_from_slice(&row[k0..k0 + have]);
            for p in 0..TILE {
                tile[p * TILE + c] = pair(bits(chunk[2 * p]), bits(chunk[2 * p + 1]));
            }
        }
    })
}

/// B = `W` for a bf16 `W` `[out, k]` (as bits): K is `W`'s rows, N its columns.
pub fn rows(w: &[u16], out: usize, k: usize) -> Vec<u32> {
    let zeros = [0u16; TILE];
    packed(out, k, |tile, o0, i0| {
        let cols = TILE.min(k.saturating_sub(i0));
        let row = |o: usize| (o < out).then(|| &w[o * k + i0..o * k + i0 + cols]);
        for p in 0..TILE {
            let Some(even) = row(o0 + 2 * p) else { break };
            let odd = row(o0 + 2 * p + 1).unwrap_or(&zeros[..cols]);
            let dst = &mut tile[p * TILE..p * TILE + cols];
            for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
                *d = pair(e, o);
            }
        }
    })
}

/// A zeroed B of `k_len` K rows and `n_len` columns (each padded to [`BLOCK`]) in the layout
/// above, every tile handed to `fill` (in parallel) with its first K row and first column.
fn packed(k_len: usize, n_len: usize, fill: impl Fn(&mut [u32], usize, usize) + Sync) -> Vec<u32> {
    let (kp, np) = (k_len.next_multiple_of(BLOCK), n_len.next_multiple_of(BLOCK));
    let mut packed = vec![0u32; kp * np / 2];
    threads::for_each(
        packed.par_chunks_mut(kp * BLOCK / 2).enumerate(),
        1,
        |(nb, block)| {
            for (i, tile) in block.chunks_mut(B_TILE_PAIRS).enumerate() {
                fill(tile, (i / 2) * TILE_K, nb * BLOCK + (i % 2) * TILE);
            }
        },
    );
    packed
}

fn pair(even: u16, odd: u16) -> u32 {
    u32::from(even) | (u32::from(odd) << 16)
}
