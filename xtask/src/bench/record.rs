//! What a benchmark reports: figures, plot points and steps, one JSON per line.
//!
//! A benchmark run as a separate program (persist's and vm's `bench`
//! examples) prints one [`Record`] per line on stdout, tagged by `"type"`:
//!
//! ```json
//! {"type":"step","text":"commit of 64 dirty pages"}
//! {"type":"figure","name":"persist.commit_64_pages","title":"...","unit":"ms",
//!  "amber":[1.2,1.3],"baseline":{"label":"1 MiB-max image","samples":[1.1,1.2]},
//!  "goal":{"ratio_at_most":1.2}}
//! {"type":"point","plot":"commit-vs-dirty","series":"1 GiB maximum","x":64,"samples":[1.2,1.3]}
//! ```
//!
//! Benchmarks send raw samples, never medians: the statistics are computed
//! once, here. A benchmark inside xtask (the kernel one) builds the same
//! records and hands them to the collector directly.

use serde::{Deserialize, Serialize};

/// One line of a benchmark's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// What the benchmark is measuring now (shown on the progress line).
    Step { text: String },
    /// A figure for the report's table.
    Figure(FigureRecord),
    /// A point of a plot's series.
    Point(PointRecord),
}

/// A figure: Amber's samples against a baseline measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureRecord {
    /// Stable key, `BENCHMARK.WHAT` (e.g. `persist.commit_64_pages`).
    pub name: String,
    /// What a reader sees in the table.
    pub title: String,
    /// The unit of every sample (`ms`, `MiB/s`, `ns/call`).
    pub unit: String,
    /// Amber's samples, one per repetition.
    pub amber: Vec<f64>,
    /// What Amber is compared against, when there is something to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineRecord>,
    /// The goal for the ratio Amber / baseline of the medians.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
}

/// The samples of a baseline and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRecord {
    pub label: String,
    pub samples: Vec<f64>,
}

/// A bound on the ratio Amber / baseline: at most for costs (times), at
/// least for rates (throughput).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    RatioAtMost(f64),
    RatioAtLeast(f64),
}

impl Goal {
    /// Whether `ratio` meets this goal.
    pub fn is_met_by(self, ratio: f64) -> bool {
        match self {
            Goal::RatioAtMost(bound) => ratio <= bound,
            Goal::RatioAtLeast(bound) => ratio >= bound,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::RatioAtMost(bound) => write!(formatter, "≤ {bound}"),
            Goal::RatioAtLeast(bound) => write!(formatter, "≥ {bound}"),
        }
    }
}

/// One point of a series: the samples of y at x.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// The plot's id (see `plots::PLOTS`).
    pub plot: String,
    /// The series' label in the legend.
    pub series: String,
    pub x: f64,
    pub samples: Vec<f64>,
}

/// Median, spread and count of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Summary {
    /// The summary of `samples`, or None when there are none or one is not
    /// a finite number (a benchmark that measured nothing reports nothing).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|sample| !sample.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            count: sorted.len(),
        })
    }
}

/// Parses one line of a benchmark's stdout: None for a line that is not a
/// record (anything not starting with `{`, which is passed through as text).
pub fn parse_line(line: &str) -> Option<Result<Record, serde_json::Error>> {
    let line = line.trim();
    line.starts_with('{')
        .then(|| serde_json::from_str::<Record>(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).map(|summary| summary.median);
        assert_eq!(odd, Some(2.0));
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            even,
            Some(Summary {
                median: 2.5,
                min: 1.0,
                max: 4.0,
                count: 4
            })
        );
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn parses_the_documented_lines() {
        let figure = r#"{"type":"figure","name":"a.b","title":"t","unit":"ms",
            "amber":[1.0],"baseline":{"label":"l","samples":[2.0]},
            "goal":{"ratio_at_most":1.2}}"#
            .replace('\n', "");
        match parse_line(&figure) {
            Some(Ok(Record::Figure(record))) => {
                assert_eq!(record.goal, Some(Goal::RatioAtMost(1.2)));
                assert_eq!(
                    record.baseline.map(|baseline| baseline.samples),
                    Some(vec![2.0])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let point = r#"{"type":"point","plot":"p","series":"s","x":64,"samples":[1]}"#;
        assert!(matches!(parse_line(point), Some(Ok(Record::Point(_)))));
        assert!(matches!(
            parse_line(r#"{"type":"step","text":"x"}"#),
            Some(Ok(Record::Step { .. }))
        ));
        assert!(parse_line("plain text").is_none());
        assert!(matches!(parse_line("{bad"), Some(Err(_))));
    }

    #[test]
    fn goals_compare_the_ratio() {
        assert!(Goal::RatioAtMost(1.2).is_met_by(1.2));
        assert!(!Goal::RatioAtMost(1.2).is_met_by(1.21));
        assert!(Goal::RatioAtLeast(0.8).is_met_by(0.9));
        assert!(!Goal::RatioAtLeast(0.8).is_met_by(0.7));
    }
}
