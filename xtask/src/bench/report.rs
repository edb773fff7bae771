//! The benchmark report: its model, report.json and report.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::host::Host;
use super::record::{Goal, Summary};

/// How thoroughly the benchmarks ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Several repetitions, release builds: the figures to quote.
    Full,
    /// One repetition, smaller workloads: proves the benchmarks still run
    /// (CI), says nothing about performance.
    Quick,
}

/// Everything one `cargo xtask bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date_utc: String,
    pub commit: String,
    pub mode: Mode,
    pub machine: Host,
    pub benchmarks: Vec<BenchmarkRun>,
    pub figures: Vec<Figure>,
    pub series: Vec<Series>,
    pub plots: Vec<PlotEntry>,
}

/// One benchmark's run: where, how long, and whether it finished.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkRun {
    pub name: String,
    pub environment: String,
    pub seconds: f64,
    /// Why it stopped early, when it did.
    pub error: Option<String>,
}

/// A row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub benchmark: String,
    /// Where it was measured: host or QEMU with its accelerator.
    pub environment: String,
    pub name: String,
    pub title: String,
    pub unit: String,
    pub amber: Summary,
    pub amber_samples: Vec<f64>,
    pub baseline: Option<Baseline>,
    /// Amber's median over the baseline's.
    pub ratio: Option<f64>,
    pub goal: Option<Goal>,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub label: String,
    pub summary: Summary,
    pub samples: Vec<f64>,
}

/// A line of a plot.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub plot: String,
    pub label: String,
    pub benchmark: String,
    pub environment: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: Summary,
    pub samples: Vec<f64>,
}

/// A plot of the report: drawn (its file) or not (why).
#[derive(Debug, Clone, Serialize)]
pub struct PlotEntry {
    pub id: String,
    pub title: String,
    pub file: Option<String>,
    pub missing: Option<String>,
}

impl Report {
    /// Writes report.json and report.md into `directory`.
    pub fn write(&self, directory: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        let json_path = directory.join("report.json");
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        let markdown_path = directory.join("report.md");
        std::fs::write(&markdown_path, self.markdown())
            .with_context(|| format!("writing {}", markdown_path.display()))
    }

    /// The report as Markdown: run, machine, the table, plots, benchmarks.
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "# Amber benchmark report\n");
        let mode = match self.mode {
            Mode::Full => "full (several repetitions, release builds)",
            Mode::Quick => {
                "**quick** (one repetition, small workloads: proves the \
                 benchmarks run; the numbers are not figures)"
            }
        };
        let _ = writeln!(text, "- Run: {} UTC, commit {}", self.date_utc, self.commit);
        let _ = writeln!(text, "- Mode: {mode}");
        let _ = writeln!(text, "- Machine: {}", self.machine.describe());
        let _ = writeln!(
            text,
            "\nAmber and baseline cells give the median, then min–max over n \
             repetitions. Ratio is Amber's median over the baseline's; the goal \
             bounds that ratio. Explanations: docs/performance.md.\n"
        );
        text.push_str(&self.table());
        let _ = writeln!(text, "\n## Plots\n");
        for plot in &self.plots {
            match (&plot.file, &plot.missing) {
                (Some(file), _) => {
                    let _ = writeln!(
                        text,
                        "- [{}]({file})\n\n  ![{}]({file})\n",
                        plot.title, plot.title
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(text, "- {}: not measured yet; {why}", plot.title);
                }
                (None, None) => {
                    let _ = writeln!(text, "- {}: not measured yet", plot.title);
                }
            }
        }
        let _ = writeln!(text, "\n## Benchmarks run\n");
        let _ = writeln!(text, "| benchmark | where | time | result |");
        let _ = writeln!(text, "|---|---|---:|---|");
        for run in &self.benchmarks {
            let result = match &run.error {
                None => "finished".to_string(),
                Some(error) => format!("**failed**: {}", error.replace('|', "\\|")),
            };
            let _ = writeln!(
                text,
                "| {} | {} | {:.0} s | {result} |",
                run.name, run.environment, run.seconds
            );
        }
        text
    }

    /// The figures as a Markdown table.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "| figure | Amber | baseline | ratio | goal | met | where |"
        );
        let _ = writeln!(text, "|---|---|---|---:|---|---|---|");
        for figure in &self.figures {
            let amber = format_summary(&figure.amber, &figure.unit);
            let baseline = match &figure.baseline {
                Some(baseline) => format!(
                    "{}: {}",
                    format_summary(&baseline.summary, &figure.unit),
                    baseline.label
                ),
                None => "—".into(),
            };
            let ratio = figure.ratio.map_or_else(|| "—".into(), significant);
            let goal = figure
                .goal
                .map_or_else(|| "—".into(), |goal| goal.to_string());
            let met = match figure.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(
                text,
                "| {} | {amber} | {baseline} | {ratio} | {goal} | {met} | {} |",
                figure.title, figure.environment
            );
        }
        text
    }
}

/// `median UNIT (min–max, n=N)` with three significant digits.
fn format_summary(summary: &Summary, unit: &str) -> String {
    if summary.count == 1 {
        return format!("{} {unit} (n=1)", significant(summary.median));
    }
    format!(
        "{} {unit} ({}–{}, n={})",
        significant(summary.median),
        significant(summary.min),
        significant(summary.max),
        summary.count
    )
}

/// `value` with three significant digits and no exponent.
pub fn significant(value: f64) -> String {
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        // 0.0123 -> 4 decimals: two leading zeros plus three digits.
        (2 - magnitude.log10().floor() as i32).clamp(2, 9) as usize
    };
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(significant(1234.4), "1234");
        assert_eq!(significant(12.345), "12.3");
        assert_eq!(significant(1.2345), "1.23");
        assert_eq!(significant(0.012345), "0.0123");
        assert_eq!(significant(0.0), "0");
    }
}
