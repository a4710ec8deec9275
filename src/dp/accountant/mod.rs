//! Accountants: pure functions from a list of [`DpEvent`]s to ε at a given δ.
//!
//! Two sound upper bounds are computed, and the reported ε is the smaller:
//! - [`rdp`]: Rényi DP (Mironov et al. 2019), dp_accounting's orders, improved conversion.
//!   Closed form, always conservative, typically 5–20 % above the PLD value.
//! - [`pld`]: privacy loss distribution with a dominating ("connect the dots") discretisation and
//!   FFT composition. Tight up to the grid.
//!
//! # Privacy
//! Add/remove-one neighbouring relation. Both accountants compose over adaptively chosen
//! mechanisms, so applying them to all events of all runs of a dataset (the ledger) is valid.

pub mod pld;
pub mod rdp;

use super::event::{atoms_of, DpEvent};
use super::{Delta, Error};

/// Name of the RDP accountant in reports.
pub const RDP: &str = "rdp";
/// Name of the PLD accountant in reports.
pub const PLD: &str = "pld";

/// ε by each accountant and the one reported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpsilonReport {
    /// The reported ε: min(RDP, PLD), both sound.
    pub epsilon: f64,
    /// ε by the RDP accountant.
    pub epsilon_rdp: f64,
    /// ε by the PLD accountant (+∞ if it could not be computed).
    pub epsilon_pld: f64,
    /// Which accountant gave the reported ε (`"pld"` or `"rdp"`).
    pub accountant: &'static str,
    /// The RDP order that gave `epsilon_rdp`.
    #[serde(skip)]
    pub rdp_order: f64,
}

/// ε of the composition of `events` at `delta`, by both accountants.
///
/// # Privacy
/// Add/remove-one relation; valid for adaptive composition of the events.
///
/// # Errors
/// `dp-invalid-parameter` for a bad δ or event parameter.
///
/// # Panics
/// Never.
pub fn epsilon(events: &[DpEvent], delta: f64) -> Result<EpsilonReport, Error> {
    Delta::new(delta)?;
    let atoms = atoms_of(events)?;
    let (epsilon_rdp, rdp_order) = rdp::epsilon(&atoms, delta)?;
    let epsilon_pld = match pld::epsilon(&atoms, delta) {
        Ok(e) => e,
        Err(Error::Accounting(_)) => f64::INFINITY,
        Err(e) => return Err(e),
    };
    let (epsilon, accountant) = if epsilon_pld <= epsilon_rdp {
        (epsilon_pld, PLD)
    } else {
        (epsilon_rdp, RDP)
    };
    Ok(EpsilonReport {
        epsilon,
        epsilon_rdp,
        epsilon_pld,
        accountant,
        rdp_order,
    })
}

/// ε by the RDP accountant only (fast; used for brackets and sanity checks).
///
/// # Errors
/// `dp-invalid-parameter`.
pub fn epsilon_rdp(events: &[DpEvent], delta: f64) -> Result<f64, Error> {
    let atoms = atoms_of(events)?;
    Ok(rdp::epsilon(&atoms, delta)?.0)
}

/// ε by the PLD accountant only.
///
/// # Errors
/// `dp-invalid-parameter`, `dp-accounting-failed`.
pub fn epsilon_pld(events: &[DpEvent], delta: f64) -> Result<f64, Error> {
    let atoms = atoms_of(events)?;
    pld::epsilon(&atoms, delta)
}

/// The plain sum of per-event ε (what naive composition would claim), for display beside the
/// accountant's total.
///
/// # Errors
/// As [`epsilon`].
pub fn plain_sum(per_run: &[Vec<DpEvent>], delta: f64) -> Result<f64, Error> {
    per_run
        .iter()
        .map(|ev| epsilon(ev, delta).map(|r| r.epsilon))
        .sum()
}

#[cfg(test)]
mod tests;
