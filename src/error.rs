//! One error type for the library; every message is a single line meant for a person.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable GPU adapter, or the adapter cannot give what the model needs.
    #[error("{0}")]
    Gpu(String),
    /// A GPU operation failed after the device was created (validation, lost device, timeout).
    #[error("GPU: {0}")]
    Device(String),
    /// Settings that cannot work (zero sizes, bad rates, unknown names).
    #[error("invalid setting: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Training produced non-finite values; the message names the epoch and batch.
    #[error("{0}")]
    Diverged(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
