//! ARF patch: one decode batch over sequences of different lengths.
//!
//! Upstream's batch KV cache is one tensor per layer with one current length, so its scheduler
//! only batches sequences of equal length; concurrent requests (whose prompts never have the
//! same length) decoded one bucket at a time, and the batch changed at nearly every step, each
//! change copying every cache. Here the batch holds each sequence's cache right-aligned: row `i`
//! keeps its `len_i` positions at the end of the longest row's, after `max_len - len_i` unused
//! positions (`SingleCache::left_pad`) that the decode mask hides (`CausalMasker`). Each step
//! appends every row's new position at the same index, as upstream. On the way out, each
//! sequence's cache is a view of its row without the padding (no copy).

use candle_core::{Result, Tensor};

use super::{KvCache, NormalCache, SingleCache};

/// The batch cache for `rows` (each a sequence's per-layer caches), or `None` when a layer is
/// not a plain KV cache (sliding window, shared, not yet filled): upstream's path handles those.
///
/// `limits`, when every sequence has one, is each row's most positions (its prompt and all it
/// may generate): the batch is sized for them and never grows (growing holds the old and the new
/// tensor at once). Each row's layer is taken out of its sequence as soon as it is copied, so
/// the tensors behind it (a view of the previous batch, or a new prompt's own cache) are freed
/// layer by layer instead of living beside the whole new batch until the step ends;
/// `clone_out_cache`, after the step, gives every sequence its row back (and a failed step ends
/// its sequences).
pub(super) fn batch_in(
    rows: &mut [&mut Vec<Option<KvCache>>],
    limits: Option<&[usize]>,
) -> Option<Result<Vec<KvCache>>> {
    let layers = rows.first()?.len();
    let plain = |c: &Option<KvCache>| matches!(c, Some(KvCache::Normal { k, v }) if k.all_data.is_some() && v.all_data.is_some());
    if !rows
        .iter()
        .all(|row| row.len() == layers && row.iter().all(plain))
    {
        return None;
    }
    let mut out = Vec::with_capacity(layers);
    for layer in 0..layers {
        let taken: Vec<(SingleCache, SingleCache)> = rows
            .iter_mut()
            .filter_map(|row| match row[layer].take() {
                Some(KvCache::Normal { k, v }) => Some((k, v)),
                _ => None, // not reached: every layer was checked above
            })
            .collect();
        let ks: Vec<&SingleCache> = taken.iter().map(|(k, _)| k).collect();
        let vs: Vec<&SingleCache> = taken.iter().map(|(_, v)| v).collect();
        let built = batch_layer(&ks, limits).and_then(|k| Ok((k, batch_layer(&vs, limits)?)));
        match built {
            Ok((k, v)) => out.push(KvCache::Normal { k, v }),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(out))
}

/// One layer's K (or V) for the whole batch, rows right-aligned.
fn batch_layer(rows: &[&SingleCache], limits: Option<&[usize]>) -> Result<SingleCache> {
    let first = rows[0];
    let max_len = rows.iter().map(|c| c.current_seq_len).max().unwrap_or(0);
    // Every row appends at the same index, so the batch needs the longest row's positions plus
    // the most any row still appends; without limits, room for the next position in upstream's
    // growth steps.
    let to_come = limits.map(|limits| {
        rows.iter()
            .zip(limits)
            .map(|(row, &limit)| limit.saturating_sub(row.current_seq_len))
            .max()
            .unwrap_or(0)
            .max(1)
    });
    let capacity = match to_come {
        Some(to_come) => max_len + to_come,
        None => (max_len + 1)
            .div_ceil(NormalCache::CACHE_GROW_SIZE)
            .saturating_mul(NormalCache::CACHE_GROW_SIZE),
    }
    .min(first.max_seq_len)
    .max(max_len);
    let template = first.all_data.as_ref().expect("checked by batch_in");
    let mut dims = template.dims().to_vec();
    let heads = dims[1];
    dims[0] = rows.len();
    dims[first.dim] = capacity;
    let batch = Tensor::zeros(dims, template.dtype(), template.device())?;
    let mut pads = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let pad = max_len - row.current_seq_len;
        pads.push(pad);
        if row.current_seq_len == 0 {
            continue;
        }
        let data = row.all_data.as_ref().expect("checked by batch_in");
        // Head by head: (1, 1, len, head_dim) slices are contiguous whatever the row's capacity,
        // which `slice_set` needs on both sides.
        for head in 0..heads {
            let src = data
                .narrow(1, head, 1)?
                .narrow(row.dim, 0, row.current_seq_len)?;
            let dst = batch.narrow(0, i, 1)?.narrow(1, head, 1)?;
            dst.slice_set(&src, row.dim, pad)?;
        }
    }
    Ok(SingleCache {
        all_data: Some(batch),
        dim: first.dim,
        current_seq_len: max_len,
        capacity_seq_len: capacity,
        max_seq_len: first.max_seq_len,
        left_pad: pads.iter().any(|&p| p > 0).then(|| pads.into()),
    })
}

/// Row `row` of a ragged batch layer whose rows have `pads` unused leading positions, as its
/// sequence's own cache: a view without the padding.
pub(super) fn row_out(batch: &SingleCache, pads: &[usize], row: usize) -> Result<SingleCache> {
    let pad = pads[row];
    let data = batch
        .all_data
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg("kv-cache: a ragged batch without data".into()))?;
    let data = data.narrow(0, row, 1)?;
    let capacity = data.dim(batch.dim)?;
    Ok(SingleCache {
        all_data: Some(data.narrow(batch.dim, pad, capacity - pad)?),
        dim: batch.dim,
        current_seq_len: batch.current_seq_len - pad,
        capacity_seq_len: batch.capacity_seq_len - pad,
        max_seq_len: batch.max_seq_len,
        left_pad: None,
    })
}
