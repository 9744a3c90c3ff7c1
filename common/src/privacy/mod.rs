//! Personal data in conversations and summaries: where it is ([`detect`]), and a run's text with
//! each value replaced by a typed placeholder ([`scrub`]). The analyzer flags it in summaries
//! (pii_exposure); a run with `privacy: SCRUB_PII` has the gateway replace it in every text of a
//! row before the row is stored, so nothing downstream (teacher, editor, trainer, exports,
//! report) ever holds the raw value.

pub mod detect;
pub mod scrub;

pub use detect::{PiiKind, PiiSpan, find_digits, find_pii};
pub use scrub::{ConversationScrubber, ScrubCounts};
