// The spec file does not exist (paths are relative to the crate's Cargo.toml).
flowspec_macros::flow!(file = "does/not/exist.flow");

fn main() {}
