// A hidden layer without units.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        additive_coupling(mask = halves, net = mlp([64, 0], relu));
    }
}

fn main() {}
