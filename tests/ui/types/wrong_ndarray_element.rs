// An f32 flow's batch methods take f32 arrays, not f64 ones.
flowspec_macros::flow! {
    flow Moons32 {
        event [2];
        dtype f32;
        additive_coupling(mask = halves);
    }
}

fn main() {
    let flow = Moons32::new(0);
    let x = ndarray::Array2::<f64>::zeros((4, 2));
    let _ = flow.log_prob(x.view());
}
