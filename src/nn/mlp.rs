//! A multi-layer perceptron on flattened images: `Linear → activation` for every hidden layer,
//! then a linear classifier. The features ([`super::Net::embed`]) are the last hidden layer.

use super::convnet::{axpy, dot};
use super::kernels::Activation;
use super::{Model, ParamGroup, Upstream};

/// Configuration of an [`Mlp`](super::Arch::Mlp).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Input values per image (C·H·W).
    pub inputs: usize,
    /// Hidden layer sizes (at least one).
    pub hidden: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Activation.
    pub activation: Activation,
}

#[derive(Debug, Clone, Copy)]
struct Layer {
    fan_in: usize,
    fan_out: usize,
    w_off: usize,
    b_off: usize,
}

/// The built MLP (layout only).
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    cfg: MlpConfig,
    layers: Vec<Layer>,
    n_params: usize,
}

/// Per-thread buffers.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Pre-activations of each hidden layer, then the logits.
    pre: Vec<Vec<f32>>,
    /// Activations of each hidden layer.
    post: Vec<Vec<f32>>,
    input: Vec<f32>,
    d: Vec<f32>,
    dprev: Vec<f32>,
}

impl Mlp {
    pub(crate) fn new(cfg: MlpConfig) -> Result<Mlp, String> {
        if cfg.inputs == 0 || cfg.inputs > 1 << 22 {
            return Err(format!("{} inputs", cfg.inputs));
        }
        if cfg.hidden.is_empty() || cfg.hidden.iter().any(|&h| h == 0 || h > 16384) {
            return Err("hidden layers must be 1 to 16384 wide, at least one".into());
        }
        if !(2..=10_000).contains(&cfg.classes) {
            return Err(format!("{} classes (expected 2 to 10000)", cfg.classes));
        }
        let mut sizes = vec![cfg.inputs];
        sizes.extend(&cfg.hidden);
        sizes.push(cfg.classes);
        let mut off = 0;
        let layers = sizes
            .windows(2)
            .map(|s| {
                let l = Layer {
                    fan_in: s[0],
                    fan_out: s[1],
                    w_off: off,
                    b_off: off + s[0] * s[1],
                };
                off += s[0] * s[1] + s[1];
                l
            })
            .collect();
        Ok(Mlp {
            cfg,
            layers,
            n_params: off,
        })
    }

    pub(crate) fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    pub(crate) fn forward_macs(&self) -> f64 {
        self.layers
            .iter()
            .map(|l| (l.fan_in * l.fan_out) as f64)
            .sum()
    }

    pub(crate) fn first_dx_macs(&self) -> f64 {
        let l = self.layers[0];
        (l.fan_in * l.fan_out) as f64
    }
}

impl Model for Mlp {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        self.n_params
    }
    fn in_len(&self) -> usize {
        self.cfg.inputs
    }
    fn feat_len(&self) -> usize {
        *self
            .cfg
            .hidden
            .last()
            .expect("invariant: validated non-empty")
    }
    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn groups(&self) -> Vec<ParamGroup> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            v.push(ParamGroup::new(
                format!("fc{i}.weight"),
                l.w_off,
                l.fan_out,
                l.fan_in,
            ));
            v.push(ParamGroup::new(
                format!("fc{i}.bias"),
                l.b_off,
                1,
                l.fan_out,
            ));
        }
        v
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn rand::RngCore) {
        use rand::Rng;
        for l in &self.layers {
            let bound = 1.0 / (l.fan_in as f32).sqrt();
            p[l.w_off..l.b_off + l.fan_out]
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-bound..bound));
        }
    }

    fn scratch(&self) -> Scratch {
        let widest = self
            .layers
            .iter()
            .map(|l| l.fan_in.max(l.fan_out))
            .max()
            .unwrap_or(1);
        Scratch {
            pre: self.layers.iter().map(|l| vec![0.0; l.fan_out]).collect(),
            post: self.layers.iter().map(|l| vec![0.0; l.fan_out]).collect(),
            input: vec![0.0; self.cfg.inputs],
            d: vec![0.0; widest],
            dprev: vec![0.0; widest],
        }
    }

    fn forward(&self, p: &[f32], x: &[f32], s: &mut Scratch, _logits: bool) {
        s.input.copy_from_slice(x);
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let (done, rest) = s.post.split_at_mut(i);
            let inp: &[f32] = if i == 0 { &s.input } else { &done[i - 1] };
            let pre = &mut s.pre[i];
            for o in 0..l.fan_out {
                let row = &p[l.w_off + o * l.fan_in..][..l.fan_in];
                pre[o] = p[l.b_off + o] + dot(row, inp);
            }
            if i + 1 < n {
                for (q, &v) in rest[0].iter_mut().zip(pre.iter()) {
                    *q = self.cfg.activation.f(v);
                }
            }
        }
    }

    fn features<'s>(&self, s: &'s Scratch) -> &'s [f32] {
        &s.post[self.layers.len() - 2]
    }

    fn logits<'s>(&self, s: &'s Scratch) -> &'s [f32] {
        &s.pre[self.layers.len() - 1]
    }

    fn backward(
        &self,
        p: &[f32],
        s: &mut Scratch,
        up: Upstream<'_>,
        mut dp: Option<&mut [f32]>,
        dx: Option<&mut [f32]>,
    ) {
        let n = self.layers.len();
        // `s.d` holds dL/d(pre-activation) of layer `top`.
        let top = match up {
            Upstream::Logits(dl) => {
                s.d[..dl.len()].copy_from_slice(dl);
                n - 1
            }
            Upstream::Features(df) | Upstream::FeaturesMeans(df, _) => {
                let l = self.layers[n - 2];
                for (o, d) in s.d[..l.fan_out].iter_mut().enumerate() {
                    *d = df[o] * self.cfg.activation.df(s.pre[n - 2][o]);
                }
                if let Some(dp) = dp.as_deref_mut() {
                    let last = self.layers[n - 1];
                    dp[last.w_off..last.b_off + last.fan_out].fill(0.0);
                }
                n - 2
            }
        };
        let mut dx = dx;
        for i in (0..=top).rev() {
            let l = self.layers[i];
            let inp: &[f32] = if i == 0 { &s.input } else { &s.post[i - 1] };
            let d = &s.d[..l.fan_out];
            if let Some(dp) = dp.as_deref_mut() {
                for o in 0..l.fan_out {
                    let row = &mut dp[l.w_off + o * l.fan_in..][..l.fan_in];
                    let g = d[o];
                    row.iter_mut().zip(inp).for_each(|(r, &v)| *r = g * v);
                    dp[l.b_off + o] = g;
                }
            }
            if i == 0 && dx.is_none() {
                break;
            }
            let dprev = &mut s.dprev[..l.fan_in];
            dprev.fill(0.0);
            for (o, &g) in d.iter().enumerate() {
                axpy(g, &p[l.w_off + o * l.fan_in..][..l.fan_in], dprev);
            }
            if i == 0 {
                if let Some(dx) = dx.as_deref_mut() {
                    dx.copy_from_slice(dprev);
                }
            } else {
                let pre = &s.pre[i - 1];
                for (q, &v) in dprev.iter_mut().zip(pre) {
                    *q *= self.cfg.activation.df(v);
                }
                std::mem::swap(&mut s.d, &mut s.dprev);
            }
        }
    }
}
