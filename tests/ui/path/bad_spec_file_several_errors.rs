// Every error of a spec file is its own compile error on the path literal.
flowspec_macros::flow!(file = "../../../../tests/bad/coupling_on_1d.flow");

fn main() {}
