//! Label values made from what the API sends: the bound on their length and the state label of a
//! job without a state. Shared by the queue aggregation and the job name aggregation; no I/O.

use std::borrow::Cow;

/// State label of jobs that have no state at all.
pub const UNKNOWN_STATE: &str = "unknown";

/// Longest state or owner label kept, in bytes (IAM user names are at most 64 characters).
/// Longer values are cut at a character boundary and end in `…`, so one absurd value cannot make
/// `/metrics` huge.
pub const MAX_LABEL_BYTES: usize = 256;

/// `value` cut to at most [`MAX_LABEL_BYTES`] at a character boundary. The cut value ends in
/// `…` so a reader can tell; values of the same long prefix share one series.
pub fn bounded_label(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_LABEL_BYTES {
        return Cow::Borrowed(value);
    }
    let mut end = MAX_LABEL_BYTES - '…'.len_utf8();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &value[..end]))
}
