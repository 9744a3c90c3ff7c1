//! Row-major f32 matrix products on faer, whose kernels are chosen at run time (AVX-512 on
//! this machine's Zen 5; candle's `gemm` build has AVX2 kernels only). Measured on the
//! trainer's shapes with 2 threads: faer 147-198 GFLOP/s, candle's gemm 91-154, oneDNN 153-196
//! (README, "Trainer speed").

use faer::{Accum, MatMut, MatRef, Par};

/// `rows x cols` values of a row-major matrix inside `data`, rows `stride` apart.
pub fn rows(data: &[f32], rows: usize, cols: usize, stride: usize) -> MatRef<'_, f32> {
    MatRef::from_row_major_slice_with_stride(data, rows, cols, stride)
}

/// The mutable counterpart of [`rows`].
pub fn rows_mut(data: &mut [f32], rows: usize, cols: usize, stride: usize) -> MatMut<'_, f32> {
    // Not `MatMut::from_row_major_slice_with_stride_mut`: faer 0.23.2 builds that view with
    // the two strides swapped (column-major), so products wrote past the slice.
    assert!(
        cols <= stride || rows <= 1,
        "row stride {stride} under {cols} columns"
    );
    assert!(
        rows == 0 || cols == 0 || (rows - 1) * stride + cols <= data.len(),
        "{rows} x {cols} rows {stride} apart do not fit in {} values",
        data.len()
    );
    // SAFETY: every element (i, j), at i * stride + j, lies inside `data` (checked above), and
    // the view borrows `data` mutably for its lifetime; rows do not overlap (stride >= cols).
    unsafe { MatMut::from_raw_parts_mut(data.as_mut_ptr(), rows, cols, stride as isize, 1) }
}

/// Threads for one product: every rayon worker, or this one thread (inside a parallel task).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

/// `dst = alpha * a b`, or `dst += alpha * a b` when `accumulate`.
pub fn matmul(
    dst: MatMut<'_, f32>,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    accumulate: bool,
    threads: Threads,
) {
    let par = match threads {
        Threads::All => Par::rayon(0),
        Threads::One => Par::Seq,
    };
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, accum, a, b, alpha, par);
}

/// `x W^T` for `x` `[n, k]` and `W` `[out, k]` (a frozen projection's forward), `[n, out]`.
pub fn times_transposed(x: &[f32], n: usize, k: usize, w: &[f32], out: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out];
    matmul(
        rows_mut(&mut y, n, out, out),
        rows(x, n, k, k),
        rows(w, out, k, k).transpose(),
        1.0,
        false,
        Threads::All,
    );
    y
}

/// `g W` for `g` `[n, out]` and `W` `[out, k]` (a frozen projection's input gradient), `[n, k]`.
pub fn times(g: &[f32], n: usize, out: usize, w: &[f32], k: usize) -> Vec<f32> {
    let mut dx = vec![0f32; n * k];
    matmul(
        rows_mut(&mut dx, n, k, k),
        rows(g, n, out, out),
        rows(w, out, k, k),
        1.0,
        false,
        Threads::All,
    );
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_loops() {
        // a: 2x3 inside rows of 4; b^T: 2x3 (so b is 3x2); c: 2x2 accumulated onto ones.
        let a = [1., 2., 3., 9., 4., 5., 6., 9.];
        let bt = [1., 0., 2., 0., 1., 1.];
        let mut c = vec![1f32; 4];
        matmul(
            rows_mut(&mut c, 2, 2, 2),
            rows(&a, 2, 3, 4),
            rows(&bt, 2, 3, 3).transpose(),
            2.0,
            true,
            Threads::One,
        );
        // a b = [[1+6, 2+3], [4+12, 5+6]] = [[7, 5], [16, 11]]
        assert_eq!(c, vec![15., 11., 33., 23.]);
    }
}
