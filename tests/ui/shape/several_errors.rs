// Every error is reported, each on its own tokens.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        dtype f16;
        affine_coupling(mask = [1, 1], net = mlp([8], relux));
        reverse(1);
    }
}

fn main() {}
