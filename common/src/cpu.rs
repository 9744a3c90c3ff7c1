//! Which CPU kernels this process runs, said once at startup: the machines this project runs on
//! differ from one day to the next (AMD Zen 5 with full- or half-rate AVX-512, Intel Xeon with
//! AVX-512, VNNI and AMX), and a figure read at 3 a.m. means little without the path behind it.
//!
//! Two families, chosen differently:
//! - the quantized dot products of a GGUF model (the patched candle-core) are compiled for the
//!   build's baseline, x86-64-v3 (AVX2, FMA, F16C; `.cargo/config.toml`);
//! - the f32 GEMMs (a prompt's dequantized tiles, every trainer matmul) run on faer, which picks
//!   AVX-512 or AVX2 at run time from CPUID (`private-gemm-x86`, when `avx512f` is there).

/// One line naming the kernels in use and the CPU's SIMD features that matter to them.
pub fn kernel_summary() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let quantized = if cfg!(target_feature = "avx2") {
            "AVX2 (the build's x86-64-v3 baseline)"
        } else {
            "scalar (built without AVX2)"
        };
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let gemm = if avx512 {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "AVX2"
        } else {
            "portable"
        };
        let features: Vec<&str> = [
            ("avx512f", avx512),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let also = if features.is_empty() {
            "none of avx512f, avx512vnni, avx512bf16, avxvnni".to_string()
        } else {
            features.join(", ")
        };
        format!(
            "quantized dot products: {quantized}; f32 GEMM (faer): {gemm}, chosen at run time; \
             CPU also has: {also}"
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!(
            "{}: candle's and faer's kernels for this architecture",
            std::env::consts::ARCH
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_summary_names_what_this_cpu_runs() {
        let summary = super::kernel_summary();
        assert!(
            summary.contains("quantized dot products: AVX2"),
            "{summary}"
        );
        let gemm = if std::arch::is_x86_feature_detected!("avx512f") {
            "f32 GEMM (faer): AVX-512"
        } else {
            "f32 GEMM (faer): AVX2"
        };
        assert!(summary.contains(gemm), "{summary}");
    }
}
