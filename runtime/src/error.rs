//! The errors of data loading ([`DataError`]), weights I/O ([`IoError`]) and training
//! ([`TrainError`]).
//!
//! Every message names what the user has to fix: the file, the 1-based row and column (rows are
//! line numbers in the file, counting a header), and what was found there.

use thiserror::Error;

/// A data file or dataset name that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A cell is not a number.
    #[error("{path}: row {row}, column {col}: not a number: {found:?}")]
    NotANumber { path: String, row: usize, col: usize, found: String },
    /// A cell is NaN or infinite.
    #[error("{path}: row {row}, column {col}: {value}")]
    NonFinite { path: String, row: usize, col: usize, value: f64 },
    /// A row has a different number of columns than the first one.
    #[error("{path}: row {row} has {found} columns, expected {expected} (as in row {first_row})")]
    Ragged { path: String, row: usize, found: usize, expected: usize, first_row: usize },
    /// The file holds no data rows.
    #[error("{path}: no rows")]
    NoRows { path: String },
    /// The file's rows have no columns.
    #[error("{path}: no columns")]
    NoColumns { path: String },
    /// The file has too few rows for what it is used for.
    #[error("{path}: {rows} row(s), at least {min} needed {why}")]
    TooFewRows { path: String, rows: usize, min: usize, why: &'static str },
    /// The file is not readable as CSV.
    #[error("{path}: cannot parse CSV: {reason}")]
    Csv { path: String, reason: String },
    /// The file is not a readable `.npy` file.
    #[error("{path}: not a valid .npy file: {reason}")]
    Npy { path: String, reason: String },
    /// The `.npy` file holds numbers of a type other than float64/float32.
    #[error("{path}: unsupported .npy dtype {found}, expected float64 ('<f8') or float32 ('<f4')")]
    NpyDtype { path: String, found: String },
    /// The `.npy` array is neither 1-D nor 2-D.
    #[error("{path}: the .npy array has {ndim} dimensions, expected 1 or 2")]
    NpyNdim { path: String, ndim: usize },
    /// The file's extension is neither `.csv` nor `.npy`.
    #[error("{path}: unknown file type, expected a .csv or .npy file")]
    UnknownExtension { path: String },
    /// The spec names neither a built-in dataset nor an existing file.
    #[error("`{spec}` is neither a built-in dataset ({builtin}) nor an existing file")]
    UnknownDataset { spec: String, builtin: String },
    /// The data's width differs from the flow's dimension.
    #[error("{source_name} has {found} columns but the flow `{flow}` expects {expected}")]
    WidthMismatch { source_name: String, found: usize, flow: String, expected: usize },
}

/// A weights file that cannot be written or does not fit the flow.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IoError {
    /// Reading, writing or renaming the file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a safetensors file, or it is truncated or corrupt.
    #[error("{path}: not a valid safetensors file (truncated or corrupt?): {source}")]
    Format {
        path: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The weights could not be serialized (e.g. two tensors with the same name).
    #[error("{path}: cannot serialize the weights: {source}")]
    Serialize {
        path: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A `flowspec.*` metadata entry is missing.
    #[error("{path}: metadata `{key}` is missing (not a flowspec weights file?)")]
    MissingMetadata { path: String, key: &'static str },
    /// A `flowspec.*` metadata entry has a value this version cannot use.
    #[error("{path}: metadata `{key}` = {value:?} is invalid: {reason}")]
    BadMetadata { path: String, key: &'static str, value: String, reason: &'static str },
    /// The weights belong to another architecture.
    #[error(
        "{path} were saved by flow `{saved_flow}` (fingerprint {saved_fingerprint}) \
         but this is flow `{flow}` (fingerprint {fingerprint:016x})"
    )]
    WrongFlow {
        path: String,
        saved_flow: String,
        saved_fingerprint: String,
        flow: String,
        fingerprint: u64,
    },
    /// The file holds weights of another dtype than the flow's.
    #[error("{path} holds {found} weights but the flow `{flow}` is {expected}")]
    DtypeMismatch { path: String, found: String, flow: String, expected: &'static str },
    /// A parameter of the flow has no tensor in the file.
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: String, name: String },
    /// The file holds a tensor that is not a parameter of the flow.
    #[error("{path}: unexpected tensor `{name}` (not a parameter of flow `{flow}`)")]
    ExtraTensor { path: String, name: String, flow: String },
    /// A tensor has another shape than the parameter.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WrongShape { path: String, name: String, found: Vec<usize>, expected: Vec<usize> },
    /// A tensor has another element type than the flow.
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected} (the flow's dtype)")]
    WrongDtype { path: String, name: String, found: String, expected: String },
}

/// Training that cannot start or that diverged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// There are no rows to train on.
    #[error("no training data")]
    EmptyData,
    /// Too few rows to carve out a validation split and still train.
    #[error("{rows} row(s) of data: at least 2 are needed to split off validation data")]
    TooFewRows { rows: usize },
    /// `batch_size` is 0.
    #[error("batch size must be at least 1")]
    BatchSizeZero,
    /// Another configuration value is out of range.
    #[error("invalid training configuration: {what}")]
    InvalidConfig { what: String },
    /// The data's width differs from the flow's dimension.
    #[error("the data has {found} columns but the flow `{flow}` expects {expected}")]
    DimMismatch { found: usize, expected: usize, flow: String },
    /// The data holds a NaN or infinite value (row and column 1-based).
    #[error(
        "row {row}, column {col} of the data is {value}: only finite values can be trained on"
    )]
    NonFiniteData { row: usize, col: usize, value: f64 },
    /// The loss became NaN or infinite; the best parameters so far were restored.
    #[error(
        "the loss became {loss} at step {step}; training stopped and the best parameters \
         (from step {best_step}) were restored (try a lower learning rate)"
    )]
    NonFiniteLoss { step: usize, loss: f64, best_step: usize },
    /// Reverse-KL training or distillation met a NaN or infinite loss, gradient or importance
    /// weight; the flow keeps the parameters it had before that step.
    #[error(
        "the {what} became {value} at step {step}; the flow keeps its last finite parameters \
         (check the target log-density where the flow samples, or try a lower learning rate)"
    )]
    NonFiniteKl { step: usize, what: &'static str, value: f64 },
    /// The target log-density returned an array of the wrong shape.
    #[error("the target log-density returned {what} of shape {found:?}, expected {expected:?}")]
    TargetShape { what: &'static str, found: Vec<usize>, expected: Vec<usize> },
}
