// A 2-entry mask on a 3-D event.
flowspec_macros::flow! {
    flow Three {
        event [3];
        affine_coupling(mask = [0, 1]);
    }
}

fn main() {}
