//! The one error taxonomy: every failure is classified once, where it is first understood.
//!
//! Callers branch on [`ErrorClass`], never on message text. Transient failures are retried with
//! backoff; permanent ones go to the dead-letter queue at once.

use std::fmt;

/// Whether trying again later can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Connection errors, timeouts, HTTP 5xx/429, revision conflicts, lock timeouts, outages.
    Transient,
    /// Validation, HTTP 400/401/402/403/404, policy refusals: the same input fails the same way.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }

    pub fn is_transient(self) -> bool {
        self == ErrorClass::Transient
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every error type that can end a job.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}
