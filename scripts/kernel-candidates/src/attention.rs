//! `attention`: one decode step's row attention over a SmolLM2-shaped cache (30 layers, 9 query
//! heads on 3 K/V heads of 64, `--context` positions), and a causal prompt of `--context` rows
//! on one layer. `current`: `cpu_rows.rs` as patched, each (layer, head, position) row one rayon
//! task (a 32-lane dot per key, libm `exp`, one value row added per key). Candidates:
//! `blocked`, four keys per pass and a polynomial `exp` (slower: 0.6-0.8x); `grouped` (decode
//! only), the three query heads that share a K/V head in one task, so that each cached key and
//! value is read once per step instead of three times. Prints milliseconds per step, GB/s of
//! K/V rows read, and each candidate's largest difference from `current`.

use rayon::prelude::*;

mod blocked;

use super::{best_seconds, flag, values};

const LAYERS: usize = 30;
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const D: usize = 64;

/// The row kernel as `cpu_rows.rs` has it.
mod current {
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
        scores.clear();
        scores.extend((0..kv_len).map(|j| match mask(j) {
            f32::NEG_INFINITY => f32::NEG_INFINITY,
            m => dot(query, key(j)) * scale + m,
        }));
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return;
        }
        let mut sum = 0f32;
        for (j, score) in scores.iter().enumerate() {
            if *score != f32::NEG_INFINITY {
                let p = (*score - max).exp();
                sum += p;
                for (o, &x) in out.iter_mut().zip(value(j)) {
                    *o = p.mul_add(x, *o);
                }
            }
        }
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 32];
        let (a32, a_rest) = a.split_at(a.len() / 32 * 32);
        let (b32, b_rest) = b.split_at(a32.len());
        for (x, y) in a32.chunks_exact(32).zip(b32.chunks_exact(32)) {
            for i in 0..32 {
                acc[i] = x[i].mul_add(y[i], acc[i]);
            }
        }
        let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + tail
    }
}

/// Rows `(layer, head, position)` against a cache of `layers` x `KV_HEADS` x `context` x `D`;
/// `causal`: position `p` sees keys `0..=p`.
fn step<const PATCHED: bool>(
    q: &[f32],
    cache: (&[f32], &[f32]),
    layers: usize,
    positions: usize,
    context: usize,
    causal: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; layers * HEADS * positions * D];
    let scale = 1.0 / (D as f32).sqrt();
    out.par_chunks_mut(D)
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, out)| {
            let (layer, head, pos) = (
                row / (HEADS * positions),
                row / positions % HEADS,
                row % positions,
            );
            let base = (layer * KV_HEADS + head / (HEADS / KV_HEADS)) * context * D;
            let key = |j: usize| &cache.0[base + j * D..base + (j + 1) * D];
            let value = |j: usize| &cache.1[base + j * D..base + (j + 1) * D];
            let mask = |j: usize| {
                if causal && j > pos {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            };
            let query = &q[row * D..(row + 1) * D];
            if PATCHED {
                blocked::attend_row(query, key, value, mask, context, scale, scores, out);
            } else {
                current::attend_row(query, key, value, mask, context, scale, scores, out);
            }
        });
    out
}

/// A decode step (one position), the `GROUP` query heads of each K/V head in one task.
fn grouped_step(q: &[f32], cache: (&[f32], &[f32]), context: usize) -> Vec<f32> {
    const GROUP: usize = HEADS / KV_HEADS;
    let mut out = vec![0f32; LAYERS * HEADS * D];
    let scale = 1.0 / (D as f32).sqrt();
    out.par_chunks_mut(GROUP * D).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (task, out)| {
            let base = task * context * D;
            let queries = &q[task * GROUP * D..(task + 1) * GROUP * D];
            scores.clear();
            scores.resize(GROUP * context, 0.0);
            for j in 0..context {
                let key = &cache.0[base + j * D..base + (j + 1) * D];
                for g in 0..GROUP {
                    scores[g * context + j] =
                        current::dot(&queries[g * D..(g + 1) * D], key) * scale;
                }
            }
            let mut sums = [0f32; GROUP];
            for (g, row) in scores.chunks_mut(context).enumerate() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for p in row.iter_mut() {
                    *p = (*p - max).exp();
                    sums[g] += *p;
                }
            }
            for j in 0..context {
                let value = &cache.1[base + j * D..base + (j + 1) * D];
                for (g, out) in out.chunks_mut(D).enumerate() {
                    let p = scores[g * context + j];
                    for (o, &x) in out.iter_mut().zip(value) {
                        *o = p.mul_add(x, *o);
                    }
                }
            }
            for (g, out) in out.chunks_mut(D).enumerate() {
                out.iter_mut().for_each(|o| *o /= sums[g]);
            }
        },
    );
    out
}

pub fn attention(args: &[String]) {
    let context = flag(args, "--context", 1022);
    let threads = flag(args, "--threads", 2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let mut worst_exp = 0f64;
    let mut x = 0f32;
    while x > -87.0 {
        let want = (x as f64).exp();
        let got = blocked::exp_nonpositive(x) as f64;
        worst_exp = worst_exp.max((got - want).abs() / want);
        x -= 0.0007;
    }
    println!("blocked's exp: largest relative error {worst_exp:.2e} over [-87, 0]");
    let cache = (
        values(LAYERS * KV_HEADS * context * D, 5),
        values(LAYERS * KV_HEADS * context * D, 6),
    );
    let cases: [(&str, usize, usize, bool); 2] = [
        ("decode step, 30 layers", LAYERS, 1, false),
        ("causal prompt, 1 layer", 1, context, true),
    ];
    for (name, layers, positions, causal) in cases {
        let q = values(layers * HEADS * positions * D, 7);
        let cache = (&cache.0[..], &cache.1[..]);
        let current = || step::<false>(&q, cache, layers, positions, context, causal);
        let blocked = || step::<true>(&q, cache, layers, positions, context, causal);
        let reference = current();
        let diff = |o: Vec<f32>| {
            reference
                .iter()
                .zip(&o)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        // K and V rows read: every (row, visible key) pair reads 2 x D floats.
        let visible = if causal {
            positions * (positions + 1) / 2
        } else {
            positions * context
        };
        let bytes = (layers * HEADS * visible * 2 * D * 4) as f64;
        let report = |name: &str, ms: f64, bytes: f64, d: f32| {
            println!(
                "  {name:<8} {ms:8.3} ms  {:6.1} GB/s of K/V rows  largest difference {d:.1e}",
                bytes / ms / 1e6
            )
        };
        println!("{name}, context {context}, {threads} threads:");
        report(
            "current",
            best_seconds(20, || current()[0]).0 * 1e3,
            bytes,
            0.0,
        );
        report(
            "blocked",
            best_seconds(20, || blocked()[0]).0 * 1e3,
            bytes,
            diff(blocked()),
        );
        if !causal {
            let grouped = || grouped_step(&q, cache, context);
            let ms = best_seconds(20, || grouped()[0]).0 * 1e3;
            report(
                "grouped",
                ms,
                bytes / (HEADS / KV_HEADS) as f64,
                diff(grouped()),
            );
        }
    }
}
