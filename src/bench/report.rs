//! The result of a bench run: one table per scenario, printed as markdown
//! or as JSON (rows as objects keyed by column, numbers as numbers, a value
//! that was not measured as null).

use serde_json::{json, Value};

/// A whole run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// One line on the setup (mode, metadata, machine).
    pub setup: String,
    pub scenarios: Vec<ScenarioReport>,
    /// Scenarios not run, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// One scenario's table.
#[derive(Clone, Debug, Default)]
pub struct ScenarioReport {
    /// The `--scenario` name.
    pub scenario: String,
    pub title: String,
    /// What was measured on what, in a sentence or two.
    pub setup: String,
    pub columns: Vec<String>,
    /// Each row has one value per column: a number, a string or null.
    pub rows: Vec<Vec<Value>>,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    pub fn new(scenario: &str, title: &str, columns: &[&str]) -> ScenarioReport {
        ScenarioReport {
            scenario: scenario.to_string(),
            title: title.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Adds a row; missing trailing values are null.
    pub fn row(&mut self, mut values: Vec<Value>) {
        values.resize(self.columns.len(), Value::Null);
        self.rows.push(values);
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let map: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect();
                Value::Object(map)
            })
            .collect();
        json!({
            "scenario": self.scenario,
            "title": self.title,
            "setup": self.setup,
            "rows": rows,
            "notes": self.notes,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("### {} (`{}`)\n\n", self.title, self.scenario);
        if !self.setup.is_empty() {
            out.push_str(&format!("{}\n\n", self.setup));
        }
        out.push_str(&format!("| {} |\n", self.columns.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            self.columns.iter().map(|_| "---|").collect::<String>()
        ));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(cell).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        for n in &self.notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out.push('\n');
        out
    }
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "command": self.command,
            "setup": self.setup,
            "scenarios": self.scenarios.iter().map(ScenarioReport::to_json).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|(s, why)| json!({"scenario": s, "reason": why})).collect::<Vec<_>>(),
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("`{}`\n\n{}\n\n", self.command, self.setup);
        for s in &self.scenarios {
            out.push_str(&s.to_markdown());
        }
        for (s, why) in &self.skipped {
            out.push_str(&format!("- `{s}` not run: {why}\n"));
        }
        out
    }
}

/// A number rounded for reading: 3 significant digits below 100, whole
/// numbers above; null as "n/a".
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "n/a".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => round_for_reading(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn round_for_reading(f: f64) -> String {
    let a = f.abs();
    if a >= 100.0 {
        format!("{f:.0}")
    } else if a >= 10.0 {
        format!("{f:.1}")
    } else if a >= 1.0 {
        format!("{f:.2}")
    } else {
        format!("{f:.3}")
    }
}

/// A JSON number from an optional float (null when absent or not finite).
pub fn num(v: Option<f64>) -> Value {
    v.filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_table_with_rounded_numbers_and_na() {
        let mut s = ScenarioReport::new("latency", "Search latency", &["path", "p50_ms", "n"]);
        s.row(vec![json!("proxy"), num(Some(1.23456)), json!(7)]);
        s.row(vec![json!("direct"), num(None)]);
        let md = s.to_markdown();
        assert!(md.contains("| path | p50_ms | n |"));
        assert!(md.contains("|---|---|---|"));
        assert!(md.contains("| proxy | 1.23 | 7 |"));
        assert!(md.contains("| direct | n/a | n/a |"));
    }

    #[test]
    fn json_rows_are_objects_keyed_by_column() {
        let mut s = ScenarioReport::new("insert", "Insert", &["path", "mb_per_s"]);
        s.row(vec![json!("proxy"), num(Some(120.5))]);
        let v = s.to_json();
        assert_eq!(v["rows"][0]["path"], "proxy");
        assert_eq!(v["rows"][0]["mb_per_s"], 120.5);
    }

    #[test]
    fn reading_precision() {
        assert_eq!(round_for_reading(1234.56), "1235");
        assert_eq!(round_for_reading(12.345), "12.3");
        assert_eq!(round_for_reading(1.2345), "1.23");
        assert_eq!(round_for_reading(0.12345), "0.123");
        assert_eq!(num(Some(f64::NAN)), Value::Null);
    }
}
