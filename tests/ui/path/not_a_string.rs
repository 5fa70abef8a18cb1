// `file = ` takes a string literal.
flowspec_macros::flow!(file = specs::moons);

fn main() {}
