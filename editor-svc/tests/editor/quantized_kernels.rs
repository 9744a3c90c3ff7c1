//! The CPU kernels of the patched candle-core (patches/README.md) that GGUF models run on:
//! the AVX2 Q4_1 and Q8_0 dot products (even and odd blocks in accumulators of their own) agree
//! with the scalar ones, the blocked matmul (a few activation rows at once) gives exactly what
//! one row at a time gives, and a prompt's matmul (many rows) is f32 arithmetic on the
//! dequantized weights.

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ8_0, BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// Deterministic values in [-1, 1) without a random-number crate.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
#[allow(
    clippy::assertions_on_constants,
    reason = "it checks the build's configuration"
)]
fn the_build_has_the_simd_kernels() {
    // .cargo/config.toml sets x86-64-v3: without AVX2, candle compiles no quantized SIMD kernel.
    if cfg!(target_arch = "x86_64") {
        assert!(
            cfg!(target_feature = "avx2"),
            "built without AVX2: .cargo/config.toml's rustflags were not applied"
        );
    }
}

#[test]
fn q4_1_dot_product_matches_the_scalar_reference() {
    // Multiples of 64: the scalar reference wants an even number of blocks.
    for (k, seed) in [(64, 1), (576, 2), (1536, 3)] {
        let (w, x) = (values(k, seed), values(k, seed + 100));
        let mut wq = vec![BlockQ4_1::zeros(); k / 32];
        let mut xq = vec![BlockQ8_1::zeros(); k / 32];
        BlockQ4_1::from_float(&w, &mut wq);
        BlockQ8_1::from_float(&x, &mut xq);
        let (fast, scalar) = (
            BlockQ4_1::vec_dot(k, &wq, &xq),
            BlockQ4_1::vec_dot_unopt(k, &wq, &xq),
        );
        let scale = assert_simd_matches_scalar(k, &w, &x, fast, scalar);
        // And both are the dot product, up to Q4_1 and Q8_1 rounding.
        let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!(
            (fast - exact).abs() <= 0.05 * scale,
            "k={k}: {fast} vs exact {exact}"
        );
    }
}

#[test]
fn q8_0_dot_product_matches_the_scalar_reference() {
    // Odd block counts too: the last block falls to one accumulator alone.
    for (k, seed) in [(32, 4), (96, 5), (576, 6)] {
        let (w, x) = (values(k, seed), values(k, seed + 100));
        let mut wq = vec![BlockQ8_0::zeros(); k / 32];
        let mut xq = vec![BlockQ8_0::zeros(); k / 32];
        BlockQ8_0::from_float(&w, &mut wq);
        BlockQ8_0::from_float(&x, &mut xq);
        let (fast, scalar) = (
            BlockQ8_0::vec_dot(k, &wq, &xq),
            BlockQ8_0::vec_dot_unopt(k, &wq, &xq),
        );
        assert_simd_matches_scalar(k, &w, &x, fast, scalar);
    }
}

/// The SIMD and scalar dot products of `w` and `x` agree to rounding (relative to the sum of
/// the products' magnitudes, which it returns).
fn assert_simd_matches_scalar(k: usize, w: &[f32], x: &[f32], fast: f32, scalar: f32) -> f32 {
    let scale: f32 = w.iter().zip(x).map(|(a, b)| (a * b).abs()).sum();
    assert!(
        (fast - scalar).abs() <= 1e-5 * scale.max(1.0),
        "k={k}: simd {fast} vs scalar {scalar}"
    );
    scale
}

#[test]
fn a_few_rows_at_once_equal_one_row_at_a_time() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // Sequences decoding together: fewer rows than the dequantized-gemm threshold (16) take
    // the blocked int8 path, four rows per kernel call and the rest one by one (9 = 4 + 4 + 1).
    // n = 75 is not a multiple of the 16 weight rows a task takes.
    let (m, k, n) = (9, 128, 75);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q4_0, GgmlDType::Q8_0] {
        let w = Tensor::from_vec(values(n * k, 7), (n, k), &dev)?;
        let mm = QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?;
        let xs = Tensor::from_vec(values(m * k, 8), (m, k), &dev)?;
        let together = mm.forward(&xs)?.to_vec2::<f32>()?;
        for (row, got) in together.iter().enumerate() {
            let alone = mm.forward(&xs.narrow(0, row, 1)?)?.to_vec2::<f32>()?;
            assert_eq!(got, &alone[0], "{dtype:?}: row {row} differs");
        }
        // Against the dequantized weights in f32: only the activations' Q8 rounding differs
        // (~0.013 standard deviation here; a wrong element order would be off by ~1).
        assert_close(
            &together,
            &dequantized_reference(&w, &xs, dtype)?,
            0.1,
            dtype,
        );
    }
    Ok(())
}

#[test]
fn a_prompt_runs_as_f32_gemm_on_the_dequantized_weights() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // 37 activation rows (a prompt); n = 75 leaves a partial weight tile; k = 1536 as in the
    // MLP of SmolLM2. The activations are not quantized on this path, so it agrees with f32
    // arithmetic on the dequantized weights up to summation order.
    for (m, k, n) in [(37, 128, 75), (16, 1536usize, 200)] {
        for dtype in [
            GgmlDType::Q4_1,
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
        ] {
            let k = if dtype == GgmlDType::Q4K {
                256 * k.div_ceil(256)
            } else {
                k
            };
            let w = Tensor::from_vec(values(n * k, 9), (n, k), &dev)?;
            let mm = QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?;
            let xs = Tensor::from_vec(values(m * k, 10), (m, k), &dev)?;
            let got = mm.forward(&xs)?.to_vec2::<f32>()?;
            assert_close(&got, &dequantized_reference(&w, &xs, dtype)?, 1e-3, dtype);
        }
    }
    Ok(())
}

/// `xs` times the dequantized weights, in f32.
fn dequantized_reference(
    w: &Tensor,
    xs: &Tensor,
    dtype: GgmlDType,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let w = QTensor::quantize(w, dtype)?.dequantize(&Device::Cpu)?;
    xs.matmul(&w.t()?)?.to_vec2::<f32>()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tolerance: f32, dtype: GgmlDType) {
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!(
            (got - want).abs() < tolerance,
            "{dtype:?}: {got} vs {want} (dequantized f32)"
        );
    }
}
