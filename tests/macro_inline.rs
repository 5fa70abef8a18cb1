//! Inline `flow! { ... }` end to end: several flows in one invocation (with doc comments and
//! ordinary comments inside), their constants, the identity at initialisation, per-sample
//! methods against batch methods, and weights I/O (round trip, wrong architecture, truncated
//! file, a failed save that must not destroy what is already on disk).

use flowspec_runtime::{verify, Flow, IoError};
use ndarray::{Array2, ArrayView1};
use rand::RngExt;
use std::path::{Path, PathBuf};

flowspec_macros::flow! {
    /// A small RealNVP on 3-D data, with random permutations folded into its couplings.
    flow Small3 {
        event [3];
        // An ordinary comment: skipped.
        repeat 2 {
            /// A doc comment on a layer is allowed, and ignored.
            affine_coupling(mask = [1, 0, 1], net = mlp([8, 8], tanh));
            permute(seed = 3);
        }
        actnorm;
        affine_coupling(mask = alternate_flip, net = mlp(hidden = [6], activation = leaky_relu(slope = 0.2)), bound = 2.5);
    }

    /// NICE in single precision: three additive couplings, reversed in between, and a rescaling.
    flow Nice32 {
        event [2];
        dtype f32;
        repeat 3 {
            additive_coupling(mask = halves);
            reverse;
        }
        rescale;
    }

    /// Another architecture on the same event size, to load Small3's weights into.
    flow Other3 {
        event [3];
        affine_coupling(mask = halves, net = mlp([8, 8], tanh));
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir()
            .join(format!("flowspec-macro-inline-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names of the entries in the directory, sorted.
    fn entries(&self) -> Vec<String> {
        list(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn points(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    Array2::from_shape_fn((n, d), |_| 4.0 * rng.random::<f64>() - 2.0)
}

/// The standard normal log-density of a row.
fn std_normal(row: ArrayView1<f64>) -> f64 {
    row.iter().map(|v| -0.5 * v * v - 0.5 * (2.0 * std::f64::consts::PI).ln()).sum()
}

/// Adds seeded noise of size `scale` to every parameter of an f32 flow (`verify::perturb` is
/// for f64 flows).
fn perturb32<F: Flow<Real = f32>>(flow: &mut F, scale: f32, seed: u64) {
    let mut rng = flowspec_runtime::rng_from_seed(seed);
    let p: Vec<f32> =
        flow.params().iter().map(|v| v + scale * (2.0 * rng.random::<f32>() - 1.0)).collect();
    flow.set_params(&p);
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn constants() {
    // mlp [1, 8, 8, 4] twice, actnorm over 3 dimensions, mlp [1, 6, 4].
    assert_eq!(Small3::DIM, 3);
    assert_eq!(Small3::NUM_PARAMS, 2 * (8 + 8 + 64 + 8 + 32 + 4) + 6 + (6 + 6 + 24 + 4));
    assert_eq!(Small3::NAME, "Small3");
    // mlp [1, 64, 64, 1] three times and a rescaling of 2 dimensions.
    assert_eq!(Nice32::DIM, 2);
    assert_eq!(Nice32::NUM_PARAMS, 3 * (64 + 64 + 64 * 64 + 64 + 64 + 1) + 2);
    // `halves` of 3 dimensions conditions on 1 and transforms 2: mlp [1, 8, 8, 4].
    assert_eq!(Other3::NUM_PARAMS, 8 + 8 + 64 + 8 + 8 * 4 + 4);

    let (s, n) = (Small3::new(0), Nice32::new(0));
    assert_eq!(
        (s.dim(), s.num_params(), s.params().len()),
        (Small3::DIM, Small3::NUM_PARAMS, Small3::NUM_PARAMS)
    );
    assert_eq!(
        (n.dim(), n.num_params(), n.params().len()),
        (Nice32::DIM, Nice32::NUM_PARAMS, Nice32::NUM_PARAMS)
    );
    assert_eq!((s.name(), n.name()), ("Small3", "Nice32"));
    assert_eq!(s.fingerprint(), Small3::FINGERPRINT);
    let fps = [Small3::FINGERPRINT, Nice32::FINGERPRINT, Other3::FINGERPRINT];
    assert!(fps[0] != fps[1] && fps[1] != fps[2] && fps[0] != fps[2], "{fps:x?}");
    // Seeds change the weights, not the architecture.
    assert_ne!(Small3::new(1).params(), Small3::new(2).params());
    assert_eq!(Small3::new(7).params(), Small3::new(7).params());
}

#[test]
fn new_flows_are_the_identity_in_density() {
    let x = points(16, 3, 1);
    let flow = Small3::new(42);
    let lp = flow.log_prob(x.view());
    let (z, ld) = flow.inverse(x.view());
    for i in 0..x.nrows() {
        assert!(
            close(lp[i], std_normal(x.row(i)), 1e-12),
            "row {i}: {} vs {}",
            lp[i],
            std_normal(x.row(i))
        );
        assert_eq!(ld[i], 0.0);
        // The permutations move dimensions around; the couplings and actnorm do nothing yet.
        let mut a: Vec<f64> = x.row(i).to_vec();
        let mut b: Vec<f64> = z.row(i).to_vec();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        assert_eq!(a, b, "row {i}: z is not a permutation of x");
    }

    // Three reversals: z is x reversed, exactly, in f32.
    let x32 = points(8, 2, 2).mapv(|v| v as f32);
    let nice = Nice32::new(5);
    let (z, ld) = nice.inverse(x32.view());
    let lp = nice.log_prob(x32.view());
    for i in 0..x32.nrows() {
        assert_eq!((z[[i, 0]], z[[i, 1]]), (x32[[i, 1]], x32[[i, 0]]));
        assert_eq!(ld[i], 0.0);
        let want = std_normal(x32.row(i).mapv(f64::from).view());
        assert!(close(lp[i] as f64, want, 1e-6), "row {i}: {} vs {want}", lp[i]);
    }
}

#[test]
fn per_sample_methods_agree_with_batch_methods() {
    let mut flow = Small3::new(3);
    flow.data_init(points(64, 3, 4).view());
    verify::perturb(&mut flow, 0.3, 5);
    let x = points(10, 3, 6);
    let lp = flow.log_prob(x.view());
    let (z, ld) = flow.inverse(x.view());
    let (x_back, ld_back) = flow.forward(z.view());
    for i in 0..x.nrows() {
        let row: [f64; 3] = [x[[i, 0]], x[[i, 1]], x[[i, 2]]];
        assert!(close(flow.log_prob_one(&row), lp[i], 1e-12));
        let (zi, ldi) = flow.inverse_one(&row);
        assert!(
            zi.iter().zip(z.row(i)).all(|(a, b)| close(*a, *b, 1e-12)) && close(ldi, ld[i], 1e-12)
        );
        let (xi, ldf) = flow.forward_one(&zi);
        assert!(xi.iter().zip(row).all(|(a, b)| close(*a, b, 1e-9)), "{xi:?} vs {row:?}");
        assert!(close(ldf, -ldi, 1e-9) && close(ld_back[i], -ld[i], 1e-9));
        assert!(x_back.row(i).iter().zip(row).all(|(a, b)| close(*a, b, 1e-9)));
    }
    // A sample drawn alone is the first of a batch drawn with the same generator.
    let one = flow.sample_one(&mut flowspec_runtime::rng_from_seed(9));
    let batch = flow.sample(4, &mut flowspec_runtime::rng_from_seed(9));
    assert!(one.iter().zip(batch.row(0)).all(|(a, b)| close(*a, *b, 1e-12)), "{one:?} vs {batch}");
    let (s, slp) = flow.sample_and_log_prob(5, &mut flowspec_runtime::rng_from_seed(10));
    let lp = flow.log_prob(s.view());
    assert!(slp.iter().zip(&lp).all(|(a, b)| close(*a, *b, 1e-9)), "{slp} vs {lp}");

    let mut nice = Nice32::new(1);
    perturb32(&mut nice, 0.1, 2);
    let x32 = points(6, 2, 7).mapv(|v| v as f32);
    let lp = nice.log_prob(x32.view());
    for i in 0..x32.nrows() {
        let row = [x32[[i, 0]], x32[[i, 1]]];
        assert!((nice.log_prob_one(&row) - lp[i]).abs() <= 1e-5 * (1.0 + lp[i].abs()));
    }
}

#[test]
fn save_then_load_round_trips_exactly() {
    let dir = TempDir::new("roundtrip");
    let mut flow = Small3::new(11);
    flow.data_init(points(32, 3, 12).view());
    verify::perturb(&mut flow, 0.5, 13);
    let path = dir.path("small3.safetensors");
    flow.save(&path).unwrap();
    let loaded = Small3::load(&path).unwrap();
    let (a, b) = (flow.params(), loaded.params());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len());
    let x = points(5, 3, 14);
    assert_eq!(flow.log_prob(x.view()), loaded.log_prob(x.view()));

    let mut nice = Nice32::new(2);
    perturb32(&mut nice, 0.2, 3);
    let path32 = dir.path("nice32.safetensors");
    nice.save(&path32).unwrap();
    let loaded = Nice32::load(&path32).unwrap();
    assert!(nice.params().iter().zip(loaded.params()).all(|(x, y)| x.to_bits() == y.to_bits()));

    // Saving over an existing file replaces it and leaves no temporary file behind.
    let before = std::fs::read(&path).unwrap();
    verify::perturb(&mut flow, 0.5, 15);
    flow.save(&path).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), before);
    assert_eq!(Small3::load(&path).unwrap().params(), flow.params());
    assert_eq!(dir.entries(), ["nice32.safetensors", "small3.safetensors"]);
}

#[test]
fn weights_of_another_flow_are_refused() {
    let dir = TempDir::new("other");
    let path = dir.path("other3.safetensors");
    Other3::new(1).save(&path).unwrap();
    let err = Small3::load(&path).unwrap_err();
    assert!(matches!(err, IoError::WrongFlow { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("fingerprint") && msg.contains("Other3") && msg.contains("Small3"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{:016x}", Other3::FINGERPRINT))
            && msg.contains(&format!("{:016x}", Small3::FINGERPRINT)),
        "{msg}"
    );

    // f32 weights into an f64 flow are refused too, whatever the architecture.
    let path32 = dir.path("nice32.safetensors");
    Nice32::new(1).save(&path32).unwrap();
    let err = Small3::load(&path32).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");

    // A failed load into an existing flow leaves it as it was.
    let mut flow = Small3::new(4);
    let before = flow.params();
    assert!(flowspec_runtime::io::load_into(&mut flow, &path).is_err());
    assert_eq!(flow.params(), before);
}

#[test]
fn truncated_and_missing_files_are_refused() {
    let dir = TempDir::new("truncated");
    let path = dir.path("small3.safetensors");
    Small3::new(1).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, bytes.len() / 2, bytes.len() - 1] {
        let cut_path = dir.path(&format!("cut{cut}.safetensors"));
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let err = Small3::load(&cut_path).unwrap_err();
        assert!(matches!(err, IoError::Format { .. }), "cut at {cut}: {err:?}");
        assert!(err.to_string().contains(&cut_path.display().to_string()), "{err}");
    }
    let err = Small3::load(dir.path("missing.safetensors")).unwrap_err();
    assert!(matches!(err, IoError::Io { .. }), "{err:?}");
}

#[test]
fn a_failed_save_destroys_nothing() {
    let dir = TempDir::new("failed-save");
    let flow = Small3::new(1);
    let good = dir.path("good.safetensors");
    flow.save(&good).unwrap();
    let good_bytes = std::fs::read(&good).unwrap();

    // The target is a directory holding a file: the save fails and both stay.
    let target = dir.path("weights.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"precious").unwrap();
    let err = Small3::new(2).save(&target).unwrap_err();
    assert!(matches!(err, IoError::Io { .. }), "{err:?}");
    assert!(target.is_dir());
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"precious");

    // A directory that does not exist: nothing is created.
    assert!(Small3::new(2).save(dir.path("no/such/dir/w.safetensors")).is_err());

    // Neither failure touched the other weights or left a temporary file behind.
    assert_eq!(std::fs::read(&good).unwrap(), good_bytes);
    assert_eq!(Small3::load(&good).unwrap().params(), flow.params());
    assert_eq!(dir.entries(), ["good.safetensors", "weights.safetensors"]);
    assert_eq!(list(&target), ["keep.txt"]);
}
