//! `mishards bench --scenario groups` end to end, tiny sizes, SQLite:
//! one row per group count (1, 2, 3), every insert row counted, searches
//! answered without errors. Structure only, never timing.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn number(row: &Value, key: &str) -> f64 {
    row.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is not a number in {row}"))
}

#[test]
fn groups_scenario_reports_one_row_per_group_count() {
    let output = Command::new(env!("CARGO_BIN_EXE_mishards"))
        .args(["bench", "--quick", "--json", "--scenario", "groups"])
        .args(["--batches", "3", "--batch-rows", "200", "--clients", "2"])
        .args(["--dim", "16", "--duration", "200ms"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "{report}");
    assert_eq!(scenarios[0]["scenario"], "groups");
    let rows = scenarios[0]["rows"].as_array().unwrap();
    let groups: Vec<f64> = rows.iter().map(|r| number(r, "groups")).collect();
    assert_eq!(groups, vec![1.0, 2.0, 3.0]);
    for r in rows {
        // 2 rounds with --quick, 3 batches of 200 rows each.
        assert_eq!(number(r, "rows_inserted"), 1200.0, "{r}");
        assert!(number(r, "insert_mb_per_s") > 0.0, "{r}");
        assert!(number(r, "searches") > 0.0, "{r}");
        assert!(
            number(r, "search_p50_ms") <= number(r, "search_p99_ms"),
            "{r}"
        );
        assert_eq!(number(r, "search_errors"), 0.0, "{r}");
        number(r, "proxy_cpu_ms_per_mb");
        number(r, "proxy_cpu_us_per_search");
    }
    assert_eq!(number(&rows[0], "mb_per_s_over_1_group"), 1.0);
}
