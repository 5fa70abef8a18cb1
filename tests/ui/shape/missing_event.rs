// No event shape.
flowspec_macros::flow! {
    flow Moons {
        dtype f64;
        reverse;
    }
}

fn main() {}
