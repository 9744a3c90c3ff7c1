pub(super) mod cpu;
// ARF patch: the CPU attention by rows (cpu_rows.rs) and by blocks of rows (cpu_blocks.rs),
// grouped-query attention in f32 (naive.rs), patches/README.md.
mod cpu_blocks;
mod cpu_rows;
mod flash;
mod naive;
mod sinks;

pub(crate) use cpu_rows::sdpa_by_rows_cpu;
pub(crate) use flash::flash_attn;
pub(crate) use naive::{grouped_sdpa_cpu, maybe_synchronize, naive_sdpa};
pub(crate) use sinks::sinks_attn;
