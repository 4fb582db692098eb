//! The one error taxonomy: every failure is classified once, where it is first understood.
//!
//! Callers branch on [`ErrorClass`], never on message text. Transient failures are retried with
//! backoff; permanent ones go to the dead-letter queue at once. Two classes carry more than
//! "retry or not": an authentication failure says nothing about the job (the key is wrong, so
//! every job would fail the same way: stop taking jobs, keep them), and an unknown outcome says
//! a request may have been applied (retry, but look up before creating anything again).

use std::fmt;

/// Whether trying again later can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Connection errors, timeouts, HTTP 5xx/429, revision conflicts, lock timeouts, outages.
    Transient,
    /// Validation, HTTP 400/402/403/404, policy refusals: the same input fails the same way.
    Permanent,
    /// Metabase refused the credentials (401, or 403 where a superuser key may call): not the
    /// job's fault. The job is kept (never dead-lettered) and intake stops until the key works.
    Authentication,
    /// The request may or may not have been applied (the connection broke after it was sent,
    /// or the answer timed out). Retried like a transient failure; whoever created something
    /// must look it up before creating it again.
    OutcomeUnknown,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Authentication => "authentication",
            ErrorClass::OutcomeUnknown => "outcome-unknown",
        }
    }

    /// Whether retrying the job later can succeed by itself (an unknown outcome can; a bad key
    /// needs an operator, so it is handled apart, never by the job's retries).
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::OutcomeUnknown)
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
