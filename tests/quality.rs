//! Training quality against the PyTorch anchors in `shared/bench/RESULTS.md`. Slow (tens of
//! seconds in release), so ignored by default; run with
//! `cargo test --release -p flowspec-tests --test quality -- --ignored --nocapture`.

use flowspec_runtime::data;
use flowspec_runtime::train::{mean_nll, train, TrainConfig};
use flowspec_tests::specs::RealNvpMoons;

/// zuko's C1 RealNVP reaches 1.201 +- 0.013 nats on the moons test set after 3000 Adam steps
/// (batch 256, lr 1e-3); the issue asks for within 0.05 of 1.20. The true density scores 1.143.
#[test]
#[ignore = "trains for tens of seconds; run with --release -- --ignored"]
fn realnvp_moons_matches_zuko() {
    let moons = data::builtin("moons").expect("moons is built in");
    let mut flow = RealNvpMoons::new(0);
    let cfg = TrainConfig { steps: 6000, patience: 20, ..TrainConfig::default() };
    let report = train(&mut flow, moons.train.view(), &cfg, &mut |_| {}).expect("training runs");
    let test_nll = mean_nll(&flow, moons.test.view());
    eprintln!(
        "RealNVP moons: test NLL {test_nll:.4} nats, best val {:.4} at step {} of {}",
        report.best_val_nll, report.best_step, report.steps_run
    );
    assert!(test_nll < 1.25, "test NLL {test_nll} is not within 0.05 of zuko's 1.20");
    assert!(
        test_nll > 1.10,
        "test NLL {test_nll} beats the true density (1.143): something is wrong"
    );
}

/// The C3 neural spline flow (4 spline couplings, 8 bins, MLP [64, 64]) must reach a test NLL
/// at least as good as the better of zuko (1.191) and nflows (1.180) in RESULTS.md.
#[test]
#[ignore = "trains for a minute or more; run with --release -- --ignored"]
fn nsf_moons_matches_nflows() {
    let moons = data::builtin("moons").expect("moons is built in");
    let mut flow = flowspec_tests::specs::NsfMoons::new(0);
    let cfg = TrainConfig { steps: 6000, patience: 20, ..TrainConfig::default() };
    let report = train(&mut flow, moons.train.view(), &cfg, &mut |_| {}).expect("training runs");
    let test_nll = mean_nll(&flow, moons.test.view());
    eprintln!(
        "NSF moons: test NLL {test_nll:.4} nats, best val {:.4} at step {} of {}",
        report.best_val_nll, report.best_step, report.steps_run
    );
    assert!(test_nll <= 1.180, "test NLL {test_nll} is worse than nflows' 1.180");
    assert!(
        test_nll > 1.10,
        "test NLL {test_nll} beats the true density (1.143): something is wrong"
    );
}
