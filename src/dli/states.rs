//! The batch job state vocabulary: the states DLI documents, which of them are active and
//! which terminal (docs/dli-api.md, "Job states"). One list for the whole exporter and the
//! simulator; the API's spelling is lowercased before any comparison with these.

/// States DLI documents; each is exported for every queue, 0 when no job is in it.
pub const KNOWN_STATES: [&str; 5] = ["starting", "running", "recovering", "success", "dead"];

/// States whose oldest job is exported: a job stuck in one of them is what users alert on.
pub const ACTIVE_STATES: [&str; 3] = ["starting", "running", "recovering"];

/// The terminal states DLI documents: a job in one of them has finished.
pub const FINISHED_STATES: [&str; 2] = ["success", "dead"];

/// States after which a job does not run again: DLI's two, then Livy's, which DLI may leak.
pub const TERMINAL_STATES: [&str; 5] = ["success", "dead", "killed", "error", "failed"];

/// Whether `state` (lowercased) is one after which a job does not run again.
pub fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_agree() {
        for s in FINISHED_STATES {
            assert!(KNOWN_STATES.contains(&s) && is_terminal(s));
        }
        for s in ACTIVE_STATES {
            assert!(KNOWN_STATES.contains(&s) && !is_terminal(s));
        }
        assert_eq!(&TERMINAL_STATES[..2], &FINISHED_STATES[..]);
    }
}
