// A stray `@` between two layers.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        affine_coupling(mask = alternate);
        @
        reverse;
    }
}

fn main() {}
