//! Tests of `poll.mode` and `poll.full_walk_interval`: defaults, the three modes, and errors that
//! name the key.

use std::time::Duration;

use super::tests::{GOOD, err_keys};
use super::*;

fn with_poll(poll: &str) -> String {
    GOOD.replace("[poll]\n", &format!("[poll]\n{poll}\n"))
}

#[test]
fn auto_every_fifteen_minutes_by_default() {
    let s = load_toml_str(GOOD, &Env::new()).expect("valid");
    assert_eq!(s.poll.mode, PollMode::Auto);
    assert_eq!(s.poll.full_walk_interval, Duration::from_secs(900));
}

#[test]
fn the_three_modes_parse() {
    for (text, mode) in [
        ("full", PollMode::Full),
        ("incremental", PollMode::Incremental),
        ("auto", PollMode::Auto),
    ] {
        let s = load_toml_str(
            &with_poll(&format!("mode = \"{text}\"\nfull_walk_interval = \"1h\"")),
            &Env::new(),
        )
        .expect("valid");
        assert_eq!(s.poll.mode, mode);
        assert_eq!(mode.as_str(), text);
        assert_eq!(s.poll.full_walk_interval, Duration::from_secs(3600));
    }
}

#[test]
fn bad_modes_and_intervals_name_their_key() {
    let err = load_toml_str(&with_poll("mode = \"sometimes\""), &Env::new())
        .expect_err("not a mode")
        .to_string();
    assert!(err.contains("mode") && err.contains("sometimes"), "{err}");
    for bad in ["0s", "25h"] {
        let keys = err_keys(
            &with_poll(&format!("full_walk_interval = \"{bad}\"")),
            &Env::new(),
        );
        assert_eq!(keys, ["poll.full_walk_interval"], "{bad}");
    }
}
