// 0 twice and 2 never: not a permutation of 0..3.
flowspec_macros::flow! {
    flow Three {
        event [3];
        permute(order = [0, 0, 1]);
    }
}

fn main() {}
