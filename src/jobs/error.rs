use crate::error::{Classify, ErrorClass};
use crate::graph_writer::WriteError;
use crate::lock::LockError;
use crate::metabase::MetabaseError;
use crate::store::StoreError;

use super::envelope::InvalidJob;

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid message: {0}")]
    Invalid(#[from] InvalidJob),
    #[error("refused by policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Metabase(#[from] MetabaseError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Graph(#[from] WriteError),
    /// Metabase is not (yet) in the state the job expects; another attempt may find it.
    #[error("{0}")]
    NotYet(String),
    /// The request can never work against this Metabase (wrong database, missing feature...).
    #[error("{0}")]
    Impossible(String),
    /// The run took longer than its kind's deadline and was abandoned; a retry finishes it.
    #[error("abandoned after its deadline of {}", humantime::format_duration(*.0))]
    DeadlineExceeded(std::time::Duration),
}

impl Classify for JobError {
    fn class(&self) -> ErrorClass {
        match self {
            JobError::Invalid(_) | JobError::Policy(_) | JobError::Impossible(_) => {
                ErrorClass::Permanent
            }
            JobError::Metabase(e) => e.class(),
            JobError::Store(e) => e.class(),
            JobError::Lock(e) => e.class(),
            JobError::Graph(e) => e.class(),
            JobError::NotYet(_) => ErrorClass::Transient,
            // The abandoned run may have left requests applied without their answers: retried,
            // and every step of the retry looks up before it creates.
            JobError::DeadlineExceeded(_) => ErrorClass::OutcomeUnknown,
        }
    }
}
