// A MADE's input order is natural, reversed or random(seed = N); the error points at the value.
flowspec_macros::flow! {
    flow Maf {
        event [4];
        maf(net = made([16, 16], relu, order = sideways));
    }
}

fn main() {}
