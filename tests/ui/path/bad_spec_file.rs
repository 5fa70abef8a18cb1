// A spec file with an error: the message carries file:line:col, the line and a caret.
// (trybuild builds this in target/tests/trybuild/flowspec-tests/, four levels below the
// workspace root.)
flowspec_macros::flow!(file = "../../../../tests/bad/mask_wrong_length.flow");

fn main() {}
