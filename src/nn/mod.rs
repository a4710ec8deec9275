//! Models (the distillation ConvNet, an MLP) and the per-sample gradient engine behind DP-SGD.
//!
//! Parameters are one flat `f32` vector per network ([`Net::params`], [`Net::set_params`]), laid
//! out as [`Net::groups`] describes, so callers can perturb, average or replace them freely.
//! Forward and backward passes are written by hand over flat buffers (no autograd): candle's
//! CPU autograd is 3–6× slower than PyTorch's on these networks, and its `avg_pool2d` backward
//! is wrong for odd sizes (see `docs/nn.md`). Work is parallel across samples
//! with rayon (the caller's thread pool), each sample's GEMMs single-threaded.
//!
//! What other modules call:
//! - [`per_sample_grads`]: the per-record function of DP-SGD on private data — one unclipped
//!   gradient row per sample, for [`crate::dp::mechanism::GaussianSum::release`] to clip below
//!   C, sum (one vector or one per class) and noise.
//! - [`Net::loss_and_grads`]: mean cross-entropy with parameter and input gradients (the
//!   synthetic side of gradient matching, and training).
//! - [`Net::embed`] / [`Net::embed_vjp`]: features for distribution matching, and the input
//!   gradient of a loss on them.
//! - [`Net::input_grad_hvp_fd`]: the finite-difference Hessian-vector product for first-order
//!   gradient matching (use [`Activation::Gelu`]: with ReLU it does not converge).
//!
//! # Privacy
//! Nothing here samples, clips, sums private rows or adds noise; that is the one mechanism's job
//! (`dp::mechanism`). [`per_sample_grads`] computes row `i` from sample `i` and the public
//! weights only, as the mechanism's sensitivity argument needs; its rows are private and
//! unclipped and must never leave the mechanism.

pub mod bench;
mod convnet;
pub(crate) mod gemm;
mod kernels;
mod mlp;
mod per_sample;
pub mod scatter;

pub use convnet::ConvNetConfig;
pub use kernels::Activation;
pub use mlp::MlpConfig;
pub use per_sample::{per_sample_chunk, per_sample_grads, per_sample_grads_into, LossGrads};

use crate::error::{Class, Coded};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The architecture cannot be built as configured.
    #[error("invalid network configuration: {why}")]
    Config {
        /// What is wrong.
        why: String,
    },
    /// A buffer does not have the size the network needs.
    #[error("{what} has {got} values, the network needs {expected}")]
    Shape {
        /// Which buffer ("images", "labels", "parameters", ...).
        what: &'static str,
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A label outside `0..classes` (or outside the grouping's classes).
    #[error("label {label} at position {index} is outside 0..{classes}")]
    Label {
        /// The label.
        label: u32,
        /// Where it is.
        index: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A clip norm or step that is not a positive finite number.
    #[error("{what} must be a positive finite number, got {value}")]
    NotPositive {
        /// Which value.
        what: &'static str,
        /// The value.
        value: f64,
    },
}

impl Error {
    /// Stable codes of this module.
    pub const CODES: &'static [&'static str] =
        &["nn-config", "nn-shape", "nn-label", "nn-not-positive"];
}

impl Coded for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "nn-config",
            Error::Shape { .. } => "nn-shape",
            Error::Label { .. } => "nn-label",
            Error::NotPositive { .. } => "nn-not-positive",
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Config { .. } => "use 1 or 3 channels, images of 8x8 or more (28x28 to 64x64 is the tested range), depth 1 to 6".into(),
            Error::Shape { .. } => "pass images as n·C·H·W floats and one label per image, matching the network's input shape".into(),
            Error::Label { .. } => "labels must be class indices 0..K-1 of the dataset the network was built for".into(),
            Error::NotPositive { .. } => "choose a value greater than 0".into(),
        })
    }
    fn class(&self) -> Class {
        Class::Input
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A named slice of the flat parameter vector, viewed as a `rows × cols` matrix (rows are
/// output channels/units; 1-D parameters have one row).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamGroup {
    /// e.g. `conv0.weight`, `norm1.bias`, `fc.weight`.
    pub name: String,
    /// Offset into the flat vector.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl ParamGroup {
    fn new(name: impl Into<String>, offset: usize, rows: usize, cols: usize) -> Self {
        ParamGroup {
            name: name.into(),
            offset,
            rows,
            cols,
        }
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its values in a flat vector.
    pub fn slice<'a>(&self, flat: &'a [f32]) -> &'a [f32] {
        &flat[self.offset..self.offset + self.len()]
    }
}

/// Where the backward pass starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Upstream<'a> {
    /// dL/dlogits.
    Logits(&'a [f32]),
    /// dL/dfeatures (the classifier gets zero gradient).
    Features(&'a [f32]),
    /// dL/dfeatures and dL/d(block means) ([`Model::block_means`]).
    FeaturesMeans(&'a [f32], &'a [f32]),
}

/// A network's one-sample forward and backward passes over flat buffers.
pub(crate) trait Model: Sync {
    type Scratch: Send;
    fn n_params(&self) -> usize;
    fn in_len(&self) -> usize;
    fn feat_len(&self) -> usize;
    fn classes(&self) -> usize;
    fn groups(&self) -> Vec<ParamGroup>;
    fn init(&self, p: &mut [f32], rng: &mut dyn rand::RngCore);
    fn scratch(&self) -> Self::Scratch;
    /// Forward one sample; keeps what the backward needs in `s`; computes logits if asked.
    fn forward(&self, p: &[f32], x: &[f32], s: &mut Self::Scratch, logits: bool);
    fn features<'s>(&self, s: &'s Self::Scratch) -> &'s [f32];
    fn logits<'s>(&self, s: &'s Self::Scratch) -> &'s [f32];
    /// Length of [`Model::block_means`].
    fn means_len(&self) -> usize {
        0
    }
    /// Per-channel spatial means of every block's output but the last (after
    /// [`Model::forward`]); empty for models without blocks.
    fn block_means(&self, _s: &Self::Scratch, _out: &mut [f32]) {}
    /// Backward after [`Model::forward`] of the same sample: overwrites `dp` with the whole
    /// parameter gradient and `dx` with the input gradient, if given.
    fn backward(
        &self,
        p: &[f32],
        s: &mut Self::Scratch,
        up: Upstream<'_>,
        dp: Option<&mut [f32]>,
        dx: Option<&mut [f32]>,
    );
}

/// Which architecture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arch {
    /// The distillation ConvNet.
    ConvNet(ConvNetConfig),
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
}

#[derive(Debug, Clone)]
pub(crate) enum Built {
    Conv(convnet::ConvNet),
    Mlp(mlp::Mlp),
}

/// Dispatch a generic function over the built model.
macro_rules! with_model {
    ($net:expr, $m:ident => $body:expr) => {
        match &$net.built {
            $crate::nn::Built::Conv($m) => $body,
            $crate::nn::Built::Mlp($m) => $body,
        }
    };
}
pub(crate) use with_model;

/// A network: architecture plus one flat parameter vector.
#[derive(Debug, Clone)]
pub struct Net {
    arch: Arch,
    pub(crate) built: Built,
    params: Vec<f32>,
}

impl Net {
    /// Build a network and initialise its parameters from `rng` (PyTorch's default
    /// initialisation: U(±1/√fan_in) weights, norm scale 1 and shift 0).
    ///
    /// # Privacy
    /// `rng` is a non-private RNG (the initialisation is public); pass a seeded one for
    /// reproducible evaluation.
    ///
    /// # Errors
    /// `nn-config` if the architecture cannot be built.
    pub fn new(arch: Arch, rng: &mut dyn rand::RngCore) -> Result<Net> {
        let mut net = Net::zeroed(arch)?;
        let mut p = std::mem::take(&mut net.params);
        with_model!(net, m => m.init(&mut p, rng));
        net.params = p;
        Ok(net)
    }

    /// Build a network with all parameters zero (set them with [`Net::set_params`]).
    ///
    /// # Errors
    /// `nn-config`.
    pub fn zeroed(arch: Arch) -> Result<Net> {
        let built = match &arch {
            Arch::ConvNet(c) => Built::Conv(convnet::ConvNet::new(*c).map_err(config)?),
            Arch::Mlp(c) => Built::Mlp(mlp::Mlp::new(c.clone()).map_err(config)?),
        };
        let n = match &built {
            Built::Conv(m) => m.n_params(),
            Built::Mlp(m) => m.n_params(),
        };
        Ok(Net {
            arch,
            built,
            params: vec![0.0; n],
        })
    }

    /// The architecture.
    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// The parameters, one flat vector.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The parameters, mutable (e.g. to apply an update in place).
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Replace all parameters.
    ///
    /// # Errors
    /// `nn-shape` if `p` has the wrong length.
    pub fn set_params(&mut self, p: &[f32]) -> Result<()> {
        check_len("parameters", self.params.len(), p.len())?;
        self.params.copy_from_slice(p);
        Ok(())
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Values per input image (C·H·W).
    pub fn input_len(&self) -> usize {
        with_model!(self, m => m.in_len())
    }

    /// Length of one feature vector ([`Net::embed`]).
    pub fn feature_len(&self) -> usize {
        with_model!(self, m => m.feat_len())
    }

    /// Length of the block means appended by [`Net::embed_with_means`] (0 for the MLP).
    pub fn means_len(&self) -> usize {
        with_model!(self, m => m.means_len())
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        with_model!(self, m => m.classes())
    }

    /// The named parameter groups, in order, covering the flat vector.
    pub fn groups(&self) -> Vec<ParamGroup> {
        with_model!(self, m => m.groups())
    }

    /// FLOPs of one sample's forward + backward pass as the DP step needs it (all weight
    /// gradients, input gradients of every layer but the first). Used for the FLOP floor.
    pub fn train_flops_per_sample(&self) -> f64 {
        let (fwd, dx0) = match &self.built {
            Built::Conv(m) => (m.forward_macs(), m.first_dx_macs()),
            Built::Mlp(m) => (m.forward_macs(), m.first_dx_macs()),
        };
        2.0 * (3.0 * fwd - dx0)
    }

    /// Human summary, e.g. `ConvNet-3 w128 relu 1x28x28→10 (308362 params)`.
    pub fn describe(&self) -> String {
        match &self.built {
            Built::Conv(m) => {
                let c = m.config();
                format!(
                    "ConvNet-{} w{} {} {}x{}x{}→{} ({} params)",
                    c.depth,
                    c.net_width,
                    act_name(c.activation),
                    c.channels,
                    c.height,
                    c.width,
                    c.classes,
                    self.num_params()
                )
            }
            Built::Mlp(m) => {
                let c = m.config();
                format!(
                    "MLP {}→{:?}→{} {} ({} params)",
                    c.inputs,
                    c.hidden,
                    c.classes,
                    act_name(c.activation),
                    self.num_params()
                )
            }
        }
    }
}

fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
    }
}

fn config(why: String) -> Error {
    Error::Config { why }
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected,
            got,
        })
    }
}
