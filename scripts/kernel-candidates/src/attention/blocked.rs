//! A candidate for `cpu_rows.rs`'s row kernel, tried and not kept (0.6-0.8x of the current one
//! on an AMD EPYC with AVX2, 2026-12-06): keys four at a time, a polynomial `exp`, values added
//! four at a time.
//!
//! Every sum here runs in an order fixed by the row's own visible positions, never by where they
//! sit in the cache: a sequence decoding beside longer ones sits right-aligned behind padding
//! (`kv_cache/ragged.rs`), and must get bit for bit what it gets alone.

// The trainer's vectorizable `exp` and 8-lane sum (its softmaxes use them). This script builds
// for x86-64-v3 (the workspace's .cargo/config.toml), so `mul_add` below is one FMA instruction.
#[allow(dead_code)]
#[path = "../../../../trainer-svc/src/model/fused/exp.rs"]
mod exp;
pub use exp::exp_nonpositive;

/// f32 lanes of one accumulator (one AVX2 register).
const LANES: usize = 8;

/// Keys per pass of [`attend_row`]: four independent accumulator chains in flight, and the
/// output row loaded and stored once per four values instead of once per value.
const KEYS_PER_PASS: usize = 4;

/// `softmax(scale * q k_j + mask_j) v_j` summed over `j < kv_len`, into `out` (zeros on entry;
/// left zero when every position is masked). `mask(j)` is `-inf` where the row may not look:
/// such a position costs no work. `scores` is scratch, reused across rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attend_row<'a>(
    query: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    mask: impl Fn(usize) -> f32,
    kv_len: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let visible = |j: usize| mask(j) != f32::NEG_INFINITY;
    scores.clear();
    scores.resize(kv_len, f32::NEG_INFINITY);
    let mut j = 0;
    while j < kv_len {
        if j + KEYS_PER_PASS <= kv_len && (j..j + KEYS_PER_PASS).all(visible) {
            let dots = dots(query, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
            for (r, dot) in dots.into_iter().enumerate() {
                scores[j + r] = dot * scale + mask(j + r);
            }
            j += KEYS_PER_PASS;
        } else {
            if visible(j) {
                scores[j] = dots(query, [key(j)])[0] * scale + mask(j);
            }
            j += 1;
        }
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    // Weights in place: a masked position's is exactly 0 (and is then skipped below).
    for s in scores.iter_mut() {
        *s = if *s == f32::NEG_INFINITY {
            0.0
        } else {
            exp_nonpositive(*s - max)
        };
    }
    let first = scores.iter().position(|&p| p != 0.0).unwrap_or(0);
    let sum = exp::lane_sum(&scores[first..], |p| p);
    let mut j = first;
    while j < kv_len {
        let p = &scores[j..];
        if j + KEYS_PER_PASS <= kv_len && p[..KEYS_PER_PASS].iter().all(|&p| p != 0.0) {
            let v = [value(j), value(j + 1), value(j + 2), value(j + 3)];
            axpy([p[0], p[1], p[2], p[3]], v, out);
            j += KEYS_PER_PASS;
        } else {
            if p[0] != 0.0 {
                axpy([p[0]], [value(j)], out);
            }
            j += 1;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// `q . k` for each of `N` keys, each in the same order whatever `N` is: 8 lane sums over the
/// head's chunks of 8, a fixed pairwise tree over the lanes, then the tail.
#[inline(always)]
fn dots<const N: usize>(q: &[f32], keys: [&[f32]; N]) -> [f32; N] {
    let d = q.len();
    let keys = keys.map(|k| &k[..d]);
    let whole = d / LANES * LANES;
    let mut acc = [[0f32; LANES]; N];
    for c in (0..whole).step_by(LANES) {
        let qc = &q[c..c + LANES];
        for (acc, k) in acc.iter_mut().zip(&keys) {
            let kc = &k[c..c + LANES];
            for l in 0..LANES {
                acc[l] = qc[l].mul_add(kc[l], acc[l]);
            }
        }
    }
    let mut out = acc.map(|a| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])));
    for i in whole..d {
        for (o, k) in out.iter_mut().zip(&keys) {
            *o = q[i].mul_add(k[i], *o);
        }
    }
    out
}

/// `out += sum_r p[r] * v[r]`, the values added one after another (the same chain of
/// multiply-adds per element as `N` single additions in order).
#[inline(always)]
fn axpy<const N: usize>(p: [f32; N], v: [&[f32]; N], out: &mut [f32]) {
    let v = v.map(|v| &v[..out.len()]);
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = *o;
        for r in 0..N {
            acc = p[r].mul_add(v[r][i], acc);
        }
        *o = acc;
    }
}
