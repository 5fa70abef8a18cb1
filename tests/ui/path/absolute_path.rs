// Absolute paths are refused: the crate would not build on another machine.
flowspec_macros::flow!(file = "/etc/moons.flow");

fn main() {}
