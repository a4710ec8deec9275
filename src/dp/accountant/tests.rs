//! Known-answer tests against `tests/data/accounting.json` (dp_accounting / Opacus) and property
//! tests of the accountants.

use super::*;
use crate::dp::calibrate;
use proptest::prelude::*;

fn reference() -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/accounting.json");
    serde_json::from_slice(&std::fs::read(p).expect("tests/data/accounting.json")).unwrap()
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

#[test]
fn rdp_curves_match_dp_accounting() {
    let r = reference();
    for c in r["rdp_curves"].as_array().unwrap() {
        let (q, s) = (f(c, "q"), f(c, "sigma"));
        for (a, want) in c["orders"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["rdp_per_step"].as_array().unwrap())
        {
            let a = a.as_f64().unwrap();
            let got = rdp::rdp_subsampled_gaussian(q, s, a);
            let Some(want) = want.as_f64() else {
                // dp_accounting's series failed to converge and it excluded this order; ours
                // converges.
                assert!(got.is_finite() && got > 0.0, "q={q} s={s} order={a}: {got}");
                continue;
            };
            let rel = (got - want).abs() / want.abs().max(1e-300);
            // Integer orders: closed form, must agree to rounding. Fractional orders: dp_accounting's
            // series errs upwards (0.4 % to 15 % in this table, e.g. q=0.05, sigma=0.8, alpha=1.5:
            // 7.41e-3 against 6.268e-3 by 40-digit quadrature); ours matches quadrature
            // (`fractional_order_matches_quadrature`), so here it may only be lower.
            if a.fract() == 0.0 {
                assert!(rel < 1e-6, "q={q} s={s} order={a}: {got} vs {want}");
            } else {
                assert!(
                    got > 0.0 && got <= want * (1.0 + 1e-9),
                    "q={q} s={s} order={a}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn fractional_order_matches_quadrature() {
    // mpmath quad (40 digits) of log E_{N(0,1)}[((1-q) + q e^{(2z-1)/2})^1.5] / 0.5, q = 0.001.
    let got = rdp::rdp_subsampled_gaussian(0.001, 1.0, 1.5);
    assert!((got / 1.286_984_951_739_727e-6 - 1.0).abs() < 1e-7, "{got}");
    // q = 0.01, sigma = 4, alpha = 1.5: quadrature 4.835493175633e-6 (table: 5.1416e-6).
    // q = 0.01, sigma = 1.1: quadrature 9.5545285718748e-5 (1.5), 1.1195416491045e-4 (1.75);
    // dp_accounting's table says 9.8588e-5 and 1.1372e-4 (3 % and 1.6 % high).
    let got = rdp::rdp_subsampled_gaussian(0.01, 1.1, 1.5);
    assert!((got / 9.554_528_571_874_83e-5 - 1.0).abs() < 1e-7, "{got}");
    let got = rdp::rdp_subsampled_gaussian(0.01, 4.0, 1.5);
    assert!((got / 4.835_493_175_633e-6 - 1.0).abs() < 1e-7, "{got}");
    let got = rdp::rdp_subsampled_gaussian(0.05, 0.8, 1.5);
    assert!((got / 6.267_907_613_589_884e-3 - 1.0).abs() < 1e-7, "{got}");
    let got = rdp::rdp_subsampled_gaussian(0.05, 0.8, 1.75);
    assert!((got / 7.725_553_816_270_34e-3 - 1.0).abs() < 1e-7, "{got}");
    // Orders dp_accounting excluded (its series failed): q = 0.25, sigma = 1.
    let got = rdp::rdp_subsampled_gaussian(0.25, 1.0, 1.5);
    assert!((got / 6.676_181_722_725_434e-2 - 1.0).abs() < 1e-7, "{got}");
    let got = rdp::rdp_subsampled_gaussian(0.25, 1.0, 1.75);
    assert!((got / 8.316_854_122_068_536e-2 - 1.0).abs() < 1e-7, "{got}");
    let got = rdp::rdp_subsampled_gaussian(0.01, 1.1, 1.75);
    assert!((got / 1.119_541_649_104_541e-4 - 1.0).abs() < 1e-7, "{got}");
}

/// The whole grid: RDP within 1 % of dp_accounting (or lower where it excluded a fractional
/// order), reported ε never more than 0.5 % below dp_accounting's PLD and at most 3 % above.
#[test]
fn grid_matches_dp_accounting() {
    let r = reference();
    let (mut worst_rdp, mut worst_pld_lo, mut worst_pld_hi) = (0.0f64, 0.0f64, 0.0f64);
    for row in r["rows"].as_array().unwrap() {
        let (q, s, t, d) = (
            f(row, "q"),
            f(row, "sigma"),
            row["steps"].as_u64().unwrap(),
            f(row, "delta"),
        );
        let rep = epsilon(&[DpEvent::poisson_gaussian(q, s, t)], d).unwrap();
        let want_rdp = f(row, "eps_rdp");
        let rel = (rep.epsilon_rdp - want_rdp) / want_rdp;
        let ok_rdp = rel.abs() <= 0.01
            || (rel < 0.0 && rep.rdp_order.fract() != 0.0 && {
                // dp_accounting excluded this fractional order (series failed to converge);
                // Opacus, which keeps it, agrees with us.
                let op = f(row, "eps_rdp_opacus");
                ((rep.epsilon_rdp - op) / op).abs() < 0.01 || rep.epsilon_rdp > op
            });
        assert!(
            ok_rdp,
            "RDP q={q} s={s} T={t} d={d}: {} vs {want_rdp} (order {})",
            rep.epsilon_rdp, rep.rdp_order
        );
        worst_rdp = worst_rdp.max(rel.abs());
        let want_pld = f(row, "eps_pld");
        if want_pld.is_finite() && want_pld > 1e-3 {
            let rel = (rep.epsilon - want_pld) / want_pld;
            assert!(
                rel >= -0.005,
                "UNSOUND q={q} s={s} T={t} d={d}: {} vs PLD {want_pld}",
                rep.epsilon
            );
            assert!(
                rel <= 0.03,
                "LOOSE q={q} s={s} T={t} d={d}: {} vs PLD {want_pld}",
                rep.epsilon
            );
            worst_pld_lo = worst_pld_lo.min(rel);
            worst_pld_hi = worst_pld_hi.max(rel);
            let rel_pld = (rep.epsilon_pld - want_pld) / want_pld;
            assert!(
                rel_pld >= -0.005,
                "PLD unsound q={q} s={s} T={t}: {} vs {want_pld}",
                rep.epsilon_pld
            );
        }
        assert!(rep.epsilon <= rep.epsilon_rdp);
    }
    eprintln!("worst RDP |rel| {worst_rdp:.2e}; reported vs PLD in [{worst_pld_lo:.2e}, {worst_pld_hi:.2e}]");
}

#[test]
fn plain_gaussian_matches_analytic() {
    let r = reference();
    for g in r["gaussian_no_subsampling"].as_array().unwrap() {
        let (s, d) = (f(g, "sigma"), f(g, "delta"));
        let rep = epsilon(&[DpEvent::gaussian(s, 1)], d).unwrap();
        let exact = f(g, "eps_analytic_gaussian_dpa");
        let rel = (rep.epsilon - exact) / exact;
        assert!(
            (-1e-6..0.03).contains(&rel),
            "s={s} d={d}: {} vs {exact}",
            rep.epsilon
        );
        let rdp = f(g, "eps_rdp_dpa");
        assert!(
            ((rep.epsilon_rdp - rdp) / rdp).abs() < 0.01,
            "rdp s={s}: {} vs {rdp}",
            rep.epsilon_rdp
        );
        // opendp's zCDP conversion is sound but looser than ours.
        let z = crate::dp::exact::zcdp_epsilon(s, d).unwrap();
        let cks = f(g, "eps_zcdp_cks");
        assert!(((z - cks) / cks).abs() < 1e-6, "opendp {z} vs CKS {cks}");
        assert!(rep.epsilon <= z + 1e-9);
    }
}

#[test]
fn calibration_matches_dp_accounting() {
    let r = reference();
    for c in r["calibration"].as_array().unwrap() {
        let want = f(c, "sigma_pld");
        if !want.is_finite() || c["note"].is_string() {
            continue;
        }
        let (q, t, d, e) = (
            f(c, "q"),
            c["steps"].as_u64().unwrap(),
            f(c, "delta"),
            f(c, "target_eps"),
        );
        if q == 0.004 && t == 10_000 && e == 0.5 {
            // dp_accounting calibrated this row on a coarse 1e-3 grid, which is over-pessimistic
            // here (accounting-notes.md, calibration note *): at the 1e-4 interval sigma = 2.96875
            // already gives eps_PLD = 0.490. Check that instead, and that our sigma is below it.
            let r = epsilon(&[DpEvent::poisson_gaussian(q, 2.96875, t)], d).unwrap();
            assert!((r.epsilon_pld - 0.490).abs() < 0.005, "{}", r.epsilon_pld);
            let s = calibrate::noise_multiplier(e, d, q, t).unwrap();
            assert!(s < 2.96875 && s > 0.95 * 2.96875, "{s}");
            continue;
        }
        let s = calibrate::noise_multiplier(e, d, q, t).unwrap();
        let rel = (s - want) / want;
        assert!(
            rel.abs() <= 0.02,
            "calibrate q={q} T={t} eps={e}: {s} vs {want}"
        );
    }
}

#[test]
fn composition_of_parts_equals_merged_event() {
    let a = epsilon(
        &[
            DpEvent::poisson_gaussian(0.01, 1.1, 500),
            DpEvent::poisson_gaussian(0.01, 1.1, 500),
        ],
        1e-5,
    )
    .unwrap();
    let b = epsilon(&[DpEvent::poisson_gaussian(0.01, 1.1, 1000)], 1e-5).unwrap();
    assert_eq!(a, b);
    let mixed = epsilon(
        &[
            DpEvent::poisson_gaussian(0.01, 1.1, 1000),
            DpEvent::gaussian(10.0, 1),
        ],
        1e-5,
    )
    .unwrap();
    assert!(mixed.epsilon > b.epsilon);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn epsilon_monotone(q in 0.001f64..0.5, s in 0.6f64..8.0, t in 1u64..2000) {
        let e = |q: f64, s: f64, t: u64| epsilon(&[DpEvent::poisson_gaussian(q, s, t)], 1e-5).unwrap();
        let base = e(q, s, t);
        let tol = 1e-9;
        prop_assert!(e(q, s, t + t / 2 + 1).epsilon >= base.epsilon - tol);
        prop_assert!(e((q * 1.5).min(1.0), s, t).epsilon >= base.epsilon - tol);
        prop_assert!(e(q, s * 1.3, t).epsilon <= base.epsilon + tol);
        prop_assert!(e(q, s, t + t / 2 + 1).epsilon_rdp >= base.epsilon_rdp - tol);
        prop_assert!(e(q, s * 1.3, t).epsilon_rdp <= base.epsilon_rdp + tol);
    }

    #[test]
    fn composition_at_least_each_part(q1 in 0.001f64..0.3, s1 in 0.7f64..5.0, t1 in 1u64..500,
                                      s2 in 0.7f64..20.0, c2 in 1u64..5) {
        let a = DpEvent::poisson_gaussian(q1, s1, t1);
        let b = DpEvent::gaussian(s2, c2);
        let ab = epsilon(&[a.clone(), b.clone()], 1e-6).unwrap().epsilon;
        prop_assert!(ab >= epsilon(&[a], 1e-6).unwrap().epsilon - 1e-9);
        prop_assert!(ab >= epsilon(&[b], 1e-6).unwrap().epsilon - 1e-9);
    }

    #[test]
    fn fail_invalid_delta_rejected(d in prop_oneof![Just(0.0), Just(1.0), Just(f64::NAN), -1.0f64..0.0, 1.0f64..10.0]) {
        prop_assert!(epsilon(&[DpEvent::gaussian(1.0, 1)], d).is_err());
    }
}
