//! Weights files: safetensors with every parameter tensor of a [`Flow`] under its canonical name,
//! plus metadata that ties the file to the architecture (`flowspec.fingerprint`).
//!
//! Saving never leaves a half-written file where the old one was; loading validates the whole
//! file before touching the flow, so a failed load leaves the flow unchanged.

use crate::error::IoError;
use crate::flow::{Flow, ParamSpec};
use crate::real::Real;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Metadata key: the architecture fingerprint, 16 lowercase hex digits.
pub const KEY_FINGERPRINT: &str = "flowspec.fingerprint";
/// Metadata key: the flow's name in the spec.
pub const KEY_FLOW: &str = "flowspec.flow";
/// Metadata key: `"f32"` or `"f64"`.
pub const KEY_DTYPE: &str = "flowspec.dtype";
/// Metadata key: the file layout version, [`FORMAT`].
pub const KEY_FORMAT: &str = "flowspec.format";
/// The file layout version this crate writes and reads.
pub const FORMAT: &str = "1";

/// Writes every parameter of `flow` to `path` as safetensors.
pub fn save<F: Flow + ?Sized>(flow: &F, path: &Path) -> Result<(), IoError> {
    let name = path.display().to_string();
    let dtype = dtype_of::<F::Real>();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    flow.visit_params(&mut |tensor, shape, data| {
        tensors.push((tensor, shape.to_vec(), to_bytes(data)));
    });
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes);
            view.map(|v| (n.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| IoError::Serialize { path: name.clone(), source })?;
    let metadata = HashMap::from([
        (KEY_FINGERPRINT.to_string(), format!("{:016x}", flow.fingerprint())),
        (KEY_FLOW.to_string(), flow.name().to_string()),
        (KEY_DTYPE.to_string(), F::Real::DTYPE.to_string()),
        (KEY_FORMAT.to_string(), FORMAT.to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|source| IoError::Serialize { path: name.clone(), source })?;
    write_atomically(path, &bytes).map_err(|source| IoError::Io { path: name, source })
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`: a crash or
/// a full disk leaves either the old file or the new one, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh name in the same directory (so the rename stays on one file system).
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = path.file_name().map_or("weights".into(), |f| f.to_string_lossy());
    let tmp = format!(".{file}.tmp-{}-{n}", std::process::id());
    path.with_file_name(tmp)
}

/// Reads `path` into `flow`, after checking that the file was written for this architecture
/// and holds exactly the flow's tensors with the right shapes and dtype.
pub fn load_into<F: Flow + ?Sized>(flow: &mut F, path: &Path) -> Result<(), IoError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| IoError::Io { path: name.clone(), source })?;
    let values = validate(&*flow, &bytes, &name)?;
    let mut values = values.into_iter();
    flow.visit_params_mut(&mut |_, _, data| {
        let v = values.next().expect("validated: one tensor per parameter");
        data.copy_from_slice(&v);
    });
    Ok(())
}

/// The `flowspec.*` (and any other) metadata of a weights file.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, IoError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| IoError::Io { path: name.clone(), source })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|source| IoError::Format { path: name, source })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Checks everything about the file against `flow` and returns each tensor's values in the
/// canonical order.
fn validate<F: Flow + ?Sized>(
    flow: &F,
    bytes: &[u8],
    path: &str,
) -> Result<Vec<Vec<F::Real>>, IoError> {
    let format_err = |source| IoError::Format { path: path.to_string(), source };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(format_err)?;
    let meta = meta.metadata().clone().unwrap_or_default();
    check_metadata(flow, &meta, path)?;
    let file = SafeTensors::deserialize(bytes).map_err(format_err)?;
    let values = flow
        .param_specs()
        .into_iter()
        .map(|spec| tensor_values(&file, spec, path))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(extra) = extra_tensor(&file, flow) {
        let flow = flow.name().to_string();
        return Err(IoError::ExtraTensor { path: path.to_string(), name: extra, flow });
    }
    Ok(values)
}

/// The values of the parameter `spec`, if the file holds it with the flow's dtype and shape.
fn tensor_values<T: Real>(
    file: &SafeTensors,
    spec: ParamSpec,
    path: &str,
) -> Result<Vec<T>, IoError> {
    let (path, name) = (path.to_string(), spec.name);
    let Ok(view) = file.tensor(&name) else {
        return Err(IoError::MissingTensor { path, name });
    };
    if view.dtype() != dtype_of::<T>() {
        let (found, expected) = (view.dtype().to_string(), dtype_of::<T>().to_string());
        return Err(IoError::WrongDtype { path, name, found, expected });
    }
    if view.shape() != spec.shape.as_slice() {
        let found = view.shape().to_vec();
        return Err(IoError::WrongShape { path, name, found, expected: spec.shape });
    }
    Ok(from_bytes(view.data()))
}

/// Checks the format version and that the fingerprint is the flow's.
fn check_metadata<F: Flow + ?Sized>(
    flow: &F,
    meta: &HashMap<String, String>,
    path: &str,
) -> Result<(), IoError> {
    let get = |key: &'static str| {
        meta.get(key).ok_or(IoError::MissingMetadata { path: path.to_string(), key })
    };
    let bad = |key, value: &String, reason| IoError::BadMetadata {
        path: path.to_string(),
        key,
        value: value.clone(),
        reason,
    };
    let format = get(KEY_FORMAT)?;
    if format != FORMAT {
        return Err(bad(KEY_FORMAT, format, "this version of flowspec reads format \"1\""));
    }
    // Before the fingerprint: if it covers the dtype, this is the clearer message.
    let dtype = get(KEY_DTYPE)?;
    if dtype != F::Real::DTYPE {
        return Err(IoError::DtypeMismatch {
            path: path.to_string(),
            found: dtype.clone(),
            flow: flow.name().to_string(),
            expected: F::Real::DTYPE,
        });
    }
    let fingerprint = get(KEY_FINGERPRINT)?;
    let saved = (fingerprint.len() == 16)
        .then(|| u64::from_str_radix(fingerprint, 16).ok())
        .flatten()
        .ok_or_else(|| bad(KEY_FINGERPRINT, fingerprint, "expected 16 hex digits"))?;
    if saved != flow.fingerprint() {
        return Err(IoError::WrongFlow {
            path: path.to_string(),
            saved_flow: meta.get(KEY_FLOW).cloned().unwrap_or_else(|| "?".into()),
            saved_fingerprint: fingerprint.clone(),
            flow: flow.name().to_string(),
            fingerprint: flow.fingerprint(),
        });
    }
    Ok(())
}

/// The first tensor in the file (by name, so the error is deterministic) that the flow lacks.
fn extra_tensor<F: Flow + ?Sized>(file: &SafeTensors, flow: &F) -> Option<String> {
    let known: std::collections::HashSet<String> =
        flow.param_specs().into_iter().map(|s| s.name).collect();
    let mut names: Vec<&str> = file.names().into_iter().filter(|n| !known.contains(*n)).collect();
    names.sort_unstable();
    names.first().map(|n| n.to_string())
}

fn dtype_of<T: Real>() -> Dtype {
    if T::DTYPE == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// Little-endian bytes, as safetensors requires; f32 flows store 4 bytes per value.
fn to_bytes<T: Real>(data: &[T]) -> Vec<u8> {
    if T::DTYPE == "f32" {
        data.iter().flat_map(|v| (v.f64() as f32).to_le_bytes()).collect()
    } else {
        data.iter().flat_map(|v| v.f64().to_le_bytes()).collect()
    }
}

/// The inverse of [`to_bytes`]; exact, since f32 -> f64 -> f32 round-trips.
fn from_bytes<T: Real>(bytes: &[u8]) -> Vec<T> {
    if T::DTYPE == "f32" {
        let word = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64;
        bytes.chunks_exact(4).map(|c| T::of(word(c))).collect()
    } else {
        let word = |c: &[u8]| f64::from_le_bytes(c.try_into().expect("chunk of 8"));
        bytes.chunks_exact(8).map(|c| T::of(word(c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tests::DiagGauss;

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("flowspec-io-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn flow64() -> DiagGauss<f64> {
        let mut f = DiagGauss::new(2);
        f.set_params(&[0.25, -1.5, 0.125, 3.0]);
        f
    }

    /// A tensor to write by hand: name, dtype, shape.
    type Spec<'a> = (&'a str, Dtype, Vec<usize>);

    /// Writes a safetensors file by hand: (name, dtype, shape), all values zero.
    fn write_raw(path: &Path, tensors: &[Spec], meta: &[(&str, &str)]) {
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, dt, shape)| vec![0u8; shape.iter().product::<usize>() * dt.bitsize() / 8])
            .collect();
        let views = tensors.iter().zip(&bytes).map(|((name, dt, shape), b)| {
            (*name, safetensors::tensor::TensorView::new(*dt, shape.clone(), b).unwrap())
        });
        let meta = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    }

    fn good_meta(fp: &str) -> Vec<(&'static str, String)> {
        let fp = fp.to_string();
        vec![
            (KEY_FORMAT, "1".into()),
            (KEY_FINGERPRINT, fp),
            (KEY_FLOW, "Diag".into()),
            (KEY_DTYPE, "f64".into()),
        ]
    }

    fn load_err(path: &Path) -> (IoError, DiagGauss<f64>) {
        let mut flow = flow64();
        let err = load_into(&mut flow, path).unwrap_err();
        (err, flow)
    }

    #[test]
    fn save_then_load_round_trips_f64_and_f32() {
        let dir = TempDir::new("roundtrip");
        let path = dir.file("w.safetensors");
        let src = flow64();
        save(&src, &path).unwrap();
        let mut dst = DiagGauss::<f64>::new(2);
        load_into(&mut dst, &path).unwrap();
        assert_eq!(dst.params(), src.params());

        let mut src32 = DiagGauss::<f32>::new(3);
        src32.set_params(&[0.1, 0.2, 0.3, -1e-7, 1e7, 3.5]);
        save(&src32, &path).unwrap(); // overwrites
        let mut dst32 = DiagGauss::<f32>::new(3);
        load_into(&mut dst32, &path).unwrap();
        assert_eq!(dst32.params(), src32.params());
        let names: Vec<_> =
            std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["w.safetensors"], "no temporary files left behind");
    }

    #[test]
    fn metadata_is_written() {
        let dir = TempDir::new("meta");
        let path = dir.file("w.safetensors");
        save(&flow64(), &path).unwrap();
        let meta = read_metadata(&path).unwrap();
        assert_eq!(meta[KEY_FINGERPRINT], format!("{:016x}", flow64().fingerprint()));
        assert_eq!(meta[KEY_FINGERPRINT].len(), 16);
        assert_eq!((meta[KEY_FLOW].as_str(), meta[KEY_DTYPE].as_str()), ("Diag", "f64"));
        assert_eq!(meta[KEY_FORMAT], "1");
    }

    #[test]
    fn another_architecture_is_refused() {
        let dir = TempDir::new("arch");
        let path = dir.file("weights.safetensors");
        let mut other = DiagGauss::<f64>::new(2);
        other.fingerprint = 0x0123_4567_89ab_cdef;
        save(&other, &path).unwrap();
        let (err, flow) = load_err(&path);
        let expected = format!(
            "{} were saved by flow `Diag` (fingerprint 0123456789abcdef) but this is flow `Diag` \
             (fingerprint {:016x})",
            path.display(),
            flow.fingerprint()
        );
        assert_eq!(err.to_string(), expected);
        assert_eq!(flow.params(), flow64().params(), "a failed load changes nothing");
        save(&DiagGauss::<f32>::new(2), &path).unwrap();
        let (err, _) = load_err(&path);
        assert!(err.to_string().ends_with("holds f32 weights but the flow `Diag` is f64"), "{err}");
    }

    #[test]
    fn tensor_problems_are_refused_before_anything_changes() {
        let dir = TempDir::new("tensors");
        let path = dir.file("w.safetensors");
        let fp = format!("{:016x}", flow64().fingerprint());
        let meta = good_meta(&fp);
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cases: Vec<(Vec<Spec>, &str)> = vec![
            (vec![("mu", Dtype::F64, vec![2])], "tensor `log_sigma` is missing"),
            (
                vec![("mu", Dtype::F64, vec![2]), ("log_sigma", Dtype::F64, vec![3])],
                "tensor `log_sigma` has shape [3], expected [2]",
            ),
            (
                vec![("mu", Dtype::F32, vec![2]), ("log_sigma", Dtype::F64, vec![2])],
                "tensor `mu` has dtype F32, expected F64 (the flow's dtype)",
            ),
            (
                vec![
                    ("mu", Dtype::F64, vec![2]),
                    ("log_sigma", Dtype::F64, vec![2]),
                    ("zz", Dtype::F64, vec![1]),
                ],
                "unexpected tensor `zz` (not a parameter of flow `Diag`)",
            ),
        ];
        for (tensors, msg) in cases {
            write_raw(&path, &tensors, &meta);
            let (err, flow) = load_err(&path);
            assert_eq!(err.to_string(), format!("{}: {msg}", path.display()));
            assert_eq!(flow.params(), flow64().params());
        }
        // The same tensors with valid metadata do load (all zeros).
        write_raw(&path, &[("mu", Dtype::F64, vec![2]), ("log_sigma", Dtype::F64, vec![2])], &meta);
        let mut flow = flow64();
        load_into(&mut flow, &path).unwrap();
        assert_eq!(flow.params(), vec![0.0; 4]);
    }

    #[test]
    fn metadata_problems_are_refused() {
        let dir = TempDir::new("badmeta");
        let path = dir.file("w.safetensors");
        let tensors = [("mu", Dtype::F64, vec![2]), ("log_sigma", Dtype::F64, vec![2])];
        let fp = format!("{:016x}", flow64().fingerprint());
        write_raw(&path, &tensors, &[(KEY_FORMAT, "1"), (KEY_DTYPE, "f64")]);
        let msg = "metadata `flowspec.fingerprint` is missing (not a flowspec weights file?)";
        assert_eq!(load_err(&path).0.to_string(), format!("{}: {msg}", path.display()));
        write_raw(
            &path,
            &tensors,
            &[(KEY_FORMAT, "2"), (KEY_DTYPE, "f64"), (KEY_FINGERPRINT, &fp)],
        );
        assert!(matches!(load_err(&path).0, IoError::BadMetadata { key: KEY_FORMAT, .. }));
        write_raw(
            &path,
            &tensors,
            &[(KEY_FORMAT, "1"), (KEY_DTYPE, "f64"), (KEY_FINGERPRINT, "xyz")],
        );
        assert!(matches!(load_err(&path).0, IoError::BadMetadata { key: KEY_FINGERPRINT, .. }));
        write_raw(&path, &tensors, &[(KEY_FORMAT, "1"), (KEY_FINGERPRINT, &fp)]);
        assert!(matches!(load_err(&path).0, IoError::MissingMetadata { key: KEY_DTYPE, .. }));
    }

    #[test]
    fn broken_files_are_refused() {
        let dir = TempDir::new("broken");
        let path = dir.file("w.safetensors");
        save(&flow64(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 8, 20, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let (err, flow) = load_err(&path);
            assert!(matches!(err, IoError::Format { .. }), "cut {cut}: {err}");
            assert!(err.to_string().contains("not a valid safetensors file"));
            assert_eq!(flow.params(), flow64().params());
        }
        std::fs::write(&path, b"hello, this is not safetensors at all").unwrap();
        assert!(matches!(load_err(&path).0, IoError::Format { .. }));
        assert!(matches!(read_metadata(&path), Err(IoError::Format { .. })));
        let missing = dir.file("missing.safetensors");
        assert!(matches!(load_err(&missing).0, IoError::Io { .. }));
        assert!(matches!(read_metadata(&missing), Err(IoError::Io { .. })));
        let nowhere = dir.file("no/such/dir/w.safetensors");
        assert!(matches!(save(&flow64(), &nowhere), Err(IoError::Io { .. })));
    }
}
