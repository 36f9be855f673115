//! Why a policy was refused ([`PolicyError`]), naming the field and its line.

use std::path::PathBuf;

use serde_saphyr::Spanned;

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document is not valid YAML, or a field has the wrong type or is unknown.
    #[error("{}{message}", line_prefix(*line))]
    Syntax {
        /// 1-based line, when known.
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },
    /// A field has a value the spec does not allow.
    #[error("{}{field}: {message}", line_prefix(*line))]
    Invalid {
        /// 1-based line, when known.
        line: Option<u64>,
        /// Dotted path of the field, e.g. `spec.tool_rules[2].rate_limit`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `metadata.signature` does not verify, or a signature is required and absent (-32010).
    #[error("policy signature invalid: {0}")]
    Signature(String),
}

fn line_prefix(line: Option<u64>) -> String {
    line.map_or_else(String::new, |l| format!("line {l}: "))
}

impl PolicyError {
    pub(super) fn invalid<T>(field: impl Into<String>, at: &Spanned<T>, message: impl Into<String>) -> Self {
        Self::Invalid {
            line: line_of(at),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(super) fn invalid_at(field: impl Into<String>, line: Option<u64>, message: impl Into<String>) -> Self {
        Self::Invalid {
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The line the error points at, when known.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Signature(_) => None,
        }
    }
}

pub(super) fn line_of<T>(at: &Spanned<T>) -> Option<u64> {
    let line = at.referenced.line();
    (line > 0).then_some(line)
}
