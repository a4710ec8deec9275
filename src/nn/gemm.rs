//! A safe, bounds-checked front to the `gemm` crate (the matrix kernel candle itself uses), so
//! the hand-written forward/backward kernels can multiply strided views of plain `f32` slices
//! without candle's per-op copies and allocations.
//!
//! This is the only module of Retort that contains `unsafe` code: one call into
//! [`gemm::gemm`], preceded by checks that every element the kernel can touch lies inside the
//! slices it was given. See the `SAFETY` comment at the call.

#![allow(unsafe_code)]

/// A read-only matrix view of `rows × cols` elements of `data`, element `(i, j)` at
/// `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major (contiguous rows) view.
    pub(crate) fn rm(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> View<'a> {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// True if every element the view addresses lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|a| (self.cols - 1).checked_mul(self.cs).map(|b| (a, b)))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(l) if l < self.data.len())
            && isize::try_from(self.rs).is_ok()
            && isize::try_from(self.cs).is_ok()
    }
}

/// `dst[m × n] (row-major, contiguous) = (accumulate ? dst : 0) + scale · a[m × k] · b[k × n]`,
/// single-threaded (callers parallelise across samples).
///
/// # Panics
/// If the shapes do not agree or a view reaches outside its slice: both are bugs in the caller
/// (shapes are fixed by the network configuration), never a consequence of input data.
pub(crate) fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, scale: f32, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && dst.len() >= m * n && a.in_bounds() && b.in_bounds(),
        "invariant: matmul shapes agree ({m}x{k} by {}x{n} into {})",
        b.rows,
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|v| *v = 0.0);
        }
        return;
    }
    // SAFETY: `dst` holds at least m*n elements addressed as (i, j) -> i*n + j; `a` and `b`
    // were checked above to address only elements inside their slices (`in_bounds`), with
    // strides that fit in isize. `dst` is a unique borrow, so it cannot alias `a` or `b`.
    // The element type is f32, which gemm supports (it panics only for other types).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0f32; m * n];
        matmul(&mut c, View::rm(&a, m, k), View::rm(&b, k, n), 1.0, false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // a stored transposed: at[k × m]
        let mut at = vec![0f32; m * k];
        for i in 0..m {
            for l in 0..k {
                at[l * m + i] = a[i * k + l];
            }
        }
        let mut c2 = c.clone();
        matmul(
            &mut c2,
            View::rm(&at, k, m).t(),
            View::rm(&b, k, n),
            2.0,
            true,
        );
        for (x, y) in c2.iter().zip(&want) {
            assert!((x - 3.0 * y).abs() < 1e-4);
        }
    }

    #[test]
    #[should_panic(expected = "invariant")]
    fn out_of_bounds_view_is_refused() {
        let a = vec![0f32; 6];
        let mut c = vec![0f32; 9];
        matmul(&mut c, View::rm(&a, 3, 3), View::rm(&a, 3, 3), 1.0, false);
    }
}
