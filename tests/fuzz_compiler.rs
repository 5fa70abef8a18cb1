//! The compiler never panics, whatever it is given: arbitrary text, the real specs with bytes
//! deleted, inserted and replaced, and the real specs with language tokens spliced in. For every
//! input `flowspec::compile` returns either a program or diagnostics whose spans lie within the
//! input; the diagnostics render; a program's generated code is valid Rust. The `flow!` entry
//! point (`expand::expand_inline`) gets the same treatment on token streams.
//!
//! Runs are deterministic (a fixed seed) unless `PROPTEST_RNG_SEED` is set; `PROPTEST_CASES`
//! overrides the number of cases of every property, e.g. `PROPTEST_CASES=20000` for a long run.
//! A panic proptest finds is fixed in the compiler and kept below as a regression test.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use std::str::FromStr;

/// The real specs, the mutation seeds.
const SPECS: &[&str] = &[
    include_str!("../specs/realnvp_moons.flow"),
    include_str!("../specs/nice_moons.flow"),
    include_str!("../specs/glow_like.flow"),
];

/// Tokens of the language (and a few hostile ones) to splice into the specs.
const VOCAB: &[&str] = &[
    "flow",
    "event",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ";",
    ",",
    "=",
    "repeat",
    "mask",
    "alternate",
    "halves",
    "0",
    "1",
    "2",
    "-1",
    "-",
    "0.5",
    "1e999",
    "99999999999999999999",
    "65536",
    "mlp",
    "relu",
    "leaky_relu",
    "net",
    "hidden",
    "bound",
    "permute",
    "order",
    "seed",
    "reverse",
    "rescale",
    "actnorm",
    "affine_coupling",
    "additive_coupling",
    "dtype",
    "f32",
    "f64",
    "base",
    "normal",
    "fn",
    "Self",
    "_",
    "///",
    "//",
    "\"",
    "\n",
    " ",
    "é",
    "\u{1F600}",
    "\t",
    "#",
];

fn config(cases: u32) -> Config {
    let env = |k: &str| std::env::var_os(k).is_some();
    Config {
        cases: if env("PROPTEST_CASES") { Config::default().cases } else { cases },
        rng_seed: if env("PROPTEST_RNG_SEED") {
            Config::default().rng_seed
        } else {
            RngSeed::Fixed(0xf10_5bec)
        },
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

/// Above this many column entries (event size times layers) the generated code of a program
/// is not formatted: it is correct but large, and formatting it would dominate the run.
const MAX_COLUMN_ENTRIES: usize = 20_000;

/// Everything that must hold for any input text.
fn check_source(src: &str) {
    match flowspec::compile(src) {
        Err(diags) => {
            assert!(!diags.is_empty(), "Err without diagnostics for {src:?}");
            for d in &diags {
                let s = d.span;
                assert!(
                    s.start <= s.end && s.end <= src.len(),
                    "span {s:?} outside the input ({} bytes): {src:?}",
                    src.len()
                );
                assert!(!d.message.is_empty());
            }
            let out = flowspec::diag::render_all(&diags, "fuzz.flow", src);
            assert!(out.contains("fuzz.flow:"), "{out}");
        }
        Ok(program) => {
            let entries: usize = program.flows.iter().map(|f| f.dim * (f.layers.len() + 1)).sum();
            for f in &program.flows {
                assert_eq!(f.z_cols.len(), f.dim);
                if entries <= MAX_COLUMN_ENTRIES {
                    let _ = f.dump();
                }
            }
            if entries <= MAX_COLUMN_ENTRIES {
                check_code(&flowspec::codegen::expand_pretty(&program), src);
            }
        }
    }
}

fn check_code(code: &str, src: &str) {
    assert!(
        !code.starts_with("// generated code does not parse"),
        "for {src:?}:\n{}",
        &code[..code.len().min(500)]
    );
    if let Err(e) = syn::parse_file(code) {
        panic!("generated code does not parse ({e}) for {src:?}");
    }
}

/// `flow!`'s inline form on the tokens of `src` (when `src` lexes as Rust tokens): either code
/// or `compile_error!`s, never a panic.
fn check_inline(src: &str) {
    let Ok(tokens) = proc_macro2::TokenStream::from_str(src) else {
        return;
    };
    let out = flowspec::expand::expand_inline(tokens).to_string();
    if out.contains("compile_error") {
        return;
    }
    let file: syn::File = syn::parse_str(&out)
        .unwrap_or_else(|e| panic!("expansion does not parse ({e}) for {src:?}"));
    let _ = prettyplease::unparse(&file);
}

#[derive(Clone, Debug)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, len: usize, bytes: Vec<u8> },
    Splice { at: usize, token: usize },
    SpliceOver { at: usize, len: usize, token: usize },
    Duplicate { at: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    let bytes = prop::collection::vec(any::<u8>(), 1..8);
    let printable = prop::collection::vec(
        prop::sample::select(b"[](){};,=-.0123456789azAZ_ \n\"/#".to_vec()),
        1..8,
    );
    prop_oneof![
        (at, 1..20usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (at, bytes.clone()).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (at, printable).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (at, 1..10usize, bytes).prop_map(|(at, len, bytes)| Edit::Replace { at, len, bytes }),
        (at, 0..VOCAB.len()).prop_map(|(at, token)| Edit::Splice { at, token }),
        (at, 1..12usize, 0..VOCAB.len()).prop_map(|(at, len, token)| Edit::SpliceOver {
            at,
            len,
            token
        }),
        (at, 1..60usize).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

/// Applies the edits to the bytes of `src`; positions wrap around the current length. Bytes
/// that are not UTF-8 become U+FFFD.
fn mutate(src: &str, edits: &[Edit]) -> String {
    let mut b = src.as_bytes().to_vec();
    for e in edits {
        let n = b.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        let range = |at: usize, len: usize| {
            let s = pos(at);
            s..(s + len).min(n)
        };
        match e {
            Edit::Delete { at, len } => {
                b.drain(range(*at, *len));
            }
            Edit::Insert { at, bytes } => {
                let p = pos(*at);
                b.splice(p..p, bytes.iter().copied());
            }
            Edit::Replace { at, len, bytes } => {
                b.splice(range(*at, *len), bytes.iter().copied());
            }
            Edit::Splice { at, token } => {
                let p = pos(*at);
                b.splice(p..p, VOCAB[*token].bytes());
            }
            Edit::SpliceOver { at, len, token } => {
                b.splice(range(*at, *len), VOCAB[*token].bytes());
            }
            Edit::Duplicate { at, len } => {
                let r = range(*at, *len);
                let copy = b[r.clone()].to_vec();
                b.splice(r.end..r.end, copy);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Sequences of language tokens, separated by spaces or nothing.
fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((0..VOCAB.len(), any::<bool>()), 0..60).prop_map(|ts| {
        ts.into_iter().map(|(t, sp)| format!("{}{}", VOCAB[t], if sp { " " } else { "" })).collect()
    })
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn arbitrary_strings(src in any::<String>()) {
        check_source(&src);
    }

    #[test]
    fn grammar_like_strings(src in "[a-z_0-9 \\[\\](){};,=.\"/\n-]{0,120}") {
        check_source(&src);
    }

    #[test]
    fn token_soups(src in token_soup()) {
        check_source(&src);
        check_inline(&src);
    }

    #[test]
    fn token_soups_in_a_flow(body in token_soup()) {
        let src = format!("flow Fuzz {{ event [3]; {body} }}");
        check_source(&src);
        check_inline(&src);
    }
}

/// A random valid layer for an event of `dim` dimensions (couplings only when `dim >= 2`).
fn valid_layer(dim: usize) -> impl Strategy<Value = String> {
    let mask = prop_oneof![
        prop::sample::select(vec!["alternate", "alternate_flip", "halves", "halves_flip"])
            .prop_map(str::to_string),
        // An explicit mask with at least one 0 and one 1.
        (prop::collection::vec(any::<bool>(), dim), 0..dim.max(1)).prop_map(move |(mut m, i)| {
            m[i] = true;
            m[(i + 1) % dim] = false;
            format!(
                "[{}]",
                m.iter().map(|&b| if b { "1" } else { "0" }).collect::<Vec<_>>().join(", ")
            )
        }),
    ];
    let act = prop::sample::select(vec![
        "relu",
        "tanh",
        "elu",
        "leaky_relu",
        "leaky_relu(slope = 0.3)",
        "elu(alpha = 0.5)",
    ]);
    let net = (prop::collection::vec(1..9usize, 0..3), act).prop_map(|(h, a)| {
        format!("mlp([{}], {a})", h.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
    });
    let order = Just((0..dim).collect::<Vec<usize>>()).prop_shuffle().prop_map(|o| {
        format!(
            "permute(order = [{}]);",
            o.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        )
    });
    let simple = prop_oneof![
        Just("reverse;".to_string()),
        Just("rescale;".to_string()),
        Just("actnorm;".to_string()),
        (0..1000u64).prop_map(|s| format!("permute(seed = {s});")),
        order,
    ];
    let coupling = (mask, net, 1..50u32, any::<bool>()).prop_map(|(m, n, b, affine)| {
        if affine {
            format!("affine_coupling(mask = {m}, net = {n}, bound = {}.5);", b)
        } else {
            format!("additive_coupling(mask = {m}, net = {n});")
        }
    });
    if dim >= 2 {
        prop_oneof![simple, coupling].boxed()
    } else {
        simple.boxed()
    }
}

/// A random valid spec: one to three flows with random shapes, dtypes and layers, some of
/// them in (nested) `repeat` blocks.
fn valid_spec() -> impl Strategy<Value = String> {
    let flow = (1..7usize, any::<bool>(), any::<bool>()).prop_flat_map(|(dim, f32, split)| {
        let layers = prop::collection::vec((valid_layer(dim), 0..4usize), 0..8);
        (Just(dim), Just(f32), Just(split), layers)
    });
    prop::collection::vec(flow, 1..4).prop_map(|flows| {
        let mut out = String::new();
        for (k, (dim, f32, split, layers)) in flows.into_iter().enumerate() {
            let event = if split && dim % 2 == 0 {
                format!("[2, {}]", dim / 2)
            } else {
                format!("[{dim}]")
            };
            let dtype = if f32 { "f32" } else { "f64" };
            out.push_str(&format!(
                "/// Flow {k}.\nflow F{k} {{\n    event {event};\n    dtype {dtype};\n"
            ));
            for (layer, rep) in layers {
                match rep {
                    0 => out.push_str(&format!("    repeat 2 {{ {layer} }}\n")),
                    1 => out
                        .push_str(&format!("    repeat 2 {{ repeat 2 {{ {layer} }} reverse; }}\n")),
                    _ => out.push_str(&format!("    {layer}\n")),
                }
            }
            out.push_str("}\n");
        }
        out
    })
}

proptest! {
    #![proptest_config(config(100))]

    #[test]
    fn valid_specs_compile_and_generate_valid_rust(src in valid_spec()) {
        let program = flowspec::compile(&src).unwrap_or_else(|ds| panic!("{}\n{src}", flowspec::diag::render_all(&ds, "valid.flow", &src)));
        for f in &program.flows {
            let mut z = f.z_cols.clone();
            z.sort_unstable();
            prop_assert_eq!(z, (0..f.dim).collect::<Vec<_>>(), "z_cols is not a permutation");
            prop_assert_eq!(f.num_params(), f.layers.iter().map(|l| l.num_params()).sum::<usize>());
        }
        check_code(&flowspec::codegen::expand_pretty(&program), &src);
        check_inline(&src);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn mutated_specs(spec in 0..SPECS.len(), edits in prop::collection::vec(edit(), 1..6)) {
        let src = mutate(SPECS[spec], &edits);
        check_source(&src);
    }

}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn mutated_specs_through_flow_macro(spec in 0..SPECS.len(), edits in prop::collection::vec(edit(), 0..4)) {
        let src = mutate(SPECS[spec], &edits);
        check_inline(&src);
    }
}

#[test]
fn the_real_specs_compile_and_expand_through_both_entry_points() {
    for src in SPECS {
        let program = flowspec::compile(src).expect("the specs compile");
        check_code(&flowspec::codegen::expand_pretty(&program), src);
        let tokens = proc_macro2::TokenStream::from_str(src).expect("specs lex as Rust tokens");
        let out = flowspec::expand::expand_inline(tokens).to_string();
        assert!(!out.contains("compile_error"), "{out}");
        syn::parse_str::<syn::File>(&out).expect("the expansion parses");
    }
}

/// Inputs that once made the compiler panic, hang or overflow its stack, or that are right
/// at a limit. Each runs on a thread with the 2 MiB stack of a test thread.
#[test]
fn regressions() {
    let deep = |open: &str, close: &str, n: usize| {
        format!("flow A {{ event [2]; permute(order = {}0{}); }}", open.repeat(n), close.repeat(n))
    };
    let cases: Vec<String> = vec![
        // `repeat` with bodies that expand to nothing: was a loop of 10^26 iterations.
        "flow A { event [2]; repeat 99999999999999 { repeat 9999999999999 { } } }".into(),
        "flow A { event [2]; repeat 99999999999999999999 { repeat 99999999999999999999 { } } reverse; }".into(),
        "flow A { event [2]; repeat 99999999999999999999 { reverse; } }".into(),
        "flow A { event [2]; repeat 1000000000 { repeat 1000000000 { reverse; } } }".into(),
        // Nesting past the limit: was a stack overflow (a crash, and of rustc through `flow!`).
        deep("[", "]", 100_000),
        format!(
            "flow A {{ event [2]; {} reverse; {} }}",
            "repeat 1 {".repeat(100_000),
            "}".repeat(100_000)
        ),
        format!(
            "flow A {{ event [2]; affine_coupling(net = {}); }}",
            "mlp(".repeat(50_000)
        ),
        // Names that are not Rust type names: the generated code did not parse.
        "flow fn { event [2]; reverse; }".into(),
        "flow _ { event [2]; reverse; }".into(),
        "flow Self { event [2]; reverse; }".into(),
        "flow f64 { event [2]; reverse; }".into(),
        // Parameter counts past usize: overflowed (a panic in debug builds).
        "flow A { event [2]; repeat 9000 { affine_coupling(net = mlp([4294967296, 4294967296, 4294967296])); } }"
            .into(),
        // Numbers at and past the limits.
        "flow A { event [16777216, 2]; }".into(),
        "flow A { event [4294967296, 4294967296, 4294967296, 4294967296, 4294967296]; }".into(),
        "flow A { event [2]; affine_coupling(bound = 1e999); permute(seed = 18446744073709551616); }".into(),
        "flow A { event [2]; affine_coupling(net = mlp([8], leaky_relu(slope = -1e999))); }".into(),
        // A bare carriage return in a doc comment: `expand_pretty` printed it inside a `///`
        // line, which Rust does not lex (found by `mutated_specs`).
        "/// NICE (Dinh et al. 2014) oO\rD`n two moons\nflow NiceMoons { event [2]; rescale; }".into(),
        "flow A { /// a\rb\r\n event [2]; }\r\n".into(),
        // Odd text.
        "flow A { event [2]; \"unterminated".into(),
        "flow A { event [2]; } ///".into(),
        "\u{feff}flow A { event [2]; }".into(),
        "flow A { event [2]; reverse; }\r\n\t\u{1F600}".into(),
        "flow é { event [2]; }".into(),
        String::new(),
    ];
    for src in cases {
        let shown: String = src.chars().take(80).collect();
        let t = std::time::Instant::now();
        let input = src.clone();
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                check_source(&input);
                check_inline(&input);
            })
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("panicked on {shown:?}"));
        assert!(t.elapsed().as_secs() < 5, "took {:?} on {shown:?}", t.elapsed());
    }
}
