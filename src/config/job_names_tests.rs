//! Tests of `metrics.job_names` and `metrics.max_job_names_per_queue`: defaults, anchoring, and
//! errors that name the key and the pattern.

use super::tests::{GOOD, err_keys};
use super::*;

fn with_metrics(metrics: &str) -> String {
    format!("[metrics]\n{metrics}\n{GOOD}")
}

#[test]
fn job_names_are_off_by_default() {
    let s = load_toml_str(GOOD, &Env::new()).expect("valid");
    assert!(s.metrics.job_names.is_empty());
    assert_eq!(s.metrics.max_job_names_per_queue, 100);
    assert!(s.metrics.job_name_filter().is_none());
}

#[test]
fn job_name_patterns_match_the_whole_name() {
    let s = load_toml_str(
        &with_metrics("job_names = [\"daily_.*\", \"hourly_rollup\"]\nmax_job_names_per_queue = 7"),
        &Env::new(),
    )
    .expect("valid");
    let f = s.metrics.job_name_filter().expect("on");
    assert_eq!(f.max_per_queue, 7);
    assert_eq!(f.sources(), ["daily_.*", "hourly_rollup"]);
    for name in ["daily_etl", "daily_", "hourly_rollup"] {
        assert!(f.matches(name), "{name}");
    }
    for name in ["my_daily_etl", "hourly_rollup_2", "xhourly_rollup", ""] {
        assert!(!f.matches(name), "{name}");
    }
    // An alternation inside one pattern stays anchored as a whole.
    let f = JobNameFilter::new(&["a|b".to_string()], 1)
        .expect("compiles")
        .expect("on");
    assert!(f.matches("a") && f.matches("b") && !f.matches("ab") && !f.matches("xa"));
}

#[test]
fn an_invalid_job_name_regex_names_the_key_and_the_pattern() {
    let text = with_metrics("job_names = [\"ok_.*\", \"broken(\"]");
    assert_eq!(err_keys(&text, &Env::new()), vec!["metrics.job_names[1]"]);
    let err = load_toml_str(&text, &Env::new()).expect_err("invalid");
    assert!(err.to_string().contains("\"broken(\""), "{err}");
    assert_eq!(
        JobNameFilter::new(&["x".into(), "(".into()], 5).map(|_| ()),
        Err((1, QueuePattern::new("(").map(|_| ()).expect_err("invalid")))
    );
}

#[test]
fn max_job_names_per_queue_is_bounded() {
    for bad in ["0", "10001", "4294967295"] {
        assert_eq!(
            err_keys(
                &with_metrics(&format!("max_job_names_per_queue = {bad}")),
                &Env::new()
            ),
            vec!["metrics.max_job_names_per_queue"],
            "{bad}"
        );
    }
    for good in ["1", "10000"] {
        load_toml_str(
            &with_metrics(&format!("max_job_names_per_queue = {good}")),
            &Env::new(),
        )
        .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}
