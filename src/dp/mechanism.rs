//! The one mechanism: every private statistic Retort computes goes through
//! [`GaussianSum::release`], and method code sees private pixels only as the [`Batch`] handed
//! to its per-record function.
//!
//! ```text
//! Allowance::charge(event) ─▶ sample (Poisson q, OS-keyed; or every record)
//!   ─▶ f(Batch) per chunk: rows × dim f32 (the caller's per-record function)
//!   ─▶ clip every row below C (with a margin, dp::clip) ─▶ per-group sums in f64
//!   ─▶ + N(0, σ²C²) per coordinate (dp::noise, or opendp's exact Gaussian) ─▶ Released
//! ```
//!
//! gm (per matching step), dm (per-net releases, the one-shot release, the DP-SGD warm-up) and
//! the DP-SGD baseline of `eval` are all instances of it; `Records` can only be built inside
//! the crate (by the run lifecycle, after the ledger reservation) and an [`Allowance`] only
//! from reserved events, so a release that was not reserved fails closed before a record is
//! read.
//!
//! # Privacy
//! - **Neighbouring relation:** datasets differing by adding or removing one record (one
//!   image with its label), SECURITY.md "Differential privacy".
//! - **Per-record function:** the row of record `i` must depend only on record `i` (its
//!   pixels, its label, the randomness it draws from [`Batch::rng`]) and on public values
//!   (network weights from the public seed, a public augmentation). Batch statistics across
//!   records are forbidden: they would break the sensitivity argument below.
//! - **Sensitivity:** each row is clipped to L2 norm below `C` ([`super::clip`]; the norm of
//!   the *stored* f32 values, not of the real-valued ideal) and enters exactly one group's sum
//!   (its label's under [`Grouping::ByClass`], the only sum under [`Grouping::Single`]). So
//!   adding or removing one record changes the concatenation of all group sums by a vector of
//!   L2 norm below `C`: the whole release is ONE Gaussian mechanism, not one per group.
//! - **Record-level randomness** (augmentations) comes from a ChaCha20 stream keyed by the
//!   OS for each release, never from the public seed. Couple neighbouring datasets so that
//!   common records receive the same draws (the draws are i.i.d. and unknown, so this does not
//!   change either output distribution); conditioned on the draws the sensitivity is `C`, and
//!   the mixture over the data-independent draw distribution keeps the (ε, δ) bound.
//! - **Noise:** `N(0, σ²C²)` independently per coordinate of every group sum, from
//!   [`super::noise::SecureGaussian`] (OS-keyed ChaCha20, floating point) or opendp's exact
//!   discrete Gaussian ([`super::exact`]; immune to floating-point attacks, ρ = 1/(2σ²) zCDP).
//! - **Cost:** with Poisson sampling at rate `q` (each record independently, OS-keyed), the
//!   subsampled Gaussian `PoissonSampledGaussian { q, σ, steps: 1 }` (Abadi et al. 2016;
//!   Mironov, Talwar & Zhang 2019); over every record, `Gaussian { σ, count: 1 }` (Balle &
//!   Wang 2018 for its exact curve). The accountants compose these under adaptive composition.
//! - **Limits:** the f64 sums round (adding a record and removing it need not cancel
//!   bit-exactly); the float sampler has the known floating-point caveats (Mironov 2012). Both
//!   are described in SECURITY.md.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::sample::PoissonSampler;
use super::{clip, ClipNorm, DpEvent, Error, NoiseMultiplier, SampleRate};
use crate::dataset::{Images, Shape};
use crate::progress::{Event, Sink};

/// The noise sampler names [`Released::sampler`] reports.
pub const FLOAT_SAMPLER: &str = "chacha20-float-gaussian";
/// See [`FLOAT_SAMPLER`].
pub const EXACT_SAMPLER: &str = "opendp-exact-discrete-gaussian";

/// The private records a mechanism may read: 8-bit pixels and labels.
///
/// # Privacy
/// Only the crate can build one ([`Records::new`] is `pub(crate)`): the run lifecycle does,
/// after the ledger has reserved the run's events. Its pixels are reachable only through
/// [`GaussianSum::release`]; the record count and shape are public metadata by policy.
pub struct Records<'a> {
    images: &'a Images,
    probe: Option<&'a Probe>,
    /// When set, the per-record function sees these features instead of the pixels.
    features: Option<&'a Features>,
}

/// Every record's values under a fixed, public per-record transform (e.g. a scattering
/// transform with per-record normalisation), computed once by [`Records::features`] and
/// readable only through [`GaussianSum::release`] on [`Records::with_features`].
///
/// # Privacy
/// Private: there is no accessor. Row `i` is a deterministic function of record `i` alone and
/// of public values (the transform is fixed before any record is read and depends on no other
/// record), so a per-record function of the features is a per-record function of the record,
/// and the mechanism's sensitivity argument holds unchanged. Computing the features releases
/// nothing and costs nothing.
pub struct Features {
    values: Vec<f32>,
    dim: usize,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Features {
    /// Values per record (public: a property of the transform).
    pub fn dim(&self) -> usize {
        self.dim
    }
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("len", &self.len())
            .field("shape", &self.shape())
            .finish_non_exhaustive()
    }
}

impl<'a> Records<'a> {
    /// Wrap private images (crate only: after a reservation).
    pub(crate) fn new(images: &'a Images) -> Records<'a> {
        Records {
            images,
            probe: None,
            features: None,
        }
    }

    /// Wrap the records of an audit-only run, with the privacy audit's white-box observer
    /// (crate only: [`crate::run::audit`], on datasets marked audit-only).
    pub(crate) fn probed(images: &'a Images, probe: &'a Probe) -> Records<'a> {
        Records {
            images,
            probe: Some(probe),
            features: None,
        }
    }

    /// Every record's values under `transform`, a fixed per-record function of one image's
    /// pixels (f32 in [0, 1], C, H, W) that appends exactly `dim` values to its output.
    /// Computed in parallel; cancellable.
    ///
    /// # Privacy
    /// `transform` must be public and data-independent: fixed before any record is read, and a
    /// function of the one image it is given (no state across calls). Its outputs stay inside
    /// the returned [`Features`], which only a release can read.
    ///
    /// # Errors
    /// `dp-invalid-parameter` (`dim` is 0), `dp-row-shape` (the transform returned another
    /// length), [`MechError::Cancelled`].
    pub fn features(
        &self,
        dim: usize,
        transform: &(dyn Fn(&[f32], &mut Vec<f32>) + Sync),
        sink: Sink<'_>,
    ) -> Result<Features, MechError<std::convert::Infallible>> {
        if dim == 0 {
            return Err(Error::invalid("feature dimension", 0.0, "at least 1").into());
        }
        let n = self.images.len();
        let len = n
            .checked_mul(dim)
            .ok_or_else(|| Error::invalid("feature table size", f64::INFINITY, "in range"))?;
        let mut values = vec![0f32; len];
        const CHUNK: usize = 1024;
        for (c, out) in values.chunks_mut(CHUNK * dim).enumerate() {
            if crate::progress::is_cancelled() {
                return Err(MechError::Cancelled);
            }
            let bad = out
                .par_chunks_mut(dim)
                .enumerate()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(px, buf), (r, row)| {
                        let i = c * CHUNK + r;
                        px.clear();
                        px.extend(self.images.image(i).iter().map(|&v| v as f32 / 255.0));
                        buf.clear();
                        transform(px, buf);
                        if buf.len() != dim {
                            return Some(buf.len());
                        }
                        row.copy_from_slice(buf);
                        None
                    },
                )
                .find_any(|b| b.is_some())
                .flatten();
            if let Some(got) = bad {
                return Err(Error::RowShape { expected: dim, got }.into());
            }
            sink(Event::Advance((out.len() / dim) as u64));
        }
        Ok(Features { values, dim })
    }

    /// The same records, with the per-record function seeing `features` (from
    /// [`Records::features`] on these records) in [`Batch::pixels`] instead of the pixels.
    /// The privacy audit's observer does not follow feature releases: audit-only runs do not
    /// use them.
    ///
    /// # Errors
    /// `dp-row-shape` when `features` has another record count.
    pub fn with_features(&self, features: &'a Features) -> Result<Records<'a>, Error> {
        if features.values.len() != self.images.len() * features.dim {
            return Err(Error::RowShape {
                expected: self.images.len() * features.dim,
                got: features.values.len(),
            });
        }
        Ok(Records {
            images: self.images,
            probe: None,
            features: Some(features),
        })
    }

    /// Values per record the per-record function sees: the image size, or the features' dim.
    pub fn row_len(&self) -> usize {
        self.features.map_or(self.images.shape.len(), |f| f.dim)
    }

    /// How many records (public metadata by policy).
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.images.len() == 0
    }

    /// The image shape (public metadata).
    pub fn shape(&self) -> Shape {
        self.images.shape
    }
}

/// Which records a release reads.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Sampling {
    /// Each record independently with probability `q` (OS-keyed coin flips): the batch size
    /// is random and never released.
    Poisson(SampleRate),
    /// Every record: a one-shot release.
    Everyone,
}

/// How the clipped rows are summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grouping {
    /// One sum over all records.
    Single,
    /// One sum per label `0..K`; a record enters only its own label's sum.
    ByClass(usize),
}

impl Grouping {
    /// The number of sums.
    pub fn groups(self) -> usize {
        match self {
            Grouping::Single => 1,
            Grouping::ByClass(k) => k,
        }
    }
}

/// Which Gaussian sampler adds the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Noise {
    /// [`super::noise::SecureGaussian`]: OS-keyed ChaCha20, ziggurat normals in f64. Fast.
    Float,
    /// opendp's exact discrete Gaussian ([`super::exact::gaussian_release`]): immune to
    /// floating-point attacks, about 2×10⁴ coordinates per second.
    Exact,
    /// Exact up to `exact_max_coords` coordinates (groups × dim), float above.
    Auto {
        /// The largest release drawn exactly.
        exact_max_coords: usize,
    },
}

/// What the per-record function sees: one chunk of records.
///
/// # Privacy
/// `pixels` and `labels` are private. The function must return one row per record that
/// depends only on that record, its draws from `rng` and public values (see the module's
/// Privacy section); the mechanism clips, sums and noises the rows.
pub struct Batch<'a> {
    /// The chunk's pixels as f32 in [0, 1] (byte / 255), row-major C, H, W per record; or,
    /// on [`Records::with_features`], each record's [`Features`] row.
    pub pixels: &'a [f32],
    /// The chunk's labels.
    pub labels: &'a [u32],
    /// Record-level randomness (augmentations): ChaCha20 keyed by the OS for this release,
    /// never the public seed. Draw each record's randomness i.i.d.
    pub rng: &'a mut ChaCha20Rng,
    /// An empty buffer (the previous chunk's, cleared) for the rows; see [`Batch::buffer`].
    spare: Vec<f32>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Batch<'a> {
    /// Records in the chunk.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for an empty chunk (never passed to a per-record function).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A batch over given values, for unit tests of per-record functions.
    #[cfg(test)]
    pub(crate) fn for_test(
        pixels: &'a [f32],
        labels: &'a [u32],
        rng: &'a mut ChaCha20Rng,
    ) -> Batch<'a> {
        Batch {
            pixels,
            labels,
            rng,
            spare: Vec::new(),
        }
    }

    /// An empty `Vec` with the capacity of the previous chunk's rows, to return the rows in
    /// (it saves re-faulting tens of MB of fresh pages per chunk). It holds no values.
    pub fn buffer(&mut self) -> Vec<f32> {
        let mut v = std::mem::take(&mut self.spare);
        v.clear();
        v
    }
}

/// The Gaussian sum mechanism: its parameters. See [`GaussianSum::release`].
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianSum {
    /// Which records.
    pub sampling: Sampling,
    /// One sum, or one per class.
    pub grouping: Grouping,
    /// The clip norm `C` (= the L2 sensitivity of the vector of sums).
    pub clip: ClipNorm,
    /// The noise multiplier σ: noise std σ·C per coordinate.
    pub sigma: NoiseMultiplier,
    /// Which sampler.
    pub noise: Noise,
    /// Records per call of the per-record function (bounds memory: chunk × dim f32).
    pub chunk: usize,
}

/// The output of a release: noisy group sums and what they cost.
#[derive(Debug, Clone)]
pub struct Released {
    /// `groups × dim` noisy sums.
    pub sums: Vec<Vec<f64>>,
    /// The event charged.
    pub event: DpEvent,
    /// Which sampler drew the noise ([`FLOAT_SAMPLER`] or [`EXACT_SAMPLER`]).
    pub sampler: &'static str,
    // Deliberately no realised sample size: it is private (a Poisson batch size is never
    // released, logged or divided by).
}

/// Errors of a release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MechError<E> {
    /// The mechanism refused or failed: not covered by the allowance
    /// (`dp-allowance-exceeded`, before any record is read), invalid parameters, the OS random
    /// source, the exact sampler, or a per-record function output of the wrong shape.
    #[error(transparent)]
    Dp(#[from] Error),
    /// The caller's per-record function failed.
    #[error("the per-record function failed: {0}")]
    Record(E),
    /// Cancellation was requested (the allowance stays charged).
    #[error("release cancelled")]
    Cancelled,
}

impl<E> MechError<E> {
    /// Map the per-record function's error.
    pub fn map_record<F>(self, f: impl FnOnce(E) -> F) -> MechError<F> {
        match self {
            MechError::Dp(e) => MechError::Dp(e),
            MechError::Record(e) => MechError::Record(f(e)),
            MechError::Cancelled => MechError::Cancelled,
        }
    }
}

/// A deliberately broken mechanism, for the power tests of the privacy audit (test builds
/// only: production has exactly one path).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flaw {
    /// Noise std multiplied by this factor (the event charged is unchanged).
    NoiseScale(f64),
    /// Rows are summed unclipped (non-finite rows still dropped).
    NoClip,
}

/// Which path a release takes: the sound one, or (test builds only) a flawed one.
#[derive(Debug, Clone, Copy)]
enum Path {
    Sound,
    #[cfg(test)]
    Flawed(Flaw),
}

impl GaussianSum {
    /// The event one release costs: `PoissonSampledGaussian { q, σ, steps: 1 }` or
    /// `Gaussian { σ, count: 1 }`.
    pub fn event(&self) -> DpEvent {
        match self.sampling {
            Sampling::Poisson(q) => DpEvent::poisson_gaussian(q.get(), self.sigma.get(), 1),
            Sampling::Everyone => DpEvent::gaussian(self.sigma.get(), 1),
        }
    }

    /// Release the noisy per-group sums of the clipped rows `f` computes.
    ///
    /// Steps: check the parameters; key the samplers from the OS; charge `allowance` for
    /// [`GaussianSum::event`] (refused: nothing is read); sample the records; call `f` on
    /// chunks of at most `chunk` records, each returning `rows × dim` f32 values; clip every
    /// row below `C` (non-finite rows contribute zero); sum the rows per group in f64; add
    /// `N(0, σ²C²)` per coordinate.
    ///
    /// # Privacy
    /// One Gaussian mechanism with L2 sensitivity `C` under add/remove-one-record (each record
    /// touches one group's sum by a row of norm below `C`), on a Poisson sample at rate `q`
    /// (event `PoissonSampledGaussian { q, σ, steps: 1 }`, Mironov, Talwar & Zhang 2019) or on
    /// every record (`Gaussian { σ, count: 1 }`). `f` must compute each row from its own record,
    /// its own draws from [`Batch::rng`] and public values only (module docs). The event is
    /// charged to `allowance` before any record is read.
    ///
    /// # Errors
    /// `dp-allowance-exceeded` (the allowance does not cover the event; nothing read),
    /// `dp-invalid-parameter` (`dim`, `chunk` or `ByClass(0)`), `dp-rng-failed`,
    /// `dp-label-out-of-range`, `dp-row-shape`, `dp-exact-failed`, [`MechError::Record`] from
    /// `f`, [`MechError::Cancelled`].
    ///
    /// # Panics
    /// Never.
    pub fn release<E>(
        &self,
        allowance: &mut Allowance,
        data: &Records<'_>,
        dim: usize,
        f: &(dyn Fn(&mut Batch<'_>) -> Result<Vec<f32>, E> + Sync),
        sink: Sink<'_>,
    ) -> Result<Released, MechError<E>> {
        self.run(Path::Sound, allowance, data, dim, f, sink)
    }

    /// [`GaussianSum::release`] through a deliberately broken path (test builds only), for the
    /// privacy audit's power tests. Charges the same event.
    #[cfg(test)]
    pub(crate) fn flawed_release<E>(
        &self,
        flaw: Flaw,
        allowance: &mut Allowance,
        data: &Records<'_>,
        dim: usize,
        f: &(dyn Fn(&mut Batch<'_>) -> Result<Vec<f32>, E> + Sync),
    ) -> Result<Released, MechError<E>> {
        self.run(
            Path::Flawed(flaw),
            allowance,
            data,
            dim,
            f,
            &crate::progress::silent,
        )
    }

    fn check(&self, dim: usize) -> Result<usize, Error> {
        let groups = self.grouping.groups();
        if groups == 0 {
            return Err(Error::invalid("class groups", 0.0, "at least 1"));
        }
        if dim == 0 {
            return Err(Error::invalid("release dimension", 0.0, "at least 1"));
        }
        if self.chunk == 0 {
            return Err(Error::invalid("records per chunk", 0.0, "at least 1"));
        }
        groups
            .checked_mul(dim)
            .ok_or_else(|| Error::invalid("release size", f64::INFINITY, "groups × dim in range"))
    }

    fn exact(&self, coords: usize) -> bool {
        match self.noise {
            Noise::Float => false,
            Noise::Exact => true,
            Noise::Auto { exact_max_coords } => coords <= exact_max_coords,
        }
    }

    fn run<E>(
        &self,
        path: Path,
        allowance: &mut Allowance,
        data: &Records<'_>,
        dim: usize,
        f: &(dyn Fn(&mut Batch<'_>) -> Result<Vec<f32>, E> + Sync),
        sink: Sink<'_>,
    ) -> Result<Released, MechError<E>> {
        // 1. Parameters and keys: nothing private yet.
        let coords = self.check(dim)?;
        let groups = self.grouping.groups();
        let exact = self.exact(coords);
        let mut sampler = match self.sampling {
            Sampling::Poisson(_) => Some(PoissonSampler::from_os().map_err(|_| Error::Rng)?),
            Sampling::Everyone => None,
        };
        let mut noise = if exact {
            None
        } else {
            Some(super::noise::SecureGaussian::from_os().map_err(|_| Error::Rng)?)
        };
        let mut rng = record_rng()?;
        // 2. Charge the allowance before any record is read (fail closed).
        if crate::progress::is_cancelled() {
            return Err(MechError::Cancelled);
        }
        let event = self.event();
        allowance.charge(&event)?;
        // 3. Sample.
        let n = data.len();
        let idx: Vec<usize> = match (self.sampling, sampler.as_mut()) {
            (Sampling::Poisson(q), Some(s)) => s.sample(n, q.get()),
            _ => (0..n).collect(),
        };
        // 4. Per chunk: the caller's rows, clipped, summed per group.
        let c = self.clip.get();
        let d = data.row_len();
        let mut sums = vec![vec![0f64; dim]; groups];
        let mut pixels: Vec<f32> = Vec::with_capacity(self.chunk.min(idx.len()) * d);
        let mut labels: Vec<u32> = Vec::with_capacity(self.chunk.min(idx.len()));
        let mut group_of: Vec<usize> = Vec::with_capacity(labels.capacity());
        // The previous chunk's row buffer, emptied, offered to `f` for reuse (fresh pages for
        // tens of MB of rows per chunk cost more than the clipping).
        let mut spare: Vec<f32> = Vec::new();
        // Audit-only runs: the raw rows (before clipping) of the canaries in this release's
        // sample, for the white-box observer (see [`Probe`]).
        let mut seen: Option<Vec<Option<Vec<f32>>>> = data
            .probe
            .filter(|p| p.captures(dim))
            .map(|p| vec![None; p.canaries.len()]);
        for part in idx.chunks(self.chunk) {
            if crate::progress::is_cancelled() {
                return Err(MechError::Cancelled);
            }
            gather(
                data,
                part,
                self.grouping,
                &mut pixels,
                &mut labels,
                &mut group_of,
            )?;
            spare.clear();
            let mut batch = Batch {
                pixels: &pixels,
                labels: &labels,
                rng: &mut rng,
                spare: std::mem::take(&mut spare),
            };
            let rows = f(&mut batch).map_err(MechError::Record)?;
            if rows.len() != part.len() * dim {
                return Err(Error::RowShape {
                    expected: part.len() * dim,
                    got: rows.len(),
                }
                .into());
            }
            if let (Some(p), Some(seen)) = (data.probe, seen.as_mut()) {
                for (t, &i) in part.iter().enumerate() {
                    if let Some(j) = p.canary_of(i) {
                        seen[j] = Some(rows[t * dim..(t + 1) * dim].to_vec());
                    }
                }
            }
            let factors = clip_factors(&rows, dim, c, path);
            add_clipped_rows(&mut sums, &rows, dim, &group_of, &factors);
            spare = rows;
            sink(Event::Advance(part.len() as u64));
        }
        // 5. Noise: N(0, σ²C²) per coordinate.
        let scale = match path {
            Path::Sound => 1.0,
            #[cfg(test)]
            Path::Flawed(Flaw::NoiseScale(k)) => k,
            #[cfg(test)]
            Path::Flawed(Flaw::NoClip) => 1.0,
        };
        let sigma = self.sigma.get() * scale;
        let sampler_name = match noise.as_mut() {
            None => {
                let flat: Vec<f64> = sums.concat();
                let noisy = super::exact::gaussian_release(&flat, c, sigma)?;
                for (s, v) in sums.iter_mut().zip(noisy.chunks(dim)) {
                    s.copy_from_slice(v);
                }
                EXACT_SAMPLER
            }
            Some(g) => {
                for s in sums.iter_mut() {
                    g.add_noise_f64(s, sigma * c);
                }
                FLOAT_SAMPLER
            }
        };
        // 6. Audit-only runs: the white-box observer scores its canaries against the release
        //    (post-processing of the noisy sums).
        if let Some(p) = data.probe {
            p.observe(self, dim, f, &sums, seen.as_deref())?;
        }
        Ok(Released {
            sums,
            event,
            sampler: sampler_name,
        })
    }
}

/// The privacy audit's white-box observer (`retort privacy audit`, audit-only datasets): the
/// canaries it planted and, per canary, its white-box score over every release of the run.
///
/// After each release's noise is added, the observer forms every canary's row `c_j`, clipped
/// as the sound mechanism clips:
/// - **the draws the release used** (the default): the raw row the release computed for a
///   canary that was in its sample (its augmentation draw included), and for every other
///   canary one fresh draw of the release's per-record function (OS-keyed). This is the
///   attacker of Steinke et al.'s white-box setting, who knows each canary's gradient: think
///   of a table holding one draw per canary and release, filled before the coin flips and
///   independent of them; a canary in the sample uses its entry, and the attacker reads the
///   whole table. The table is independent of the inclusions (every entry is one draw of the
///   same per-record function of the canary), and conditioned on it the release is still the
///   Gaussian mechanism with sensitivity `C` (the module's coupling argument), so the one-run
///   bound stays valid; rows are clipped by the observer, never taken after the release's
///   clipping, so a flawed clip cannot mark the included canaries;
/// - when a release's canary rows are too many to keep (`canaries × dim` above
///   [`GRAM_MAX_VALUES`]): the mean over [`PROBE_DRAWS`] fresh draws for every canary (the
///   expected row; the observer then knows no draw of the release).
///
/// The released sum of the canaries' group is then modelled as `S = Σ_j b_j c_j + noise`
/// with `b_j ∈ {0, 1}` the unknown inclusions; across all releases the observer accumulates
/// the normal equations `G = Σ CᵀC`, `h = Σ CᵀS` and scores every canary by the ridge
/// estimate `b̂ = ½ + (G + 4σ²C²·I)⁻¹ (h − G·½)` (the posterior mean under a prior of
/// variance ¼ around ½): canaries whose rows are alike are told apart jointly rather than
/// each against the others' sum. When a release's canary rows are too many to keep
/// (`canaries × dim` above [`GRAM_MAX_VALUES`]), every canary is scored instead by its row with
/// the mean canary direction projected out, against the release: `Σ <d_j, S> / |d_j|`.
///
/// # Privacy
/// Reads only released (noisy) sums and the canaries, which the auditor made; it exists only
/// in audit-only runs ([`Records::probed`]) and never changes what is released.
pub(crate) struct Probe {
    canaries: Images,
    /// Records before the first planted canary: record `first + t` is canary `planted[t]`.
    first: usize,
    /// The canaries planted among the records, in record order (used only to hand the
    /// observer the release's own draw of each; see the type's docs).
    planted: Vec<usize>,
    acc: std::sync::Mutex<ProbeAcc>,
}

/// Draws of the record randomness (augmentations) the observer averages each canary's clipped
/// row over.
pub(crate) const PROBE_DRAWS: usize = 4;

/// Canary rows (`canaries × dim` values) above which a release is scored by projection only.
pub(crate) const GRAM_MAX_VALUES: usize = 48 << 20;

#[derive(Debug, Clone)]
struct ProbeAcc {
    /// Projection scores (always kept).
    proj: Vec<f64>,
    /// `Σ CᵀC` (canaries × canaries), `None` once a release was too large to keep.
    gram: Option<Vec<f64>>,
    /// `Σ CᵀS`.
    h: Vec<f64>,
    /// Noise variance per coordinate of the releases (σ²C², the largest seen).
    noise_var: f64,
    releases: u64,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("canaries", &self.canaries.len())
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// An observer of `canaries` (with their labels), scores at zero; record `first + t` of
    /// the probed records is canary `planted[t]`, and no other record is a canary.
    pub(crate) fn new(canaries: Images, first: usize, planted: Vec<usize>) -> Probe {
        let n = canaries.len();
        Probe {
            canaries,
            first,
            planted,
            acc: std::sync::Mutex::new(ProbeAcc {
                proj: vec![0.0; n],
                gram: Some(vec![0.0; n * n]),
                h: vec![0.0; n],
                noise_var: 0.0,
                releases: 0,
            }),
        }
    }

    /// Whether a release of `dim`-long rows keeps the canaries' rows (Gram matrix and the
    /// release's own draws).
    fn captures(&self, dim: usize) -> bool {
        self.canaries.len().saturating_mul(dim) <= GRAM_MAX_VALUES
    }

    /// The canary record `i` of the probed records is, if any.
    fn canary_of(&self, i: usize) -> Option<usize> {
        i.checked_sub(self.first)
            .and_then(|t| self.planted.get(t).copied())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeAcc> {
        match self.acc.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The white-box score of every canary and how many releases were observed: the joint
    /// ridge estimate when every release could be kept, else the projection scores.
    pub(crate) fn scores(&self) -> (Vec<f64>, u64) {
        let a = self.lock().clone();
        let n = a.proj.len();
        let joint = a
            .gram
            .as_ref()
            .filter(|_| a.releases > 0)
            .and_then(|g| ridge_estimate(g, &a.h, n, a.noise_var));
        (joint.unwrap_or(a.proj), a.releases)
    }

    fn observe<E>(
        &self,
        m: &GaussianSum,
        dim: usize,
        f: &(dyn Fn(&mut Batch<'_>) -> Result<Vec<f32>, E> + Sync),
        sums: &[Vec<f64>],
        seen: Option<&[Option<Vec<f32>>]>,
    ) -> Result<(), MechError<E>> {
        let c = m.clip.get();
        let mut rng = record_rng()?;
        let n = self.canaries.len();
        let keep = self.captures(dim);
        // One fresh draw where the release's own draws are known, else the expected row.
        let draws = if seen.is_some() { 1 } else { PROBE_DRAWS };
        let mut kept: Vec<f32> = Vec::with_capacity(if keep { n * dim } else { 0 });
        let mut kept_groups: Vec<usize> = Vec::with_capacity(n);
        let mut contrib = vec![0f64; n];
        let mut h = vec![0f64; n];
        let mut u: Option<(Vec<f64>, Vec<f64>)> = None;
        let (mut pixels, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
        let idx: Vec<usize> = (0..n).collect();
        for part in idx.chunks(m.chunk) {
            gather(
                &Records::new(&self.canaries),
                part,
                m.grouping,
                &mut pixels,
                &mut labels,
                &mut groups,
            )?;
            // Each canary's row: the release's own draw where it had one, else fresh draws of
            // the record randomness (one, or the mean of PROBE_DRAWS when the release's draws
            // are not kept), clipped as the sound mechanism clips.
            let mut rows = vec![0f32; part.len() * dim];
            for _ in 0..draws {
                let mut batch = Batch {
                    pixels: &pixels,
                    labels: &labels,
                    rng: &mut rng,
                    spare: Vec::new(),
                };
                let mut draw = f(&mut batch).map_err(MechError::Record)?;
                if draw.len() != part.len() * dim {
                    return Err(Error::RowShape {
                        expected: part.len() * dim,
                        got: draw.len(),
                    }
                    .into());
                }
                if let Some(seen) = seen {
                    for (t, &j) in part.iter().enumerate() {
                        if let Some(row) = &seen[j] {
                            draw[t * dim..(t + 1) * dim].copy_from_slice(row);
                        }
                    }
                }
                let factors = clip_factors(&draw, dim, c, Path::Sound);
                rows.par_chunks_mut(dim)
                    .zip(draw.par_chunks(dim))
                    .zip(factors.par_iter())
                    .for_each(|((acc, row), &fa)| {
                        for (a, &x) in acc.iter_mut().zip(row) {
                            *a += clip::scaled(x, fa) / draws as f32;
                        }
                    });
            }
            let (uv, us) = u.get_or_insert_with(|| {
                let mut mean = vec![0f64; dim];
                for row in rows.chunks(dim) {
                    for (a, &x) in mean.iter_mut().zip(row) {
                        *a += x as f64;
                    }
                }
                let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm > 0.0 {
                    mean.iter_mut().for_each(|x| *x /= norm);
                }
                let us = sums.iter().map(|s| dot(&mean, s)).collect();
                (mean, us)
            });
            let part_scores: Vec<(f64, f64)> = rows
                .par_chunks(dim)
                .zip(groups.par_iter())
                .map(|(row, &g)| {
                    let (mut ds, mut du, mut nn) = (0f64, 0f64, 0f64);
                    for ((&x, &s), &w) in row.iter().zip(&sums[g]).zip(uv.iter()) {
                        let x = x as f64;
                        ds += x * s;
                        du += x * w;
                        nn += x * x;
                    }
                    let dn = (nn - du * du).max(0.0).sqrt();
                    let proj = if dn > 1e-12 {
                        (ds - du * us[g]) / dn
                    } else {
                        0.0
                    };
                    (proj, ds)
                })
                .collect();
            for (&k, (p, ds)) in part.iter().zip(part_scores) {
                contrib[k] = p;
                h[k] = ds;
            }
            if keep {
                kept.extend_from_slice(&rows);
                kept_groups.extend_from_slice(&groups);
            }
        }
        // Gram matrix of this release's canary rows (within a group only).
        let gram: Option<Vec<f64>> = keep.then(|| {
            let mut g = vec![0f64; n * n];
            g.par_chunks_mut(n).enumerate().for_each(|(j, out)| {
                let rj = &kept[j * dim..(j + 1) * dim];
                for (k, o) in out.iter_mut().enumerate() {
                    if kept_groups[k] == kept_groups[j] {
                        let rk = &kept[k * dim..(k + 1) * dim];
                        *o = rj.iter().zip(rk).map(|(&a, &b)| a as f64 * b as f64).sum();
                    }
                }
            });
            g
        });
        let mut a = self.lock();
        a.proj.iter_mut().zip(&contrib).for_each(|(x, y)| *x += y);
        a.h.iter_mut().zip(&h).for_each(|(x, y)| *x += y);
        match (a.gram.as_mut(), gram) {
            (Some(acc), Some(g)) => acc.iter_mut().zip(&g).for_each(|(x, y)| *x += y),
            _ => a.gram = None,
        }
        let var = (m.sigma.get() * c).powi(2);
        a.noise_var = a.noise_var.max(var);
        a.releases += 1;
        Ok(())
    }
}

/// `½ + (G + λI)⁻¹ (h − G·½)` with `λ = 4·noise_var` (at least 10⁻⁹ of the mean diagonal), by
/// Cholesky; `None` if the matrix is not positive definite (it always is with λ > 0, up to
/// rounding).
fn ridge_estimate(g: &[f64], h: &[f64], n: usize, noise_var: f64) -> Option<Vec<f64>> {
    let mean_diag = (0..n).map(|i| g[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let lambda = (4.0 * noise_var).max(1e-9 * mean_diag).max(1e-300);
    let mut l = g.to_vec();
    for i in 0..n {
        l[i * n + i] += lambda;
    }
    // In-place Cholesky: lower triangle of `l` becomes L with L·Lᵀ = G + λI.
    for j in 0..n {
        let mut d = l[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        let (head, tail) = l.split_at_mut((j + 1) * n);
        let lj = &head[j * n..j * n + j];
        tail.par_chunks_mut(n).for_each(|row| {
            let mut v = row[j];
            for k in 0..j {
                v -= row[k] * lj[k];
            }
            row[j] = v / d;
        });
    }
    // Right-hand side h − G·½.
    let mut y: Vec<f64> = (0..n)
        .map(|i| h[i] - 0.5 * g[i * n..(i + 1) * n].iter().sum::<f64>())
        .collect();
    for i in 0..n {
        let mut v = y[i];
        for k in 0..i {
            v -= l[i * n + k] * y[k];
        }
        y[i] = v / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = y[i];
        for k in i + 1..n {
            v -= l[k * n + i] * y[k];
        }
        y[i] = v / l[i * n + i];
    }
    Some(y.into_iter().map(|x| 0.5 + x).collect())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ChaCha20 keyed with 32 bytes from the OS (record-level randomness of one release).
fn record_rng() -> Result<ChaCha20Rng, Error> {
    let seed =
        zeroize::Zeroizing::new(crate::keys::try_random_bytes::<32>().map_err(|_| Error::Rng)?);
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// The clip factor of every `dim`-long row of `rows` (in parallel over rows): the factor
/// [`clip::clip_in_place`] would apply (0 for a non-finite row).
fn clip_factors(rows: &[f32], dim: usize, c: f64, path: Path) -> Vec<f64> {
    rows.par_chunks(dim)
        .map(|row| {
            let n = clip::norm(row);
            match path {
                Path::Sound => clip::clip_factor(n, c),
                #[cfg(test)]
                Path::Flawed(Flaw::NoiseScale(_)) => clip::clip_factor(n, c),
                #[cfg(test)]
                Path::Flawed(Flaw::NoClip) => {
                    if n.is_finite() {
                        1.0
                    } else {
                        0.0
                    }
                }
            }
        })
        .collect()
}

/// Coordinates per parallel task of [`add_clipped_rows`].
const BLOCK: usize = 8192;

/// Add every row, clipped by its factor, into its group's f64 sum, in parallel over blocks of
/// coordinates (each block adds the rows in order, so the result does not depend on
/// scheduling). A row enters as the f32 values [`clip::clip_in_place`] would store
/// ([`clip::scaled`]): the clipped row is never written back, saving a pass over the chunk.
fn add_clipped_rows(
    sums: &mut [Vec<f64>],
    rows: &[f32],
    dim: usize,
    group_of: &[usize],
    factors: &[f64],
) {
    for (g, sum) in sums.iter_mut().enumerate() {
        let members: Vec<(usize, f64)> = (0..group_of.len())
            .filter(|&r| group_of[r] == g && factors[r] != 0.0)
            .map(|r| (r, factors[r]))
            .collect();
        if members.is_empty() {
            continue;
        }
        sum.par_chunks_mut(BLOCK).enumerate().for_each(|(b, s)| {
            let lo = b * BLOCK;
            for &(r, f) in &members {
                let row = &rows[r * dim + lo..r * dim + lo + s.len()];
                if f == 1.0 {
                    s.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
                } else {
                    s.iter_mut()
                        .zip(row)
                        .for_each(|(a, &x)| *a += clip::scaled(x, f) as f64);
                }
            }
        });
    }
}

/// Gather records `part` of `images` for the per-record function: pixels as f32 in [0, 1],
/// labels, and each record's group under `grouping` (a label outside `ByClass(k)` is an error).
fn gather(
    data: &Records<'_>,
    part: &[usize],
    grouping: Grouping,
    pixels: &mut Vec<f32>,
    labels: &mut Vec<u32>,
    groups: &mut Vec<usize>,
) -> Result<(), Error> {
    let images = data.images;
    pixels.clear();
    labels.clear();
    groups.clear();
    for &i in part {
        let label = images.labels[i];
        groups.push(match grouping {
            Grouping::Single => 0,
            Grouping::ByClass(k) if (label as usize) < k => label as usize,
            Grouping::ByClass(k) => return Err(Error::LabelOutOfRange { label, groups: k }),
        });
        labels.push(label);
        match data.features {
            Some(f) => pixels.extend_from_slice(&f.values[i * f.dim..(i + 1) * f.dim]),
            None => pixels.extend(images.image(i).iter().map(|&v| v as f32 / 255.0)),
        }
    }
    Ok(())
}

/// What a reservation allows a run to spend: the reserved events as (q, σ) atoms with counts.
///
/// # Privacy
/// Built only inside the crate, by the run lifecycle from the events the ledger reserved
/// ([`Allowance::new`] is `pub(crate)`), and not `Clone`: a release charges it before reading
/// a record and is refused (`dp-allowance-exceeded`) when the reservation does not cover its
/// event, so a run can never spend more than the ledger charged. Atoms merge as the
/// accountants do: `Gaussian { σ }` and `PoissonSampledGaussian { q: 1, σ }` are the same
/// mechanism.
#[derive(Debug)]
pub struct Allowance {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    q: f64,
    sigma: f64,
    /// Reported as a Poisson-sampled event (else as a plain Gaussian).
    poisson: bool,
    reserved: u64,
    spent: u64,
}

impl Allowance {
    /// The allowance of a reservation of `reserved`.
    ///
    /// # Errors
    /// `dp-invalid-parameter`, `dp-unsupported-event` for an invalid event.
    pub(crate) fn new(reserved: &[DpEvent]) -> Result<Allowance, Error> {
        let mut a = Allowance {
            entries: Vec::new(),
        };
        for e in reserved {
            e.validate()?;
            a.add(e);
        }
        Ok(a)
    }

    fn add(&mut self, e: &DpEvent) {
        let (q, sigma, poisson, times) = match e {
            DpEvent::Composed { events } => {
                events.iter().for_each(|x| self.add(x));
                return;
            }
            DpEvent::PoissonSampledGaussian { q, sigma, steps } => (*q, *sigma, true, *steps),
            DpEvent::Gaussian { sigma, count } => (1.0, *sigma, false, *count),
        };
        if times == 0 {
            return;
        }
        match self
            .entries
            .iter_mut()
            .find(|x| x.q == q && x.sigma == sigma)
        {
            Some(x) => x.reserved = x.reserved.saturating_add(times),
            None => self.entries.push(Entry {
                q,
                sigma,
                poisson,
                reserved: times,
                spent: 0,
            }),
        }
    }

    /// Spend `event`, or refuse without spending anything.
    ///
    /// # Errors
    /// `dp-allowance-exceeded`; `dp-invalid-parameter` for an invalid event.
    pub(crate) fn charge(&mut self, event: &DpEvent) -> Result<(), Error> {
        let need = Allowance::new(std::slice::from_ref(event))?;
        let refuse = |a: &Allowance| Error::AllowanceExceeded {
            requested: event.clone(),
            unspent: a.unspent(),
        };
        let mut at = Vec::with_capacity(need.entries.len());
        for n in &need.entries {
            match self.entries.iter().position(|x| {
                x.q == n.q && x.sigma == n.sigma && x.reserved - x.spent >= n.reserved
            }) {
                Some(i) => at.push((i, n.reserved)),
                None => return Err(refuse(self)),
            }
        }
        for (i, times) in at {
            self.entries[i].spent += times;
        }
        Ok(())
    }

    fn events(&self, count: impl Fn(&Entry) -> u64) -> Vec<DpEvent> {
        self.entries
            .iter()
            .filter(|e| count(e) > 0)
            .map(|e| {
                if e.poisson {
                    DpEvent::poisson_gaussian(e.q, e.sigma, count(e))
                } else {
                    DpEvent::gaussian(e.sigma, count(e))
                }
            })
            .collect()
    }

    /// What was spent so far.
    pub fn spent(&self) -> Vec<DpEvent> {
        self.events(|e| e.spent)
    }

    /// What is left.
    pub fn unspent(&self) -> Vec<DpEvent> {
        self.events(|e| e.reserved - e.spent)
    }

    /// True once everything reserved has been spent.
    pub fn is_exhausted(&self) -> bool {
        self.entries.iter().all(|e| e.spent == e.reserved)
    }
}

#[cfg(test)]
mod tests;
