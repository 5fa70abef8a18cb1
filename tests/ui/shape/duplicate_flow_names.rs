// Two flows named `Moons` would be two structs named `Moons`.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        reverse;
    }
    flow Moons {
        event [2];
        rescale;
    }
}

fn main() {}
