// Per-sample methods take `[T; DIM]`: a MAF over 3 dimensions refuses a point of 2.
flowspec_macros::flow! {
    flow Maf3 {
        event [3];
        dtype f64;
        maf(net = made([8]));
    }
}

fn main() {
    let flow = Maf3::new(0);
    let _ = flow.log_prob_one(&[0.0, 1.0]);
}
