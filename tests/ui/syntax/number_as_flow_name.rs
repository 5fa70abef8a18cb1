// A number where the flow's name belongs.
flowspec_macros::flow! {
    flow 42 {
        event [2];
    }
}

fn main() {}
