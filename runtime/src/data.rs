//! Datasets: the built-in ones (embedded in the binary) and user files (`.csv`, `.npy`).
//!
//! Every loader validates what it reads (numbers only, finite, rectangular, at least one row)
//! and reports the first problem with the file, the 1-based row and the 1-based column. For CSV
//! the row is the line number in the file, counting a header, so editors can jump to it.

use crate::error::DataError;
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2};
use ndarray_npy::{ReadNpyError, ReadNpyExt};
use rand::seq::SliceRandom;
use std::path::Path;

/// The names [`builtin`] knows: the embedded files `moons` (sklearn `make_moons`, noise 0.05,
/// standardized with the training statistics) and `digits` (sklearn's 8x8 digits as raw
/// integer pixels 0..16, split by `RandomState(0).permutation(1797)` into 1500 training and 297
/// test images), and the toy sets [`crate::datasets`] generates.
pub const BUILTIN: &[&str] =
    &["moons", "circles", "eight_gaussians", "checkerboard", "spirals", "digits"];

const MOONS_TRAIN: &[u8] = include_bytes!("../data/moons_train.npy");
const MOONS_TEST: &[u8] = include_bytes!("../data/moons_test.npy");
const DIGITS_TRAIN: &[u8] = include_bytes!("../data/digits_train.npy");
const DIGITS_TEST: &[u8] = include_bytes!("../data/digits_test.npy");

/// The share of a user file held out as test data.
const USER_TEST_FRACTION: f64 = 0.1;
/// Longest `.npy` header accepted; numpy itself refuses headers over 10000 bytes by default.
const MAX_NPY_HEADER: usize = 65_536;
/// Deepest bracket nesting accepted in a `.npy` header; real ones nest 2 deep, and the header
/// parser recurses, so a hostile file must not be able to exhaust the stack.
const MAX_NPY_NESTING: usize = 8;

/// A dataset: rows to train on and held-out rows to evaluate on, both `n x D`.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub train: Array2<f64>,
    pub test: Array2<f64>,
}

impl Dataset {
    /// Loads a user file and holds out a seeded 10% of its rows as test data.
    pub fn from_file(path: &Path, seed: u64) -> Result<Dataset, DataError> {
        let x = load_file(path)?;
        if x.nrows() < 2 {
            return Err(DataError::TooFewRows {
                path: path.display().to_string(),
                rows: x.nrows(),
                min: 2,
                why: "to hold out test rows",
            });
        }
        let (train, test) = split_holdout(x, USER_TEST_FRACTION, seed);
        Ok(Dataset { name: path.display().to_string(), train, test })
    }

    /// The number of columns D.
    pub fn dim(&self) -> usize {
        self.train.ncols()
    }
}

/// A built-in dataset by name (one of [`BUILTIN`]), or `None` if there is none of that name.
pub fn builtin(name: &str) -> Option<Dataset> {
    let (train, test) = match name {
        "moons" => (MOONS_TRAIN, MOONS_TEST),
        "digits" => (DIGITS_TRAIN, DIGITS_TEST),
        _ => return crate::datasets::toy(name),
    };
    // The embedded files are part of the build, not user input: failing here is a build bug.
    let parse = |bytes, part| {
        parse_npy(bytes, &format!("{name}_{part}.npy")).expect("embedded dataset is valid")
    };
    Some(Dataset {
        name: name.to_string(),
        train: parse(train, "train"),
        test: parse(test, "test"),
    })
}

/// Whether every value is an integer (and there is at least one value): such data is discrete
/// (pixel intensities, counts) and has no density unless it is dequantized.
pub fn is_integer_valued(x: ArrayView2<f64>) -> bool {
    !x.is_empty() && x.iter().all(|v| v.is_finite() && v.fract() == 0.0)
}

/// A built-in dataset name or the path of a `.csv`/`.npy` file (test rows held out by `seed`).
pub fn resolve(spec: &str, seed: u64) -> Result<Dataset, DataError> {
    if let Some(d) = builtin(spec) {
        return Ok(d);
    }
    let path = Path::new(spec);
    if path.is_file() {
        return Dataset::from_file(path, seed);
    }
    Err(DataError::UnknownDataset { spec: spec.to_string(), builtin: BUILTIN.join(", ") })
}

/// Loads a `.csv` or `.npy` file, chosen by the extension.
pub fn load_file(path: &Path) -> Result<Array2<f64>, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => load_csv(path),
        Some("npy") => load_npy(path),
        _ => Err(DataError::UnknownExtension { path: path.display().to_string() }),
    }
}

/// Loads a CSV file of numbers, with or without a header row.
pub fn load_csv(path: &Path) -> Result<Array2<f64>, DataError> {
    parse_csv(&read_bytes(path)?, &path.display().to_string())
}

/// Loads a float64 or float32 `.npy` array; a 1-D array becomes one column.
pub fn load_npy(path: &Path) -> Result<Array2<f64>, DataError> {
    parse_npy(&read_bytes(path)?, &path.display().to_string())
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io { path: path.display().to_string(), source })
}

/// Parses CSV bytes; `source` names the data in errors. A first row whose cells are not all
/// numbers is a header. Blank lines are skipped.
pub fn parse_csv(bytes: &[u8], source: &str) -> Result<Array2<f64>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // Excel writes a BOM
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true) // ragged rows are reported below, with both row numbers
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut values = Vec::new();
    let mut width: Option<(usize, usize)> = None; // (columns, row that set them)
    let mut rows = 0;
    while read_record(&mut reader, &mut record, source)? {
        if record.iter().all(|cell| cell.is_empty()) {
            continue;
        }
        let row = record.position().map_or(rows + 1, |p| record_line(bytes, p));
        match width {
            None => {
                width = Some((record.len(), row));
                if is_header(&record) {
                    continue;
                }
            }
            Some((expected, first_row)) if record.len() != expected => {
                let (path, found) = (source.to_string(), record.len());
                return Err(DataError::Ragged { path, row, found, expected, first_row });
            }
            Some(_) => {}
        }
        push_row(&record, source, row, &mut values)?;
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::NoRows { path: source.to_string() });
    }
    let cols = width.map_or(0, |(w, _)| w);
    Ok(Array2::from_shape_vec((rows, cols), values).expect("every row has `cols` values"))
}

/// Reads the next record; false at the end of the input.
fn read_record(
    reader: &mut csv::Reader<&[u8]>,
    record: &mut csv::ByteRecord,
    source: &str,
) -> Result<bool, DataError> {
    // Byte records never fail on bad UTF-8 and reading a slice has no I/O, but stay total.
    reader
        .read_byte_record(record)
        .map_err(|e| DataError::Csv { path: source.to_string(), reason: e.to_string() })
}

/// The line a record starts on. csv reports where it began looking, before any blank lines it
/// skipped, so step over those. (A BOM has no newline, so its 3 bytes do not matter here.)
fn record_line(bytes: &[u8], pos: &csv::Position) -> usize {
    let rest = bytes.get(pos.byte() as usize..).unwrap_or_default();
    let blank = rest.iter().take_while(|&&b| b == b'\n' || b == b'\r');
    pos.line() as usize + blank.filter(|&&b| b == b'\n').count()
}

fn is_header(record: &csv::ByteRecord) -> bool {
    record.iter().any(|cell| parse_cell(cell).is_none())
}

fn parse_cell(cell: &[u8]) -> Option<f64> {
    std::str::from_utf8(cell).ok()?.parse().ok()
}

/// Parses one data row, rejecting non-numbers and non-finite numbers.
fn push_row(
    record: &csv::ByteRecord,
    source: &str,
    row: usize,
    values: &mut Vec<f64>,
) -> Result<(), DataError> {
    for (j, cell) in record.iter().enumerate() {
        let Some(value) = parse_cell(cell) else {
            let found = String::from_utf8_lossy(cell).into_owned();
            return Err(DataError::NotANumber { path: source.to_string(), row, col: j + 1, found });
        };
        if !value.is_finite() {
            return Err(DataError::NonFinite { path: source.to_string(), row, col: j + 1, value });
        }
        values.push(value);
    }
    Ok(())
}

/// Parses `.npy` bytes (float64 or float32, 1-D or 2-D); `source` names the data in errors.
pub fn parse_npy(bytes: &[u8], source: &str) -> Result<Array2<f64>, DataError> {
    let npy_err = |reason: String| DataError::Npy { path: source.to_string(), reason };
    precheck_npy(bytes).map_err(|r| npy_err(r.to_string()))?;
    let any = match ArrayD::<f64>::read_npy(bytes) {
        Ok(a) => a,
        Err(ReadNpyError::WrongDescriptor(_)) => match ArrayD::<f32>::read_npy(bytes) {
            Ok(a) => a.mapv(f64::from),
            Err(ReadNpyError::WrongDescriptor(d)) => {
                return Err(DataError::NpyDtype { path: source.to_string(), found: d.to_string() })
            }
            Err(e) => return Err(npy_err(e.to_string())),
        },
        Err(e) => return Err(npy_err(e.to_string())),
    };
    let x = match any.ndim() {
        1 => any.insert_axis(Axis(1)),
        2 => any,
        ndim => return Err(DataError::NpyNdim { path: source.to_string(), ndim }),
    };
    let x = x.into_dimensionality::<Ix2>().expect("checked to be 2-D");
    check_values(&x.view(), source)?;
    Ok(x)
}

/// Checks what ndarray-npy would trust: that the header fits in the file, is small and shallow,
/// and that the data it announces fits in the file. Without this a 20-byte file could make the
/// reader allocate terabytes before noticing that the data is missing.
fn precheck_npy(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("it does not start with the .npy magic string");
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        2 | 3 => return Err("the file is truncated inside the header"),
        _ => return Err("unknown .npy format version"),
    };
    if header_len > MAX_NPY_HEADER {
        return Err("the header is implausibly long");
    }
    let Some(header) = bytes.get(start..start + header_len) else {
        return Err("the file is truncated inside the header");
    };
    if nesting_depth(header) > MAX_NPY_NESTING {
        return Err("the header is nested too deeply");
    }
    let mut reader = &bytes[..start + header_len];
    let Ok(parsed) = ndarray_npy::npy::header::Header::from_reader(&mut reader) else {
        // Let the real reader produce its precise message for a malformed header.
        return Ok(());
    };
    let data_len = bytes.len() - start - header_len;
    let elements = parsed.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    // 4 bytes is the smallest element accepted (float32); anything larger cannot be in the file.
    match elements.and_then(|n| n.checked_mul(4)) {
        Some(bytes_needed) if bytes_needed <= data_len => Ok(()),
        _ => Err("the file is shorter than the array its header announces"),
    }
}

fn nesting_depth(header: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        max = max.max(depth);
    }
    max
}

/// Rejects arrays with no rows, no columns, or a NaN/infinite value (rows and columns 1-based).
fn check_values(x: &ArrayView2<f64>, source: &str) -> Result<(), DataError> {
    if x.nrows() == 0 {
        return Err(DataError::NoRows { path: source.to_string() });
    }
    if x.ncols() == 0 {
        return Err(DataError::NoColumns { path: source.to_string() });
    }
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((i, j), &value)) => {
            Err(DataError::NonFinite { path: source.to_string(), row: i + 1, col: j + 1, value })
        }
        None => Ok(()),
    }
}

/// Checks that data from `source` has the `expected` number of columns of the flow `flow`.
pub fn check_width(
    x: &ArrayView2<f64>,
    expected: usize,
    source: &str,
    flow: &str,
) -> Result<(), DataError> {
    if x.ncols() == expected {
        return Ok(());
    }
    Err(DataError::WidthMismatch {
        source_name: source.to_string(),
        found: x.ncols(),
        flow: flow.to_string(),
        expected,
    })
}

/// The number of rows a `fraction` holdout takes from `n`: none if `fraction` is not positive
/// or `n < 2`, else the rounded share, but at least one row and never all of them.
pub(crate) fn holdout_count(n: usize, fraction: f64) -> usize {
    if fraction.is_nan() || fraction <= 0.0 || n < 2 {
        return 0;
    }
    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
}

/// Splits rows into (kept, held out) by a seeded shuffle; both keep the shuffled order.
pub fn split_holdout(x: Array2<f64>, fraction: f64, seed: u64) -> (Array2<f64>, Array2<f64>) {
    let n = x.nrows();
    let n_out = holdout_count(n, fraction);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut crate::rng_from_seed(seed));
    (x.select(Axis(0), &idx[n_out..]), x.select(Axis(0), &idx[..n_out]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1, Array3};
    use ndarray_npy::WriteNpyExt;
    use rand::RngExt;
    use std::path::PathBuf;

    /// A file under the temp dir, unique per test and process, removed on drop.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let file = format!("flowspec-data-{}-{name}", std::process::id());
            let path = std::env::temp_dir().join(file);
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn csv_err(text: &str) -> String {
        parse_csv(text.as_bytes(), "data.csv").unwrap_err().to_string()
    }

    fn npy_bytes<A: WriteNpyExt>(a: &A) -> Vec<u8> {
        let mut out = Vec::new();
        a.write_npy(&mut out).unwrap();
        out
    }

    #[test]
    fn moons_has_the_right_shape_and_first_row() {
        let d = builtin("moons").unwrap();
        assert_eq!(d.train.dim(), (20000, 2));
        assert_eq!(d.test.dim(), (5000, 2));
        assert_eq!(d.train[[0, 0]], 1.6863673984051184);
        // As printed in moons_train.csv (more digits than f64 needs, hence parsed).
        assert_eq!(d.train[[0, 1]], "-0.041620046637717248".parse::<f64>().unwrap());
        assert_eq!(d.dim(), 2);
        assert!(builtin("moon").is_none());
        assert_eq!(resolve("moons", 0).unwrap().train.nrows(), 20000);
    }

    #[test]
    fn digits_are_the_shared_files() {
        let d = builtin("digits").unwrap();
        assert_eq!((d.train.dim(), d.test.dim()), ((1500, 64), (297, 64)));
        // The first row of digits_train.csv.
        let first = [
            0, 0, 11, 16, 15, 3, 0, 0, 0, 5, 16, 12, 11, 13, 0, 0, 0, 3, 13, 1, 5, 15, 0, 0, 0, 0,
            0, 0, 12, 11, 0, 0, 0, 0, 0, 1, 16, 7, 0, 0, 0, 0, 0, 10, 15, 0, 0, 0, 0, 0, 12, 16,
            16, 11, 1, 0, 0, 0, 13, 13, 8, 13, 16, 8,
        ];
        assert_eq!(d.train.row(0).to_vec(), first.map(f64::from).to_vec());
        assert!(is_integer_valued(d.train.view()) && is_integer_valued(d.test.view()));
        assert!(d.train.iter().chain(&d.test).all(|v| (0.0..=16.0).contains(v)));
    }

    #[test]
    fn every_builtin_resolves() {
        for &name in BUILTIN {
            let d = resolve(name, 0).unwrap();
            assert_eq!(d.name, name);
            assert_eq!(d.train.ncols(), d.test.ncols(), "{name}");
            assert!(d.train.nrows() > d.test.nrows() && d.test.nrows() > 0, "{name}");
        }
        assert!(!is_integer_valued(builtin("moons").unwrap().train.view()));
        assert!(!is_integer_valued(builtin("checkerboard").unwrap().train.view()));
    }

    #[test]
    fn integer_valued() {
        assert!(is_integer_valued(array![[0.0, 3.0], [-2.0, 1e300]].view()));
        assert!(!is_integer_valued(array![[0.0, 3.5]].view()));
        assert!(!is_integer_valued(array![[f64::INFINITY]].view()));
        assert!(!is_integer_valued(array![[f64::NAN]].view()));
        assert!(!is_integer_valued(Array2::<f64>::zeros((0, 3)).view()));
    }

    #[test]
    fn csv_with_and_without_header() {
        let with = parse_csv(b"x,y\n1,2\n3.5, -4e-1\n\n", "a.csv").unwrap();
        assert_eq!(with, array![[1.0, 2.0], [3.5, -0.4]]);
        let without = parse_csv(b"1,2\r\n3.5,-0.4\r\n", "a.csv").unwrap();
        assert_eq!(without, with);
        let one_col = parse_csv(b"v\n1\n2\n", "a.csv").unwrap();
        assert_eq!(one_col, array![[1.0], [2.0]]);
    }

    #[test]
    fn csv_errors_name_file_row_and_column() {
        assert_eq!(
            csv_err("a,b\n1,2\n1,2\n1,2\n1,2\n1,2\n1,abc\n"),
            "data.csv: row 7, column 2: not a number: \"abc\""
        );
        assert_eq!(csv_err("1,2\n3,NaN\n"), "data.csv: row 2, column 2: NaN");
        assert_eq!(csv_err("1,2\n-inf,3\n"), "data.csv: row 2, column 1: -inf");
        assert_eq!(
            csv_err("1,2\n1,2,3\n"),
            "data.csv: row 2 has 3 columns, expected 2 (as in row 1)"
        );
        assert_eq!(csv_err("a,b\n1\n"), "data.csv: row 2 has 1 columns, expected 2 (as in row 1)");
        assert_eq!(csv_err("1,2\n\n3,\n"), "data.csv: row 3, column 2: not a number: \"\"");
        assert_eq!(csv_err(""), "data.csv: no rows");
        assert_eq!(csv_err("x,y\n"), "data.csv: no rows");
        assert_eq!(csv_err("\n\n"), "data.csv: no rows");
        assert_eq!(
            csv_err("\r\n\r\nx\r\n\r\n\r\n1\r\ny\r\n"),
            "data.csv: row 7, column 1: not a number: \"y\""
        );
        assert_eq!(
            csv_err("a\n  \n\"q\nq\"\n"),
            "data.csv: row 3, column 1: not a number: \"q\\nq\""
        );
        let bom = parse_csv(b"\xEF\xBB\xBF1,2\n", "a.csv").unwrap();
        assert_eq!(bom, array![[1.0, 2.0]]);
        let e = csv_err("\u{feff}x,y\n\n\n1,2\n\n3,z\n");
        assert_eq!(e, "data.csv: row 6, column 2: not a number: \"z\"");
    }

    #[test]
    fn npy_float64_float32_and_1d() {
        let x = array![[1.0f64, 2.0], [3.0, 4.0]];
        assert_eq!(parse_npy(&npy_bytes(&x), "a.npy").unwrap(), x);
        let x32 = array![[1.5f32, 2.0], [3.0, -4.25]];
        assert_eq!(parse_npy(&npy_bytes(&x32), "a.npy").unwrap(), x32.mapv(f64::from));
        let v = Array1::from(vec![1.0f64, 2.0, 3.0]);
        assert_eq!(parse_npy(&npy_bytes(&v), "a.npy").unwrap().dim(), (3, 1));
        let fortran = x.t().to_owned();
        assert_eq!(parse_npy(&npy_bytes(&x.t()), "a.npy").unwrap(), fortran);
    }

    #[test]
    fn npy_errors() {
        let err = |bytes: &[u8]| parse_npy(bytes, "a.npy").unwrap_err().to_string();
        let mut x = Array2::<f64>::zeros((3, 2));
        x[[2, 1]] = f64::NAN;
        assert_eq!(err(&npy_bytes(&x)), "a.npy: row 3, column 2: NaN");
        x[[2, 1]] = f64::INFINITY;
        assert_eq!(err(&npy_bytes(&x)), "a.npy: row 3, column 2: inf");
        assert_eq!(err(&npy_bytes(&Array2::<f64>::zeros((0, 2)))), "a.npy: no rows");
        assert_eq!(err(&npy_bytes(&Array2::<f64>::zeros((2, 0)))), "a.npy: no columns");
        let e = err(&npy_bytes(&Array3::<f64>::zeros((2, 2, 2))));
        assert_eq!(e, "a.npy: the .npy array has 3 dimensions, expected 1 or 2");
        assert!(err(&npy_bytes(&array![[1i32, 2]])).starts_with("a.npy: unsupported .npy dtype"));
        let good = npy_bytes(&array![[1.0f64, 2.0]]);
        assert!(err(&good[..good.len() - 3]).starts_with("a.npy: not a valid .npy file"));
        assert!(err(b"1,2\n3,4\n").starts_with("a.npy: not a valid .npy file"));
        let mut extra = good.clone();
        extra.push(0);
        assert!(err(&extra).starts_with("a.npy: not a valid .npy file"));
    }

    #[test]
    fn huge_announced_npy_is_rejected_without_allocating() {
        let good = npy_bytes(&array![[1.0f64, 2.0]]);
        let header_end = 10 + u16::from_le_bytes([good[8], good[9]]) as usize;
        let header = std::str::from_utf8(&good[10..header_end]).unwrap();
        let patched = header.replacen("(1, 2)", "(1000000000000, 2)", 1);
        let mut bytes = good[..10].to_vec();
        bytes[8..10].copy_from_slice(&(patched.len() as u16).to_le_bytes());
        bytes.extend_from_slice(patched.as_bytes());
        bytes.extend_from_slice(&good[header_end..]);
        let e = parse_npy(&bytes, "a.npy").unwrap_err().to_string();
        assert!(e.contains("shorter than the array"), "{e}");
    }

    #[test]
    fn files_by_extension_and_io_errors() {
        let csv = TempFile::new("ok.csv", b"x,y\n1,2\n3,4\n");
        assert_eq!(load_file(&csv.0).unwrap().dim(), (2, 2));
        let npy = TempFile::new("ok.NPY", &npy_bytes(&array![[1.0f64], [2.0]]));
        assert_eq!(load_file(&npy.0).unwrap().dim(), (2, 1));
        let txt = TempFile::new("data.txt", b"1,2\n");
        let e = load_file(&txt.0).unwrap_err().to_string();
        assert!(e.ends_with("data.txt: unknown file type, expected a .csv or .npy file"), "{e}");
        let missing = std::env::temp_dir().join("flowspec-definitely-missing.csv");
        assert!(matches!(load_file(&missing), Err(DataError::Io { .. })));
        let bad = TempFile::new("bad.csv", b"1,2\n3,x\n");
        let e = load_csv(&bad.0).unwrap_err().to_string();
        assert_eq!(e, format!("{}: row 2, column 2: not a number: \"x\"", bad.0.display()));
    }

    #[test]
    fn from_file_and_resolve() {
        let rows: String = (0..50).map(|i| format!("{i},{}\n", 2 * i)).collect();
        let f = TempFile::new("fifty.csv", rows.as_bytes());
        let spec = f.0.to_str().unwrap();
        let a = resolve(spec, 7).unwrap();
        let b = Dataset::from_file(&f.0, 7).unwrap();
        assert_eq!((a.train.nrows(), a.test.nrows()), (45, 5));
        assert_eq!((&a.train, &a.test), (&b.train, &b.test));
        let one = TempFile::new("one.csv", b"1,2\n");
        assert!(matches!(Dataset::from_file(&one.0, 0), Err(DataError::TooFewRows { .. })));
        let e = resolve("mons", 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "`mons` is neither a built-in dataset (moons, circles, eight_gaussians, \
             checkerboard, spirals, digits) nor an existing file"
        );
    }

    #[test]
    fn check_width_names_source_and_flow() {
        let x = Array2::<f64>::zeros((4, 3));
        assert!(check_width(&x.view(), 3, "data.csv", "Moons").is_ok());
        let e = check_width(&x.view(), 2, "data.csv", "Moons").unwrap_err().to_string();
        assert_eq!(e, "data.csv has 3 columns but the flow `Moons` expects 2");
    }

    #[test]
    fn split_holdout_is_seeded_and_a_partition() {
        let x = Array2::from_shape_fn((100, 2), |(i, j)| (i * 2 + j) as f64);
        let (tr, te) = split_holdout(x.clone(), 0.1, 3);
        assert_eq!((tr.nrows(), te.nrows()), (90, 10));
        let (tr2, te2) = split_holdout(x.clone(), 0.1, 3);
        assert_eq!((&tr, &te), (&tr2, &te2));
        assert_ne!(split_holdout(x.clone(), 0.1, 4).1, te);
        let mut firsts: Vec<f64> = tr.column(0).iter().chain(te.column(0)).copied().collect();
        firsts.sort_by(f64::total_cmp);
        assert_eq!(firsts, x.column(0).to_vec());
        assert_eq!(holdout_count(5, 0.01), 1);
        assert_eq!(holdout_count(5, 1.0), 4);
        assert_eq!(holdout_count(1, 0.5), 0);
        assert_eq!(holdout_count(10, 0.0), 0);
        assert_eq!(holdout_count(10, f64::NAN), 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::rng_from_seed(11);
        let seeds = [npy_bytes(&array![[1.0f64, 2.0], [3.0, 4.0]]), b"x,y\n1,2\n3,4\n".to_vec()];
        for i in 0..600 {
            let bytes: Vec<u8> = if i % 3 == 0 {
                let len = rng.random_range(0..200);
                (0..len).map(|_| rng.random()).collect()
            } else {
                // Mutations of valid files reach deeper into the parsers than pure noise.
                let mut b = seeds[i % 2].clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                b.truncate(rng.random_range(0..=b.len()));
                b
            };
            let _ = parse_csv(&bytes, "fuzz.csv");
            let _ = parse_npy(&bytes, "fuzz.npy");
        }
        let f = TempFile::new("fuzz.npy", &[0x93, b'N', b'U', b'M', b'P', b'Y', 2, 0, 255, 255]);
        assert!(load_npy(&f.0).is_err());
        assert!(load_csv(&f.0).is_err());
    }
}
