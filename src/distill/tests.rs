//! `run` spends exactly the plan's events through the one mechanism, and refuses to read
//! beyond its allowance.

use super::*;
use crate::dataset::{Images, Meta, Shape};

/// A two-class set of `n` 12x12 images and its public metadata.
fn data(n: usize) -> (Meta, Images) {
    let shape = Shape { c: 1, h: 12, w: 12 };
    let mut im = Images::new(shape);
    for i in 0..n as u32 {
        let px: Vec<u8> = (0..144u32)
            .map(|j| ((i * 7 + j * (i % 2 + 1)) % 256) as u8)
            .collect();
        im.push(&px, i % 2);
    }
    let mut meta = Meta::for_test("d", shape, im.per_class(2), vec![0, 0]);
    meta.classes = vec!["a".into(), "b".into()];
    (meta, im)
}

fn default_plan(meta: &Meta, method: Method, iterations: usize) -> Plan {
    plan(
        meta,
        &Request {
            epsilon: crate::dp::Epsilon::new(2.0).unwrap(),
            delta: crate::dp::Delta::new(1e-5).unwrap(),
            utility_share: 0.0,
            teacher: None,
            ipc: 1,
            method: Some(method),
            iterations: Some(iterations),
            seed: Some(5),
        },
    )
    .unwrap()
}

/// See: issue 19 — default plans (dm per-net, dm one-shot, gm) leave nothing unspent and
/// spend nothing beyond the reservation.
#[test]
fn run_spends_exactly_the_plans_events() {
    let (meta, im) = data(60);
    let mut plans = vec![
        default_plan(&meta, Method::Dm, 2),
        default_plan(&meta, Method::Gm, 1),
    ];
    let mut one_shot = default_plan(&meta, Method::Dm, 2);
    if let plan::Params::Dm(p) = &mut one_shot.params {
        p.sample_rate = None;
        p.nets = 4;
    }
    one_shot.recalibrate().unwrap();
    assert_eq!(
        one_shot.events,
        vec![DpEvent::gaussian(one_shot.noise_multiplier, 1)]
    );
    plans.push(one_shot);
    for p in &plans {
        let mut allowance = Allowance::new(&p.events).unwrap();
        let out = run(
            p,
            &Records::new(&im),
            &mut allowance,
            &crate::progress::silent,
        )
        .unwrap();
        assert!(
            allowance.is_exhausted(),
            "{} left {:?} unspent",
            p.method,
            allowance.unspent()
        );
        assert_eq!(allowance.spent(), p.events, "{}", p.method);
        assert_eq!(out.events, p.events);
        assert_eq!(out.synthetic.len(), 2);
    }
}

/// A reservation one release short: the run fails closed with `dp-allowance-exceeded`.
#[test]
fn fail_run_beyond_its_allowance() {
    let (meta, im) = data(60);
    let p = default_plan(&meta, Method::Gm, 1);
    let DpEvent::PoissonSampledGaussian { q, sigma, steps } = p.events[0] else {
        panic!("gm spends Poisson-sampled steps")
    };
    let mut short = Allowance::new(&[DpEvent::poisson_gaussian(q, sigma, steps - 1)]).unwrap();
    let e = run(&p, &Records::new(&im), &mut short, &crate::progress::silent).unwrap_err();
    assert_eq!(e.code(), "dp-allowance-exceeded");
    assert_eq!(e.class(), Class::Refused);
    assert!(short.is_exhausted());
    // Data that does not match the plan is refused before anything is spent.
    let (_, other) = data(61);
    let mut a = Allowance::new(&p.events).unwrap();
    assert!(run(&p, &Records::new(&other), &mut a, &crate::progress::silent).is_err());
    assert_eq!(a.unspent(), p.events);
}
