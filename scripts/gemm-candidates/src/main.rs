//! GFLOP/s of `C = A B^T` (the trainer's `x W^T`) on each candidate, 1 and 2 threads; a second
//! argument `inference` measures an f32 model's serving shapes instead.

use std::time::Instant;

/// oneDNN's row-major sgemm.
type Sgemm = unsafe extern "C" fn(
    u8,
    u8,
    i64,
    i64,
    i64,
    f32,
    *const f32,
    i64,
    *const f32,
    i64,
    f32,
    *mut f32,
    i64,
) -> i32;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "gemm".into());
    let dnnl = (which == "dnnl").then(|| unsafe {
        libloading::Library::new("libdnnl.so.2").expect("libdnnl.so.2 (apt install libdnnl-dev)")
    });
    let sgemm: Option<libloading::Symbol<Sgemm>> = dnnl
        .as_ref()
        .map(|lib| unsafe { lib.get(b"dnnl_sgemm").expect("dnnl_sgemm") });
    // (m, n, k): SmolLM2's MLP up and down, LM head forward and backward, attention; Llama-8B's MLP.
    let training = [
        (384, 1536, 576),
        (384, 576, 1536),
        (384, 49152, 576),
        (384, 576, 49152),
        (384, 576, 576),
        (512, 14336, 4096),
    ];
    // `inference`: an f32 SmolLM2 served by mistral.rs (Evaluate's students): a 450-token
    // prompt's projections, then 16 and 1 sequences decoding (the 16-row LM head included).
    let inference = [
        (450, 576, 576),
        (450, 192, 576),
        (450, 1536, 576),
        (450, 576, 1536),
        (16, 1536, 576),
        (16, 576, 1536),
        (16, 49152, 576),
        (1, 1536, 576),
        (1, 576, 1536),
    ];
    let shapes: &[(usize, usize, usize)] = match std::env::args().nth(2).as_deref() {
        Some("inference") => &inference,
        _ => &training,
    };
    for threads in [1usize, 2] {
        for &(m, n, k) in shapes {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
            let b: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
            let mut c = vec![0f32; m * n];
            let mut run = |c: &mut [f32]| match which.as_str() {
                "gemm" => unsafe {
                    let par = if threads == 1 {
                        gemm::Parallelism::None
                    } else {
                        gemm::Parallelism::Rayon(threads)
                    };
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    )
                },
                "faer" => {
                    let par = if threads == 1 {
                        faer::Par::Seq
                    } else {
                        faer::Par::rayon(threads)
                    };
                    faer::linalg::matmul::matmul(
                        faer::MatMut::from_row_major_slice_mut(c, m, n),
                        faer::Accum::Replace,
                        faer::MatRef::from_row_major_slice(&a, m, k),
                        faer::MatRef::from_row_major_slice(&b, n, k).transpose(),
                        1.0f32,
                        par,
                    );
                }
                _ => unsafe {
                    // Threads: OMP_NUM_THREADS, read when the library starts.
                    let status = sgemm.as_ref().expect("dnnl")(
                        b'N',
                        b'T',
                        m as i64,
                        n as i64,
                        k as i64,
                        1.0,
                        a.as_ptr(),
                        k as i64,
                        b.as_ptr(),
                        k as i64,
                        0.0,
                        c.as_mut_ptr(),
                        n as i64,
                    );
                    assert_eq!(status, 0);
                },
            };
            run(&mut c);
            let flop = 2.0 * (m * n * k) as f64;
            let reps = ((20e9 / flop) as usize).clamp(1, 50);
            let t = Instant::now();
            for _ in 0..reps {
                run(&mut c);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{which} threads {threads} m{m} n{n} k{k}: {:.1} GFLOP/s",
                flop / s / 1e9
            );
        }
    }
}
