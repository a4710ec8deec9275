//! One-run empirical privacy auditing: turn membership guesses on randomly included canaries
//! into a statistical **lower bound** on ε (Steinke, Nasr & Jagielski, "Privacy Auditing with
//! One (1) Training Run", NeurIPS 2023), plus the usual attack summaries (AUROC, TPR at a
//! fixed FPR).
//!
//! ```text
//! m canaries, each in the input with probability ½ (OS-keyed) ─▶ one run ─▶ a score per canary
//!   ─▶ guess "in" for the k highest, "out" for the k lowest (k from a grid fixed in advance)
//!   ─▶ v correct of r = 2k guesses ─▶ largest ε whose p-value for ≥ v correct is below 1 − confidence
//! ```
//!
//! # What the bound means
//! If the mechanism were (ε, δ)-DP, seeing `v` or more correct guesses would have probability at
//! most [`p_value`]`(m, r, v, ε, δ)`; the largest ε for which that is below `1 − confidence`
//! is *rejected* at that confidence. So "ε_lb = 2" reads: "with 95 % confidence, the run is not
//! (2, δ)-DP". A lower bound far below the claimed ε is **not** evidence of privacy (a weak
//! attack shows little); a lower bound **above** the claimed ε is evidence of a bug. With `m`
//! canaries no audit can show more than about `ln(m / ln(1/β))` (all guesses right).
//!
//! The guess counts are fixed before the scores are seen: a small grid of `k` ([`K_GRID`]) is
//! tried and the confidence is split evenly among the choices (a union bound), so reporting the
//! best `k` is still valid at the stated confidence.

/// Fractions of the canaries guessed on each side (k₊ = k₋ = round(fraction × m)), fixed in
/// advance; [`audit`] applies a union bound over them.
pub const K_GRID: [f64; 5] = [0.02, 0.05, 0.1, 0.25, 0.5];

/// Natural log of the binomial probability `P[Binomial(r, q) = k]`, with `ln q` and
/// `ln(1 − q)` passed in (they are computed stably from ε).
fn ln_pmf(r: u64, k: u64, ln_q: f64, ln_1mq: f64) -> f64 {
    let (r, k) = (r as f64, k as f64);
    libm::lgamma(r + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(r - k + 1.0)
        + k * ln_q
        + (r - k) * ln_1mq
}

/// The p-value of `v` or more correct guesses out of `r` under the null hypothesis that the
/// mechanism is (ε, δ)-DP, with `m` canaries each included with probability ½.
///
/// Steinke, Nasr & Jagielski 2023, **Theorem 5.2** (the main theorem for approximate DP, the
/// form their Appendix D computes): with `q = e^ε / (1 + e^ε)` (the accuracy of ε-randomised
/// response) and `f(v) = P[Binomial(r, q) ≥ v]`,
///
/// `P[W ≥ v] ≤ f(v) + 2·m·δ · max_{1 ≤ i ≤ v} (f(v − i) − f(v)) / i`,
///
/// where `f(v − i) − f(v) = P[v − i ≤ Binomial(r, q) < v]`. The result is capped at 1.
///
/// # Panics
/// Never; arguments out of range (`v > r`, `r > m`, negative ε) give 1 (nothing rejected).
pub fn p_value(m: u64, r: u64, v: u64, epsilon: f64, delta: f64) -> f64 {
    if v > r || r > m || epsilon.is_nan() || epsilon < 0.0 || !(0.0..=1.0).contains(&delta) {
        return 1.0;
    }
    if v == 0 {
        return 1.0;
    }
    // q = 1 / (1 + e^-ε); ln q and ln(1 - q) without cancellation for large ε.
    let ln_q = -(-epsilon).exp().ln_1p();
    let ln_1mq = -epsilon - (-epsilon).exp().ln_1p();
    let pmf = |k: u64| ln_pmf(r, k, ln_q, ln_1mq).exp();
    let tail: f64 = (v..=r).map(pmf).sum();
    let mut alpha = 0.0f64;
    if delta > 0.0 {
        let mut below = 0.0;
        for i in 1..=v {
            below += pmf(v - i);
            alpha = alpha.max(below / i as f64);
        }
    }
    (tail + alpha * delta * 2.0 * m as f64).min(1.0)
}

/// The largest ε at which `v` correct of `r` guesses over `m` canaries rejects (ε, δ)-DP with
/// the given `confidence` (e.g. 0.95): the one-run lower bound of [`p_value`], found by
/// bisection (to 10⁻⁶). 0 when nothing is rejected.
pub fn epsilon_lower_bound(m: u64, r: u64, v: u64, delta: f64, confidence: f64) -> f64 {
    let beta = 1.0 - confidence;
    if !(beta > 0.0 && beta < 1.0) || p_value(m, r, v, 0.0, delta) > beta {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 64.0f64);
    if p_value(m, r, v, hi, delta) <= beta {
        return hi;
    }
    while hi - lo > 1e-6 {
        let mid = 0.5 * (lo + hi);
        if p_value(m, r, v, mid, delta) <= beta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The result of auditing one score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreAudit {
    /// The lower bound on ε (0 when nothing is rejected).
    pub epsilon_lower_bound: f64,
    /// Guesses made at the best `k` of the grid (2k: k "in", k "out").
    pub guesses: u64,
    /// Correct guesses among them.
    pub correct: u64,
    /// Area under the ROC curve of the score for membership (0.5 = chance).
    pub auroc: f64,
    /// True-positive rate at a false-positive rate of at most 1 %.
    pub tpr_at_1pct_fpr: f64,
}

/// Audit one score: `scores[j]` for canary `j` (higher = more likely included),
/// `included[j]` whether it was in the input. Guesses the `k` highest "in" and the `k`
/// lowest "out" for each `k` of [`K_GRID`] (fixed in advance), bounds ε for each at
/// confidence `1 − (1 − confidence)/|grid|` (a union bound, so the best is valid at
/// `confidence`) and keeps the best. Ties are broken by canary index, which does not depend
/// on membership.
///
/// # Panics
/// Never (lengths that differ use the shorter).
pub fn audit(scores: &[f64], included: &[bool], delta: f64, confidence: f64) -> ScoreAudit {
    let m = scores.len().min(included.len());
    let (scores, included) = (&scores[..m], &included[..m]);
    if m < 2 {
        return ScoreAudit {
            epsilon_lower_bound: 0.0,
            guesses: 0,
            correct: 0,
            auroc: 0.5,
            tpr_at_1pct_fpr: 0.0,
        };
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let ks: Vec<usize> = {
        let mut v: Vec<usize> = K_GRID
            .iter()
            .map(|f| ((f * m as f64).round() as usize).clamp(1, m / 2))
            .collect();
        v.dedup();
        v
    };
    let each = 1.0 - (1.0 - confidence) / ks.len().max(1) as f64;
    let mut best = (0.0f64, 0u64, 0u64);
    for &k in &ks {
        let top = order[..k].iter().filter(|&&j| included[j]).count();
        let bottom = order[m - k..].iter().filter(|&&j| !included[j]).count();
        let (r, v) = (2 * k as u64, (top + bottom) as u64);
        let e = epsilon_lower_bound(m as u64, r, v, delta, each);
        if e > best.0 || best.1 == 0 {
            best = (e, r, v);
        }
    }
    ScoreAudit {
        epsilon_lower_bound: best.0,
        guesses: best.1,
        correct: best.2,
        auroc: auroc(scores, included),
        tpr_at_1pct_fpr: tpr_at_fpr(scores, included, 0.01),
    }
}

/// Area under the ROC curve (Mann–Whitney, ties counted ½); 0.5 when one side is empty.
pub fn auroc(scores: &[f64], included: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len().min(included.len())).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0f64, 0u64);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean = (i + j + 2) as f64 / 2.0;
        for &t in &idx[i..=j] {
            if included[t] {
                rank_sum += mean;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = idx.len() as u64 - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    let (p, n) = (pos as f64, neg as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// The fraction of included canaries scored strictly above a threshold that at most
/// `fpr × (excluded canaries)` excluded ones exceed. 0 when a side is empty.
pub fn tpr_at_fpr(scores: &[f64], included: &[bool], fpr: f64) -> f64 {
    let n = scores.len().min(included.len());
    let mut neg: Vec<f64> = (0..n)
        .filter(|&j| !included[j])
        .map(|j| scores[j])
        .collect();
    let pos: Vec<f64> = (0..n).filter(|&j| included[j]).map(|j| scores[j]).collect();
    if neg.is_empty() || pos.is_empty() {
        return 0.0;
    }
    neg.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * neg.len() as f64).floor() as usize;
    let threshold = neg[allowed.min(neg.len() - 1)];
    pos.iter().filter(|&&s| s > threshold).count() as f64 / pos.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: with δ = 0 the p-value is the binomial tail.
    #[test]
    fn p_value_is_the_binomial_tail_without_delta() {
        // r = v = 1: P[Bin(1, q) >= 1] = q = e^ε / (1 + e^ε).
        let e: f64 = 1.3;
        assert!((p_value(10, 1, 1, e, 0.0) - e.exp() / (1.0 + e.exp())).abs() < 1e-12);
        // ε = 0: q = ½; P[Bin(4, ½) >= 3] = 5/16.
        assert!((p_value(10, 4, 3, 0.0, 0.0) - 5.0 / 16.0).abs() < 1e-12);
        // The δ term only adds.
        assert!(p_value(1000, 100, 80, 1.0, 1e-5) > p_value(1000, 100, 80, 1.0, 0.0));
        assert_eq!(p_value(10, 4, 5, 1.0, 0.0), 1.0);
    }

    /// The bound sits where the p-value crosses 1 − confidence, and grows with correct guesses.
    #[test]
    fn lower_bound_crosses_the_confidence_level() {
        let (m, r, d) = (1000, 200, 1e-5);
        let e = epsilon_lower_bound(m, r, 180, d, 0.95);
        assert!(e > 0.5 && e < 3.0, "{e}");
        assert!(p_value(m, r, 180, e, d) <= 0.05);
        assert!(p_value(m, r, 180, e + 1e-3, d) > 0.05);
        assert!(epsilon_lower_bound(m, r, 190, d, 0.95) > e);
        // Chance-level accuracy rejects nothing.
        assert_eq!(epsilon_lower_bound(m, r, 100, d, 0.95), 0.0);
        // All 1000 right: about ln(1000 / ln 20) ≈ 5.8, the ceiling of 1,000 canaries.
        let top = epsilon_lower_bound(1000, 1000, 1000, 0.0, 0.95);
        assert!((top - (1000.0 / 20f64.ln()).ln()).abs() < 0.1, "{top}");
    }

    #[test]
    fn auroc_and_tpr_known_answers() {
        let s = [0.1, 0.3, 0.35, 0.8];
        let inc = [false, true, false, true];
        assert!((auroc(&s, &inc) - 0.75).abs() < 1e-12);
        assert_eq!(auroc(&[1.0, 1.0], &[true, false]), 0.5);
        let s: Vec<f64> = (0..200).map(|i| i as f64).collect();
        let inc: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        assert_eq!(auroc(&s, &inc), 1.0);
        assert_eq!(tpr_at_fpr(&s, &inc, 0.01), 1.0);
        let flipped: Vec<bool> = inc.iter().map(|b| !b).collect();
        assert_eq!(tpr_at_fpr(&s, &flipped, 0.01), 0.0);
    }

    /// Perfect separation gives a bound; random scores (independent of membership) do not.
    #[test]
    fn audit_of_separated_and_random_scores() {
        let inc: Vec<bool> = (0..500).map(|i| (i * 7919) % 3 == 0).collect();
        let s: Vec<f64> = inc.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
        let a = audit(&s, &inc, 1e-5, 0.95);
        assert!(a.epsilon_lower_bound > 2.0, "{a:?}");
        assert_eq!(a.correct, a.guesses);
        let noise: Vec<f64> = (0..500)
            .map(|i| ((i * 2654435761u64) % 1000) as f64)
            .collect();
        let b = audit(&noise, &inc, 1e-5, 0.95);
        assert!(b.epsilon_lower_bound < 0.5, "{b:?}");
    }
}
