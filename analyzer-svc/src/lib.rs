//! The analyzer's domain: the error taxonomy, rule detectors, the model-judged detector
//! interface, the analyzer that runs and merges them, corpus profiles and the evaluation.
//! No tonic or proto types here: the gRPC layer maps between these types and the wire.

pub mod analyzer;
pub mod detectors;
pub mod eval;
pub mod fidelity;
pub mod finding;
pub mod judge;
pub mod profile;
pub mod rating;
pub mod taxonomy;
pub mod text;

pub use analyzer::{
    Analysis, AnalyzeError, AnalyzeOptions, Analyzer, Limits, analyze, error_score, merge_findings,
};
pub use finding::{Evidence, Finding, TextSpan};
pub use profile::{CorpusProfile, ProfileBuilder};
pub use taxonomy::{Category, CategoryId, Severity, TAXONOMY_VERSION, Taxonomy};

pub mod grpc;
pub mod serve;
