// A misspelled layer kind; the help lists the known ones.
flowspec_macros::flow! {
    flow Moons {
        event [2];
        affine_couplng(mask = alternate);
    }
}

fn main() {}
