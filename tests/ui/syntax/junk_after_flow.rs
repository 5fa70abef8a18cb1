// Something that is not a flow after the flow.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        reverse;
    }
    reverse;
}

fn main() {}
