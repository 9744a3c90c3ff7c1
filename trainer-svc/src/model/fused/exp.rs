//! `exp` in plain arithmetic that the compiler vectorizes, for the softmaxes and the SwiGLU gate.
//!
//! `f32::exp` is a call into libm, one element at a time: the softmax over each row's 49,152
//! logits (twice: the sum, then the gradient), attention's probabilities (forward, and again in
//! the backward pass) and the gate's sigmoid. Attention's alone was ~4% of a SmolLM2 training
//! step in the last profile (README, "Trainer speed"). `scripts/kernel-candidates` includes this
//! file to try the same `exp` in the editor's row attention.

/// `e^x` for `x <= 0`: `x = n ln 2 + r`, Cephes' polynomial for `e^r` (within ~2 ulp of libm),
/// times `2^n` built in the exponent bits. Below -87 it returns ~1.6e-38 rather than 0.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it leaves round(x * log2 e) in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let t = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_6e-1,
        5e-1,
    ] {
        p = p.mul_add(r, c);
    }
    let e_r = p.mul_add(r * r, r) + 1.0;
    let exponent = (t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32;
    e_r * f32::from_bits(exponent << 23)
}

/// `1 / (1 + e^-x)`, from `e^-|x|` so that the exponent is never positive.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// `sum_i f(x_i)` in 8 lanes (lane = index mod 8), so that `f` and the adds vectorize.
#[inline(always)]
pub fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += f(c[l]);
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = 0f32;
        while x > -87.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                (got - want).abs() <= want * 2.5e-7,
                "e^{x}: {got} vs {want}"
            );
            x -= 0.000_37;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) > 0.0 && exp_nonpositive(-1e4) < 2e-38);
    }

    #[test]
    fn sigmoid_matches_the_formula_on_both_sides() {
        for x in [-80.0f32, -20.0, -3.5, -1e-3, 0.0, 1e-3, 2.0, 17.0, 90.0] {
            let want = 1.0 / (1.0 + (-x as f64).exp());
            assert!(((sigmoid(x) as f64) - want).abs() <= want * 3e-7, "{x}");
        }
        // Past -87 the exponent is clamped: a tiny positive number, never 0 or NaN.
        assert!(sigmoid(-1e4) > 0.0 && sigmoid(-1e4) < 2e-38);
    }

    #[test]
    fn lane_sum_adds_every_element_once() {
        let xs: Vec<f32> = (1..=19).map(|i| i as f32).collect();
        assert_eq!(lane_sum(&xs, |x| 2.0 * x), 380.0);
        assert_eq!(lane_sum(&[], |x| x), 0.0);
    }
}
