//! Compile-fail cases of `flow!`, checked with trybuild against the `.stderr` files beside
//! them: syntax errors and shape errors in inline specs (each on the offending tokens), bad
//! `file = "..."` paths and bad spec files (on the path literal, with `file:line:col` and the
//! source line in the message), and type errors in code that uses a generated flow.
//!
//! The `.stderr` files are rustc's output, which changes between compiler versions, so this
//! runs only on the version they were generated with. Regenerate them with
//! `TRYBUILD=overwrite cargo test -p flowspec-tests --test ui` and read the diff.
//!
//! trybuild compiles each case in `target/tests/trybuild/flowspec-tests/`, which is the crate
//! root `flow!(file = ...)` resolves against there: `ui/path/bad_spec_file*.rs` reach
//! `tests/bad/` as `../../../../tests/bad/...`, and `missing_file.stderr` shows that directory.
//! Both assume the default target directory (no `CARGO_TARGET_DIR`), as in CI.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "trybuild .stderr files were generated with rustc 1.95"
)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/syntax/*.rs");
    t.compile_fail("ui/shape/*.rs");
    t.compile_fail("ui/path/*.rs");
    t.compile_fail("ui/types/*.rs");
}
