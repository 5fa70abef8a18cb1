// An f64 flow takes f64 points.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        dtype f64;
        affine_coupling(mask = alternate);
    }
}

fn main() {
    let flow = Moons::new(0);
    let x: [f32; 2] = [0.5, -0.5];
    let _ = flow.log_prob_one(&x);
}
