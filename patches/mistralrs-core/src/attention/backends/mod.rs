pub(super) mod cpu;
mod cpu_decode;
mod flash;
mod naive;
mod sinks;

pub(crate) use cpu_decode::decode_sdpa_cpu;
pub(crate) use flash::flash_attn;
pub(crate) use naive::{grouped_sdpa_cpu, maybe_synchronize, naive_sdpa};
pub(crate) use sinks::sinks_attn;
