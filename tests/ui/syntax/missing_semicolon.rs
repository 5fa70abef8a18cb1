// The `;` after `event [2]` is missing: the error points at the token after it.
flowspec_macros::flow! {
    flow Moons {
        event [2]
        affine_coupling(mask = alternate);
    }
}

fn main() {}
