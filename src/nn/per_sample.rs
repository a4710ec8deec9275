//! The per-sample gradient engine: per-sample gradients for DP-SGD on private data (the
//! per-record function of the one mechanism, which clips, sums and noises them), and batch
//! passes (loss and gradients, features) for the synthetic side and training.
//!
//! Samples are split into a few contiguous chunks (about two per thread of the current rayon
//! pool); each chunk runs sample by sample with its own buffers. [`per_sample_grads`] writes
//! each sample's gradient into its own row of the output (the caller bounds memory by the
//! number of samples it passes: [`per_sample_chunk`]); batch passes sum chunk results in chunk
//! order. Results do not depend on scheduling.

use rayon::prelude::*;

use super::kernels::{softmax_soft_xent, softmax_xent};
use super::{check_len, with_model, Error, Model, Net, Result, Upstream};

/// Output of [`Net::loss_and_grads`].
#[derive(Debug, Clone)]
pub struct LossGrads {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// Gradient of the mean loss with respect to the parameters.
    pub param_grads: Vec<f32>,
    /// Gradient of the mean loss with respect to each input value (`n·C·H·W`; empty if not
    /// asked for).
    pub input_grads: Vec<f32>,
}

fn chunks(n: usize) -> Vec<std::ops::Range<usize>> {
    let parts = (rayon::current_num_threads() * 2).clamp(1, n.max(1));
    let size = n.div_ceil(parts).max(1);
    (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
}

fn check_batch(net: &Net, x: &[f32], labels: Option<&[u32]>, classes: usize) -> Result<usize> {
    let d = net.input_len();
    if !x.len().is_multiple_of(d) {
        return Err(Error::Shape {
            what: "images",
            expected: (x.len() / d) * d,
            got: x.len(),
        });
    }
    let n = x.len() / d;
    if let Some(labels) = labels {
        check_len("labels", n, labels.len())?;
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(Error::Label {
                label,
                index,
                classes,
            });
        }
    }
    Ok(n)
}

/// Records per call of [`per_sample_grads`] in the DP-SGD releases: 8 per thread of the
/// current rayon pool, at least 16 and at most 128. The chunk's rows take `chunk × num_params`
/// f32 (20 MB for the ConvNet-3 of width 128 at 16 records). Measured with `retort bench
/// dp-step` on 2 threads (docs/nn.md): 16 records ran as fast as 32 or 64 with a third of the
/// memory of 64, and below glibc's 32 MB mmap threshold the row buffer is reused from the heap
/// rather than faulted in afresh for every release.
pub fn per_sample_chunk() -> usize {
    (8 * rayon::current_num_threads()).clamp(16, 128)
}

/// Per-sample gradients of the cross-entropy loss, **not clipped**: row `i` (length
/// [`Net::num_params`]) is the gradient of sample `i`'s loss with respect to all parameters.
/// Computed in parallel over samples (contiguous chunks, about two per thread), each row
/// written in place, so the result does not depend on scheduling.
///
/// # Privacy
/// Unclipped per-sample gradients of private data are not releasable: this is the per-record
/// function of DP-SGD, meant to run inside [`crate::dp::mechanism::GaussianSum::release`],
/// which clips every row, sums, adds noise and charges the event. Row `i` depends only on
/// sample `i` and the (public) weights.
///
/// # Errors
/// `nn-shape` (images not a multiple of the input size, label count), `nn-label` (a label
/// outside the classes).
pub fn per_sample_grads(net: &Net, x: &[f32], labels: &[u32]) -> Result<Vec<f32>> {
    per_sample_grads_into(net, x, labels, Vec::new())
}

/// [`per_sample_grads`] into `out` (cleared and resized first): pass the mechanism's
/// [`crate::dp::mechanism::Batch::buffer`] to reuse the previous chunk's allocation.
///
/// # Errors
/// As [`per_sample_grads`].
pub fn per_sample_grads_into(
    net: &Net,
    x: &[f32],
    labels: &[u32],
    mut out: Vec<f32>,
) -> Result<Vec<f32>> {
    let n = check_batch(net, x, Some(labels), net.classes())?;
    out.clear();
    out.resize(n * net.num_params(), 0.0);
    with_model!(net, m => per_sample_impl(m, &net.params, x, labels, n, &mut out));
    Ok(out)
}

fn per_sample_impl<M: Model>(
    m: &M,
    p: &[f32],
    x: &[f32],
    labels: &[u32],
    n: usize,
    out: &mut [f32],
) {
    let d = m.in_len();
    let np = m.n_params();
    let ranges = chunks(n);
    let size = ranges.first().map_or(1, |r| r.len()).max(1);
    out.par_chunks_mut(size * np)
        .zip(ranges.into_par_iter())
        .for_each(|(rows, r)| {
            let mut s = m.scratch();
            let mut dl = vec![0f32; m.classes()];
            for (g, i) in rows.chunks_mut(np).zip(r) {
                m.forward(p, &x[i * d..(i + 1) * d], &mut s, true);
                softmax_xent(m.logits(&s), labels[i] as usize, 1.0, &mut dl);
                m.backward(p, &mut s, Upstream::Logits(&dl), Some(g), None);
            }
        });
}

/// What a batch pass computes.
#[derive(Clone, Copy)]
struct Want {
    params: bool,
    inputs: bool,
}

/// What a batch pass fits: hard labels, or soft labels (`n × classes` probabilities).
#[derive(Clone, Copy)]
enum Targets<'a> {
    Hard(&'a [u32]),
    Soft(&'a [f32]),
}

/// Loss sum, parameter-gradient sum (scaled), input gradients (scaled).
fn batch_impl<M: Model>(
    m: &M,
    p: &[f32],
    x: &[f32],
    targets: Targets<'_>,
    n: usize,
    want: Want,
) -> LossGrads {
    let k = m.classes();
    let d = m.in_len();
    let np = m.n_params();
    let scale = 1.0 / n.max(1) as f32;
    let parts: Vec<(f64, Vec<f32>, Vec<f32>)> = chunks(n)
        .into_par_iter()
        .map(|r| {
            let mut s = m.scratch();
            let mut g = vec![0f32; if want.params { np } else { 0 }];
            let mut sum = vec![0f32; if want.params { np } else { 0 }];
            let mut dxs = vec![0f32; if want.inputs { r.len() * d } else { 0 }];
            let mut dl = vec![0f32; m.classes()];
            let mut loss = 0f64;
            for (j, i) in r.enumerate() {
                m.forward(p, &x[i * d..(i + 1) * d], &mut s, true);
                let logits = m.logits(&s);
                loss += match targets {
                    Targets::Hard(labels) => {
                        softmax_xent(logits, labels[i] as usize, scale, &mut dl)
                    }
                    Targets::Soft(t) => {
                        softmax_soft_xent(logits, &t[i * k..(i + 1) * k], scale, &mut dl)
                    }
                } as f64;
                let dx = if want.inputs {
                    Some(&mut dxs[j * d..(j + 1) * d])
                } else {
                    None
                };
                let dp = if want.params { Some(&mut g[..]) } else { None };
                m.backward(p, &mut s, Upstream::Logits(&dl), dp, dx);
                if want.params {
                    sum.iter_mut().zip(&g).for_each(|(a, &b)| *a += b);
                }
            }
            (loss, sum, dxs)
        })
        .collect();
    let mut loss = 0f64;
    let mut param_grads = vec![0f32; if want.params { np } else { 0 }];
    let mut input_grads = Vec::with_capacity(if want.inputs { n * d } else { 0 });
    for (l, s, dx) in parts {
        loss += l;
        param_grads.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
        input_grads.extend(dx);
    }
    LossGrads {
        loss: (loss / n.max(1) as f64) as f32,
        param_grads,
        input_grads,
    }
}

impl Net {
    /// Mean cross-entropy of a batch with its gradients with respect to the parameters and to
    /// the inputs (first order).
    ///
    /// # Privacy
    /// No clipping: for synthetic or public data, or for training on data whose use is
    /// otherwise accounted. Never feed private data through this into a release.
    ///
    /// # Errors
    /// `nn-shape`, `nn-label`.
    pub fn loss_and_grads(&self, x: &[f32], labels: &[u32]) -> Result<LossGrads> {
        self.batch(x, labels, true, true)
    }

    /// [`Net::loss_and_grads`] without the input gradients (cheaper; for training).
    ///
    /// # Errors
    /// `nn-shape`, `nn-label`.
    pub fn loss_and_param_grads(&self, x: &[f32], labels: &[u32]) -> Result<LossGrads> {
        self.batch(x, labels, true, false)
    }

    /// [`Net::loss_and_grads`] with only the input gradients.
    ///
    /// # Errors
    /// `nn-shape`, `nn-label`.
    pub fn loss_and_input_grads(&self, x: &[f32], labels: &[u32]) -> Result<LossGrads> {
        self.batch(x, labels, false, true)
    }

    /// [`Net::loss_and_param_grads`] against soft labels: the mean cross-entropy of the batch
    /// against `targets` (`n × classes` probabilities, row `i` for image `i`; temperature 1)
    /// and its gradient with respect to the parameters.
    ///
    /// # Privacy
    /// As [`Net::loss_and_grads`]: no clipping, for synthetic or public data only.
    ///
    /// # Errors
    /// `nn-shape` (images not a multiple of the input size, targets not `n × classes`).
    pub fn soft_loss_and_param_grads(&self, x: &[f32], targets: &[f32]) -> Result<LossGrads> {
        let n = check_batch(self, x, None, self.classes())?;
        check_len("soft targets", n * self.classes(), targets.len())?;
        let want = Want {
            params: true,
            inputs: false,
        };
        let t = Targets::Soft(targets);
        Ok(with_model!(self, m => batch_impl(m, &self.params, x, t, n, want)))
    }

    fn batch(&self, x: &[f32], labels: &[u32], params: bool, inputs: bool) -> Result<LossGrads> {
        let n = check_batch(self, x, Some(labels), self.classes())?;
        let want = Want { params, inputs };
        let t = Targets::Hard(labels);
        Ok(with_model!(self, m => batch_impl(m, &self.params, x, t, n, want)))
    }

    /// Finite-difference Hessian-vector product for first-order gradient matching:
    /// `[∇ₓL(θ+εv) − ∇ₓL(θ−εv)] / 2ε` with `ε = eps / ‖v‖`, which approximates
    /// `∂/∂x (vᵀ∇_θ L(θ, x))` for the mean loss L of the batch. Three ordinary passes'
    /// worth of work (two input-gradient passes), no second-order autograd.
    ///
    /// Converges only for smooth networks: use [`super::Activation::Gelu`] (with ReLU the
    /// result is not the derivative; see `docs/nn.md`).
    ///
    /// # Errors
    /// `nn-shape` (v's length), `nn-label`, `nn-not-positive` (eps).
    pub fn input_grad_hvp_fd(
        &self,
        x: &[f32],
        labels: &[u32],
        v: &[f32],
        eps: f32,
    ) -> Result<Vec<f32>> {
        check_len("direction v", self.num_params(), v.len())?;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::NotPositive {
                what: "finite-difference step",
                value: eps as f64,
            });
        }
        let vn = v
            .iter()
            .map(|&a| (a as f64) * (a as f64))
            .sum::<f64>()
            .sqrt();
        let n = check_batch(self, x, Some(labels), self.classes())?;
        if vn == 0.0 || !vn.is_finite() {
            return Ok(vec![0.0; n * self.input_len()]);
        }
        let e = (eps as f64 / vn) as f32;
        let shifted = |sign: f32| -> Vec<f32> {
            self.params
                .iter()
                .zip(v)
                .map(|(&p, &d)| p + sign * e * d)
                .collect()
        };
        let want = Want {
            params: false,
            inputs: true,
        };
        let (pp, pm) = (shifted(1.0), shifted(-1.0));
        let t = Targets::Hard(labels);
        let plus = with_model!(self, m => batch_impl(m, &pp, x, t, n, want));
        let minus = with_model!(self, m => batch_impl(m, &pm, x, t, n, want));
        let inv = 1.0 / (2.0 * e);
        Ok(plus
            .input_grads
            .iter()
            .zip(&minus.input_grads)
            .map(|(a, b)| (a - b) * inv)
            .collect())
    }

    /// Logits `n × K` of a batch.
    ///
    /// # Errors
    /// `nn-shape`.
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.forward_batch(x, true)
    }

    /// Feature vectors `n × feature_len` (the input of the classifier), forward only.
    ///
    /// # Errors
    /// `nn-shape`.
    pub fn embed(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.forward_batch(x, false)
    }

    /// Features of a batch followed, per image, by the per-channel means of every block but
    /// the last ([`Net::means_len`] values; none for the MLP): `n × (feature_len + means_len)`.
    ///
    /// # Errors
    /// `nn-shape`.
    pub fn embed_with_means(&self, x: &[f32]) -> Result<Vec<f32>> {
        let n = check_batch(self, x, None, 0)?;
        Ok(with_model!(self, m => {
            let d = m.in_len();
            let (f, ml) = (m.feat_len(), m.means_len());
            let parts: Vec<Vec<f32>> = chunks(n)
                .into_par_iter()
                .map(|r| {
                    let mut s = m.scratch();
                    let mut out = vec![0f32; r.len() * (f + ml)];
                    for (j, i) in r.enumerate() {
                        m.forward(&self.params, &x[i * d..(i + 1) * d], &mut s, false);
                        let row = &mut out[j * (f + ml)..(j + 1) * (f + ml)];
                        row[..f].copy_from_slice(m.features(&s));
                        m.block_means(&s, &mut row[f..]);
                    }
                    out
                })
                .collect();
            parts.concat()
        }))
    }

    /// [`Net::embed_with_means`] and the input gradient of a loss on it: given `d_out`
    /// (`n × (feature_len + means_len)`), returns `(embedding, dLoss/dx)`.
    ///
    /// # Errors
    /// `nn-shape`.
    pub fn embed_with_means_vjp(&self, x: &[f32], d_out: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.vjp(x, d_out, true)
    }

    /// Embedding (with the block means if `with_means`) and the input gradient of a loss on it.
    fn vjp(&self, x: &[f32], d_out: &[f32], with_means: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = check_batch(self, x, None, 0)?;
        let w = self.feature_len() + if with_means { self.means_len() } else { 0 };
        check_len("feature gradients", n * w, d_out.len())?;
        Ok(with_model!(self, m => {
            let d = m.in_len();
            let f = m.feat_len();
            let parts: Vec<(Vec<f32>, Vec<f32>)> = chunks(n)
                .into_par_iter()
                .map(|r| {
                    let mut s = m.scratch();
                    let mut emb = vec![0f32; r.len() * w];
                    let mut dxs = vec![0f32; r.len() * d];
                    for (j, i) in r.enumerate() {
                        m.forward(&self.params, &x[i * d..(i + 1) * d], &mut s, false);
                        let row = &mut emb[j * w..(j + 1) * w];
                        row[..f].copy_from_slice(m.features(&s));
                        let g = &d_out[i * w..(i + 1) * w];
                        let up = if with_means {
                            m.block_means(&s, &mut row[f..]);
                            Upstream::FeaturesMeans(&g[..f], &g[f..])
                        } else {
                            Upstream::Features(g)
                        };
                        m.backward(&self.params, &mut s, up, None, Some(&mut dxs[j * d..(j + 1) * d]));
                    }
                    (emb, dxs)
                })
                .collect();
            let mut emb = Vec::with_capacity(n * w);
            let mut dxs = Vec::with_capacity(n * d);
            for (a, b) in parts {
                emb.extend(a);
                dxs.extend(b);
            }
            (emb, dxs)
        }))
    }

    fn forward_batch(&self, x: &[f32], logits: bool) -> Result<Vec<f32>> {
        let n = check_batch(self, x, None, 0)?;
        Ok(with_model!(self, m => {
            let d = m.in_len();
            let width = if logits { m.classes() } else { m.feat_len() };
            let parts: Vec<Vec<f32>> = chunks(n)
                .into_par_iter()
                .map(|r| {
                    let mut s = m.scratch();
                    let mut out = Vec::with_capacity(r.len() * width);
                    for i in r {
                        m.forward(&self.params, &x[i * d..(i + 1) * d], &mut s, logits);
                        out.extend_from_slice(if logits { m.logits(&s) } else { m.features(&s) });
                    }
                    out
                })
                .collect();
            parts.concat()
        }))
    }

    /// Features of a batch and the input gradient of a loss on them: given `d_features`
    /// (`n × feature_len`, dLoss/dfeatures), returns `(features, dLoss/dx)`.
    ///
    /// # Errors
    /// `nn-shape`.
    pub fn embed_vjp(&self, x: &[f32], d_features: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.vjp(x, d_features, false)
    }
}

#[cfg(test)]
mod tests;
