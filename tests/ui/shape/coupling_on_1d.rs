// A coupling needs at least two dimensions to split.
flowspec_macros::flow! {
    flow Scalar {
        event [1];
        affine_coupling(mask = alternate);
    }
}

fn main() {}
