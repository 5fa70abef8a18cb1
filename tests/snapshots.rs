//! Snapshots of the compiler's output, under `tests/snapshots/`:
//!
//! - for every spec in `specs/`, the IR dump of each flow and the generated Rust (formatted);
//! - for every bad spec in `tests/bad/`, the rendered diagnostics (message, `file:line:col`,
//!   source line and caret).
//!
//! Update with `INSTA_UPDATE=always cargo test -p flowspec-tests --test snapshots`, then read
//! the changed `.snap` files before committing them.

use std::path::Path;

/// The spec's source, with `\r\n` normalised so that snapshots do not depend on checkout.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("\r\n", "\n")
}

fn compile_ok(path: &Path) -> flowspec::ir::Program {
    let src = read(path);
    flowspec::compile(&src).unwrap_or_else(|ds| {
        panic!(
            "{} does not compile:\n{}",
            path.display(),
            flowspec::diag::render_all(&ds, &path.display().to_string(), &src)
        )
    })
}

#[test]
fn ir_dump() {
    insta::glob!("../specs", "*.flow", |path| {
        let program = compile_ok(path);
        assert!(!program.flows.is_empty(), "{} defines no flow", path.display());
        let dump: Vec<String> = program.flows.iter().map(|f| f.dump()).collect();
        insta::assert_snapshot!(dump.join("\n"));
    });
}

#[test]
fn generated_rust() {
    insta::glob!("../specs", "*.flow", |path| {
        let program = compile_ok(path);
        let code = flowspec::codegen::expand_pretty(&program);
        // expand_pretty falls back to the raw tokens (with a comment) when they do not parse.
        syn::parse_file(&code)
            .unwrap_or_else(|e| panic!("{}: generated code does not parse: {e}", path.display()));
        assert!(!code.starts_with("// generated code does not parse"), "{code}");
        insta::assert_snapshot!(code);
    });
}

#[test]
fn bad_specs() {
    let mut count = 0;
    insta::glob!("bad", "*.flow", |path| {
        count += 1;
        let src = read(path);
        let name = path.file_name().unwrap().to_str().unwrap();
        let diags = match flowspec::compile(&src) {
            Ok(_) => {
                panic!("tests/bad/{name} compiles, but every spec in tests/bad/ must be rejected")
            }
            Err(ds) => ds,
        };
        assert!(!diags.is_empty(), "tests/bad/{name}: an error without diagnostics");
        for d in &diags {
            assert!(
                d.span.start <= d.span.end && d.span.end <= src.len(),
                "tests/bad/{name}: span {:?} out of the source",
                d.span
            );
        }
        insta::assert_snapshot!(flowspec::diag::render_all(
            &diags,
            &format!("tests/bad/{name}"),
            &src
        ));
    });
    assert!(count >= 25, "only {count} bad specs found in tests/bad/");
}
