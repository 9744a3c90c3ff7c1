//! What a status from another service means for a run: decided here, once, for every stage and
//! for the editor pool. The match is exhaustive on purpose: a new code must be decided.

use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service is restarting, overloaded or briefly unreachable: call it again after a
    /// backoff, for as long as the run stays RUNNING.
    Transient,
    /// The call took longer than its deadline: retried a few times (the service may have been
    /// busy), then the item fails (it may be one that simply takes too long).
    Slow,
    /// The service refuses this item (too long for the model's context, empty, ...): the item
    /// fails, the run goes on.
    ItemRejected,
    /// The service failed on this call (INTERNAL, UNKNOWN): maybe this item, maybe the
    /// service. The item fails; [`SERVER_ERRORS_IN_A_ROW`] of them in a row fail the run.
    ServerError,
    /// Retrying cannot help (a misconfiguration, a lost job): the run fails, saying why.
    Fatal,
}

pub fn classify(status: &Status) -> Fault {
    // The model's output for this item was unusable (an INTERNAL that says so): that item fails.
    if arf_common::status::reason(status).as_deref() == Some(arf_common::status::UNUSABLE_OUTPUT) {
        return Fault::ItemRejected;
    }
    // A status made here from a transport error (the connection dropped mid-call: the server
    // was killed) carries that error as its source; one the server sent has none. UNKNOWN and
    // INTERNAL of the first kind are a server going away, not a server failing.
    let local = std::error::Error::source(status).is_some();
    if local && matches!(status.code(), Code::Unknown | Code::Internal) {
        return Fault::Transient;
    }
    by_code(status.code())
}

fn by_code(code: Code) -> Fault {
    use Code::*;
    match code {
        // CANCELLED reaches a client when the connection drops mid-call (the server restarted).
        Unavailable | ResourceExhausted | Aborted | Cancelled => Fault::Transient,
        DeadlineExceeded => Fault::Slow,
        InvalidArgument | OutOfRange => Fault::ItemRejected,
        // An engine that failed on one long prompt, or one that fails on every prompt: which it
        // is shows only over several items.
        Internal | Unknown | DataLoss => Fault::ServerError,
        // A wrong token or certificate, a service without the method, a job or model that is
        // not where the run says: an operator has to act.
        Unauthenticated | PermissionDenied | Unimplemented | NotFound | AlreadyExists
        | FailedPrecondition | Ok => Fault::Fatal,
    }
}

/// Tries of one call that ends in DEADLINE_EXCEEDED before its item fails.
pub const SLOW_ATTEMPTS: u32 = 3;

/// Items in a row that one service fails with a server error before the run fails too.
pub const SERVER_ERRORS_IN_A_ROW: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_service_is_waited_for_and_a_refusal_fails_only_its_item() {
        let of = |code| classify(&Status::new(code, "x"));
        assert_eq!(of(Code::Unavailable), Fault::Transient);
        assert_eq!(of(Code::ResourceExhausted), Fault::Transient);
        assert_eq!(of(Code::DeadlineExceeded), Fault::Slow);
        assert_eq!(of(Code::InvalidArgument), Fault::ItemRejected);
        assert_eq!(of(Code::PermissionDenied), Fault::Fatal);
        assert_eq!(of(Code::Internal), Fault::ServerError);
        assert_eq!(of(Code::Unimplemented), Fault::Fatal);
        let cut_off = arf_common::status::unusable_output("revision JSON cut off");
        assert_eq!(classify(&cut_off), Fault::ItemRejected);
    }
}
