// The per-sample methods take `&[T; D]`: a 3-element array for a 2-D flow is a type error.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        affine_coupling(mask = alternate);
    }
}

fn main() {
    let flow = Moons::new(0);
    let _ = flow.log_prob_one(&[0.0_f64, 1.0, 2.0]);
}
