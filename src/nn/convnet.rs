//! The dataset-distillation ConvNet (Zhao et al.'s ConvNet-3 as used by DC/DSA/DM/PSG):
//! `depth` blocks of conv 3×3 (padding 1, no bias: instance norm removes it) → instance norm
//! (affine, per sample: never BatchNorm, which mixes samples) → activation → 2×2 average
//! pooling (floor mode), then a linear classifier on the flattened features.
//!
//! Forward and backward are written by hand for one sample at a time over flat buffers
//! (unfold + GEMM; input gradients as `Wᵀ·dz` folded back, the same FLOPs as a conv with the
//! flipped kernel), so per-sample gradients cost no more than a batch gradient.

use super::gemm::{matmul, View};
use super::kernels::{self, Activation};
use super::{Model, ParamGroup, Upstream};

/// Configuration of a [`ConvNet`](super::Arch::ConvNet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvNetConfig {
    /// Input channels (1 or 3).
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Channels of every conv layer (the literature's default is 128).
    pub net_width: usize,
    /// Number of conv blocks (default 3).
    pub depth: usize,
    /// Activation.
    pub activation: Activation,
}

impl ConvNetConfig {
    /// The literature's ConvNet-3 (width 128, ReLU) for this input.
    pub fn standard(channels: usize, height: usize, width: usize, classes: usize) -> Self {
        ConvNetConfig {
            channels,
            height,
            width,
            classes,
            net_width: 128,
            depth: 3,
            activation: Activation::Relu,
        }
    }
}

/// One conv block's geometry and parameter offsets.
#[derive(Debug, Clone, Copy)]
struct Block {
    cin: usize,
    h: usize,
    w: usize,
    w_off: usize,
    g_off: usize,
    b_off: usize,
}

/// The built network (geometry and parameter layout; the parameters live in [`super::Net`]).
#[derive(Debug, Clone)]
pub(crate) struct ConvNet {
    cfg: ConvNetConfig,
    blocks: Vec<Block>,
    feat: usize,
    fc_w: usize,
    fc_b: usize,
    n_params: usize,
}

/// Per-thread buffers of one sample's forward and backward pass.
#[derive(Debug)]
pub(crate) struct Scratch {
    cols: Vec<Vec<f32>>,
    xhat: Vec<Vec<f32>>,
    y: Vec<Vec<f32>>,
    rstd: Vec<Vec<f32>>,
    pooled: Vec<Vec<f32>>,
    logits: Vec<f32>,
    dy: Vec<f32>,
    dcols: Vec<f32>,
    dpool: Vec<f32>,
    dprev: Vec<f32>,
}

impl ConvNet {
    pub(crate) fn new(cfg: ConvNetConfig) -> Result<ConvNet, String> {
        let c = cfg;
        if !(1..=4).contains(&c.channels) {
            return Err(format!("{} input channels (expected 1 or 3)", c.channels));
        }
        if !(1..=6).contains(&c.depth) {
            return Err(format!("depth {} (expected 1 to 6)", c.depth));
        }
        if !(1..=1024).contains(&c.net_width) {
            return Err(format!("width {} (expected 1 to 1024)", c.net_width));
        }
        if !(2..=10_000).contains(&c.classes) {
            return Err(format!("{} classes (expected 2 to 10000)", c.classes));
        }
        if c.height > 1024 || c.width > 1024 {
            return Err(format!("{}x{} images are too large", c.height, c.width));
        }
        let (mut h, mut w, mut cin, mut off) = (c.height, c.width, c.channels, 0);
        let mut blocks = Vec::new();
        for d in 0..c.depth {
            if h < 2 || w < 2 {
                return Err(format!(
                    "{}x{} images are too small for {} pooling layers (block {} sees {h}x{w})",
                    c.height, c.width, c.depth, d
                ));
            }
            let w_off = off;
            off += c.net_width * cin * 9;
            let g_off = off;
            off += c.net_width;
            let b_off = off;
            off += c.net_width;
            blocks.push(Block {
                cin,
                h,
                w,
                w_off,
                g_off,
                b_off,
            });
            (h, w) = kernels::pooled(h, w);
            cin = c.net_width;
        }
        let feat = c.net_width * h * w;
        let fc_w = off;
        let fc_b = fc_w + c.classes * feat;
        Ok(ConvNet {
            cfg: c,
            blocks,
            feat,
            fc_w,
            fc_b,
            n_params: fc_b + c.classes,
        })
    }

    pub(crate) fn config(&self) -> &ConvNetConfig {
        &self.cfg
    }

    /// Multiply-accumulates of one sample's forward pass (for the FLOP floor).
    pub(crate) fn forward_macs(&self) -> f64 {
        let k = self.cfg.net_width as f64;
        let conv: f64 = self
            .blocks
            .iter()
            .map(|b| k * (b.cin * 9) as f64 * (b.h * b.w) as f64)
            .sum();
        conv + (self.cfg.classes * self.feat) as f64
    }

    /// MACs of the input gradient of the first conv (not needed on the real side).
    pub(crate) fn first_dx_macs(&self) -> f64 {
        let b = self.blocks[0];
        (self.cfg.net_width * b.cin * 9 * b.h * b.w) as f64
    }
}

impl Model for ConvNet {
    type Scratch = Scratch;

    fn n_params(&self) -> usize {
        self.n_params
    }
    fn in_len(&self) -> usize {
        self.cfg.channels * self.cfg.height * self.cfg.width
    }
    fn feat_len(&self) -> usize {
        self.feat
    }
    fn classes(&self) -> usize {
        self.cfg.classes
    }

    fn groups(&self) -> Vec<ParamGroup> {
        let k = self.cfg.net_width;
        let mut v = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            v.push(ParamGroup::new(
                format!("conv{i}.weight"),
                b.w_off,
                k,
                b.cin * 9,
            ));
            v.push(ParamGroup::new(format!("norm{i}.weight"), b.g_off, 1, k));
            v.push(ParamGroup::new(format!("norm{i}.bias"), b.b_off, 1, k));
        }
        v.push(ParamGroup::new(
            "fc.weight",
            self.fc_w,
            self.cfg.classes,
            self.feat,
        ));
        v.push(ParamGroup::new("fc.bias", self.fc_b, 1, self.cfg.classes));
        v
    }

    fn init(&self, p: &mut [f32], rng: &mut dyn rand::RngCore) {
        use rand::Rng;
        let k = self.cfg.net_width;
        for b in &self.blocks {
            // PyTorch's default (kaiming uniform with a = sqrt(5)): U(±1/sqrt(fan_in)).
            let bound = 1.0 / ((b.cin * 9) as f32).sqrt();
            p[b.w_off..b.w_off + k * b.cin * 9]
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-bound..bound));
            p[b.g_off..b.g_off + k].fill(1.0);
            p[b.b_off..b.b_off + k].fill(0.0);
        }
        let bound = 1.0 / (self.feat as f32).sqrt();
        p[self.fc_w..self.n_params]
            .iter_mut()
            .for_each(|v| *v = rng.gen_range(-bound..bound));
    }

    fn scratch(&self) -> Scratch {
        let k = self.cfg.net_width;
        let mut max_dcols = 0;
        let mut max_map = 0;
        let mut s = Scratch {
            cols: vec![],
            xhat: vec![],
            y: vec![],
            rstd: vec![],
            pooled: vec![],
            logits: vec![0.0; self.cfg.classes],
            dy: vec![],
            dcols: vec![],
            dpool: vec![],
            dprev: vec![],
        };
        for b in &self.blocks {
            let hw = b.h * b.w;
            let (h2, w2) = kernels::pooled(b.h, b.w);
            s.cols.push(vec![0.0; b.cin * 9 * hw]);
            s.xhat.push(vec![0.0; k * hw]);
            s.y.push(vec![0.0; k * hw]);
            s.rstd.push(vec![0.0; k]);
            s.pooled.push(vec![0.0; k * h2 * w2]);
            max_dcols = max_dcols.max(b.cin * 9 * hw);
            max_map = max_map.max(k * hw).max(b.cin * hw);
        }
        s.dy = vec![0.0; max_map];
        s.dcols = vec![0.0; max_dcols];
        s.dpool = vec![0.0; max_map];
        s.dprev = vec![0.0; max_map];
        s
    }

    fn forward(&self, p: &[f32], x: &[f32], s: &mut Scratch, logits: bool) {
        let k = self.cfg.net_width;
        let act = self.cfg.activation;
        for (l, b) in self.blocks.iter().enumerate() {
            let hw = b.h * b.w;
            let (before, rest) = s.pooled.split_at_mut(l);
            let input: &[f32] = if l == 0 { x } else { &before[l - 1] };
            kernels::im2col(input, b.cin, b.h, b.w, &mut s.cols[l]);
            let wmat = View::rm(&p[b.w_off..b.w_off + k * b.cin * 9], k, b.cin * 9);
            let xhat = &mut s.xhat[l];
            matmul(xhat, wmat, View::rm(&s.cols[l], b.cin * 9, hw), 1.0, false);
            kernels::instance_norm(xhat, k, hw, &mut s.rstd[l]);
            let y = &mut s.y[l];
            for ch in 0..k {
                let (g, be) = (p[b.g_off + ch], p[b.b_off + ch]);
                for (o, &v) in y[ch * hw..(ch + 1) * hw]
                    .iter_mut()
                    .zip(&xhat[ch * hw..(ch + 1) * hw])
                {
                    *o = g * v + be;
                }
            }
            kernels::act_pool(y, k, b.h, b.w, act, &mut rest[0]);
        }
        if logits {
            let feat = &s.pooled[self.blocks.len() - 1][..self.feat];
            let kc = self.cfg.classes;
            for c in 0..kc {
                let row = &p[self.fc_w + c * self.feat..self.fc_w + (c + 1) * self.feat];
                s.logits[c] = p[self.fc_b + c] + dot(row, feat);
            }
        }
    }

    fn features<'s>(&self, s: &'s Scratch) -> &'s [f32] {
        &s.pooled[self.blocks.len() - 1][..self.feat]
    }

    fn logits<'s>(&self, s: &'s Scratch) -> &'s [f32] {
        &s.logits
    }

    fn means_len(&self) -> usize {
        self.cfg.net_width * (self.blocks.len() - 1)
    }

    fn block_means(&self, s: &Scratch, out: &mut [f32]) {
        let k = self.cfg.net_width;
        for (l, b) in self.blocks[..self.blocks.len() - 1].iter().enumerate() {
            let (h2, w2) = kernels::pooled(b.h, b.w);
            let hw2 = h2 * w2;
            for ch in 0..k {
                let m = s.pooled[l][ch * hw2..(ch + 1) * hw2].iter().sum::<f32>();
                out[l * k + ch] = m / hw2 as f32;
            }
        }
    }

    fn backward(
        &self,
        p: &[f32],
        s: &mut Scratch,
        up: Upstream<'_>,
        mut dp: Option<&mut [f32]>,
        dx: Option<&mut [f32]>,
    ) {
        let k = self.cfg.net_width;
        let act = self.cfg.activation;
        let depth = self.blocks.len();
        // dL/dfeatures into s.dpool
        let d_means: Option<&[f32]> = match up {
            Upstream::FeaturesMeans(_, dm) => Some(dm),
            _ => None,
        };
        match up {
            Upstream::Logits(dl) => {
                let feat = &s.pooled[depth - 1][..self.feat];
                let dfeat = &mut s.dpool[..self.feat];
                dfeat.fill(0.0);
                for (c, &g) in dl.iter().enumerate() {
                    let row = &p[self.fc_w + c * self.feat..self.fc_w + (c + 1) * self.feat];
                    axpy(g, row, dfeat);
                }
                if let Some(dp) = dp.as_deref_mut() {
                    for (c, &g) in dl.iter().enumerate() {
                        let drow = &mut dp[self.fc_w + c * self.feat..][..self.feat];
                        drow.iter_mut().zip(feat).for_each(|(d, &f)| *d = g * f);
                        dp[self.fc_b + c] = g;
                    }
                }
            }
            Upstream::Features(df) | Upstream::FeaturesMeans(df, _) => {
                s.dpool[..self.feat].copy_from_slice(df);
                if let Some(dp) = dp.as_deref_mut() {
                    dp[self.fc_w..self.n_params].fill(0.0);
                }
            }
        }
        let mut dx = dx;
        for l in (0..depth).rev() {
            let b = self.blocks[l];
            let hw = b.h * b.w;
            if let (Some(dm), true) = (d_means, l + 1 < depth) {
                // mean over the pooled map: each pooled value gets dm / (h2·w2)
                let (h2, w2) = kernels::pooled(b.h, b.w);
                let hw2 = h2 * w2;
                for ch in 0..k {
                    let g = dm[l * k + ch] / hw2 as f32;
                    s.dpool[ch * hw2..(ch + 1) * hw2]
                        .iter_mut()
                        .for_each(|v| *v += g);
                }
            }
            let dy = &mut s.dy[..k * hw];
            kernels::act_pool_backward(&s.dpool, &s.y[l], k, b.h, b.w, act, dy);
            let (mut dg, mut db) = (vec![0f32; 0], vec![0f32; 0]);
            let (dgamma, dbeta): (&mut [f32], &mut [f32]) = match dp.as_deref_mut() {
                Some(dp) => {
                    let (a, rest) = dp[b.g_off..].split_at_mut(k);
                    (a, &mut rest[..k])
                }
                None => {
                    dg.resize(k, 0.0);
                    db.resize(k, 0.0);
                    (&mut dg, &mut db)
                }
            };
            let gamma = &p[b.g_off..b.g_off + k];
            kernels::instance_norm_backward(
                dy, &s.xhat[l], &s.rstd[l], gamma, k, hw, dgamma, dbeta,
            );
            let dz = &s.dy[..k * hw];
            if let Some(dp) = dp.as_deref_mut() {
                // per-sample dW [k, cin·9] = dz [k, hw] · colsᵀ [hw, cin·9]
                let dw = &mut dp[b.w_off..b.w_off + k * b.cin * 9];
                let cols = View::rm(&s.cols[l], b.cin * 9, hw).t();
                matmul(dw, View::rm(dz, k, hw), cols, 1.0, false);
            }
            let need_dx = l > 0 || dx.is_some();
            if need_dx {
                let wt = View::rm(&p[b.w_off..b.w_off + k * b.cin * 9], k, b.cin * 9).t();
                let dcols = &mut s.dcols[..b.cin * 9 * hw];
                matmul(dcols, wt, View::rm(dz, k, hw), 1.0, false);
                if l > 0 {
                    kernels::col2im(dcols, b.cin, b.h, b.w, &mut s.dprev);
                    std::mem::swap(&mut s.dpool, &mut s.dprev);
                } else if let Some(dx) = dx.as_deref_mut() {
                    kernels::col2im(dcols, b.cin, b.h, b.w, dx);
                }
            }
        }
    }
}

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // 8 partial sums so the compiler can vectorise without reassociation.
    let mut acc = [0f32; 8];
    let (ca, ra) = a.split_at(a.len() / 8 * 8);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}
