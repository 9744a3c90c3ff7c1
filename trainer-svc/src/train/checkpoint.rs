//! Checkpoints: `checkpoints/step-NNNNNNNN/` under a run's output directory, holding the adapter
//! (PEFT layout), the optimizer's moments and `state.json` (step, data position, RNG seed).
//! Written to a temporary name and renamed, so a crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainError;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

/// Where the run stood when the checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    /// Data position: the epoch and the micro-batch within it that come next.
    pub epoch: u64,
    pub next_batch_in_epoch: u64,
    /// Every random draw is a function of `(seed, purpose, index)`: the seed is the whole state.
    pub seed: u64,
    /// AdamW's step count (bias correction).
    pub optimizer_t: u64,
    pub last_loss: f64,
    /// The hash of the training settings, so a checkpoint of another run is never resumed.
    pub config_fingerprint: String,
}

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

pub fn checkpoint_path(output: &Path, step: u64) -> PathBuf {
    checkpoints_dir(output).join(format!("step-{step:08}"))
}

/// The adapter directory of a checkpoint.
pub fn adapter_dir(checkpoint: &Path) -> PathBuf {
    checkpoint.join("adapter")
}

/// Checkpoints present under `output`, oldest first, as `(step, path)`.
pub fn list(output: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(output)) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_FILE).exists().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Moves a fully written temporary directory into place.
pub fn commit(tmp: &Path, output: &Path, step: u64) -> Result<PathBuf, TrainError> {
    move_into_place(tmp, &checkpoint_path(output, step))
}

/// Writes a job's output directory (`adapter`, `merged`) the way checkpoints are written: into
/// a temporary sibling through `write`, flushed, then renamed over `dest`. A crash leaves the
/// previous directory or the new one, never a truncated file under the final name, and no file
/// of an earlier attempt mixes into the new one.
pub fn publish(
    dest: &Path,
    write: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let name = dest
        .file_name()
        .ok_or_else(|| TrainError::Data(format!("{}: not a directory name", dest.display())))?;
    let tmp = dest.with_file_name(format!(".tmp-{}", name.to_string_lossy()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    move_into_place(&tmp, dest)
}

fn move_into_place(tmp: &Path, dest: &Path) -> Result<PathBuf, TrainError> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| TrainError::io(dest, e))?;
    }
    // Every file and folder on disk before the rename, and the rename itself after it: after a
    // power cut the directory is whole or absent, never a folder of empty files.
    sync_tree(tmp)?;
    std::fs::rename(tmp, dest).map_err(|e| TrainError::io(dest, e))?;
    if let Some(parent) = dest.parent() {
        sync_path(parent)?;
    }
    Ok(dest.to_path_buf())
}

fn sync_path(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

/// Flushes a folder's files, its subfolders' and the folders themselves to disk.
fn sync_tree(dir: &Path) -> Result<(), TrainError> {
    for entry in std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let path = entry.map_err(|e| TrainError::io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_path(&path)?;
        }
    }
    sync_path(dir)
}

pub fn write_state(
    dir: &Path,
    state: &CheckpointState,
    optimizer: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    candle_core::safetensors::save(optimizer, dir.join(OPTIMIZER_FILE))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::Data(e.to_string()))?;
    std::fs::write(dir.join(STATE_FILE), text).map_err(|e| TrainError::io(dir, e))
}

pub fn read_state(
    dir: &Path,
    device: &Device,
) -> Result<(CheckpointState, HashMap<String, Tensor>), TrainError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let state = serde_json::from_str(&text)
        .map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
    let optimizer = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)?;
    Ok((state, optimizer))
}
