//! Policy load errors, each pointing at the file, line and field at fault.

use std::fmt;
use std::path::PathBuf;

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: cannot read the policy directory: {source}", .dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no policy files (*.yaml, *.yml) in the directory", .dir.display())]
    NoFiles { dir: PathBuf },
    #[error("{}: cannot read the file: {source}", .file.display())]
    ReadFile {
        file: PathBuf,
        source: std::io::Error,
    },
    /// YAML syntax, a field of the wrong type, or a rule that cannot work as written.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
}

/// Said with a configuration's `policy_dir` that cannot be read.
pub const RELATIVE_POLICY_DIR: &str =
    "a relative policy_dir is relative to the config file's directory";

impl PolicyError {
    /// Where the problem is, when it is inside a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            PolicyError::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// A place in a policy file. Displays as `policies/ops.yaml:12: field `rules[2].quorum``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; `None` when the field could not be found in the text.
    pub line: Option<usize>,
    /// Path of the field at fault (`rules[2].quorum`), when there is one.
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        Ok(())
    }
}
