//! cordon-common: what every Cordon step shares. The incident request and its validation
//! ([`incident`]), the error enum whose names the state machine routes on ([`error`]), AWS
//! configuration ([`aws`]), the write-once evidence writer ([`evidence`]), the record of every
//! change a step makes ([`timeline`]), the read-only AWS look-ups several steps need ([`lookup`])
//! and the facts of an instance's network that the containment table is computed from
//! ([`network`]). It changes nothing in AWS by itself.

pub mod aws;
pub mod collection;
pub mod error;
pub mod evidence;
pub mod incident;
pub mod lambda;
pub mod lookup;
pub mod network;
#[doc(hidden)]
pub mod testing;
pub mod timeline;

pub use error::StepError;
pub use evidence::{Artifact, EvidenceWriter};
pub use incident::{Incident, IncidentRequest};
pub use timeline::{Action, Gap, Timeline};
