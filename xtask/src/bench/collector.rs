//! Gathers a benchmark's records into figures and series, with a progress line.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{Result, bail};

use super::record::{FigureRecord, PointRecord, Record, Summary};
use super::report::{Baseline, Figure, Mode, Point, Series};

/// What the benchmarks have reported so far. A benchmark module gets one
/// and feeds it [`Record`]s; it never prints figures itself.
#[derive(Debug)]
pub struct Collector {
    mode: Mode,
    benchmark: String,
    environment: String,
    position: (usize, usize),
    started: Instant,
    step: String,
    is_terminal: bool,
    pub(super) figures: Vec<Figure>,
    pub(super) series: Vec<Series>,
}

impl Collector {
    pub(super) fn new(mode: Mode) -> Collector {
        Collector {
            mode,
            benchmark: String::new(),
            environment: String::new(),
            position: (0, 0),
            started: Instant::now(),
            step: String::new(),
            is_terminal: std::io::stderr().is_terminal(),
            figures: Vec::new(),
            series: Vec::new(),
        }
    }

    /// Full or quick: a benchmark shrinks its workloads in quick mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts benchmark `name` (number `index` of `total`), measured in
    /// `environment` unless it says otherwise.
    pub(super) fn begin(&mut self, name: &str, environment: &str, index: usize, total: usize) {
        self.benchmark = name.into();
        self.environment = environment.into();
        self.position = (index, total);
        self.started = Instant::now();
        self.step = "starting".into();
        self.show_progress();
    }

    /// Where the figures that follow were measured (e.g. QEMU with the
    /// accelerator a probe chose).
    pub fn set_environment(&mut self, environment: impl Into<String>) {
        self.environment = environment.into();
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The baseline samples of figure `name`, recorded earlier in this run:
    /// for a benchmark that compares a later measurement with the same
    /// baseline (the IPC benchmark's pipe).
    pub fn baseline_samples(&self, name: &str) -> Option<&[f64]> {
        self.figures
            .iter()
            .find(|figure| figure.name == name)?
            .baseline
            .as_ref()
            .map(|baseline| baseline.samples.as_slice())
    }

    /// Shows what the benchmark measures now.
    pub fn step(&mut self, text: impl Into<String>) {
        self.step = text.into();
        self.show_progress();
    }

    /// Takes one record; a figure or point without usable samples is the
    /// benchmark's bug, reported as an error.
    pub fn record(&mut self, record: Record) -> Result<()> {
        match record {
            Record::Step { text } => self.step(text),
            Record::Figure(figure) => self.add_figure(figure)?,
            Record::Point(point) => self.add_point(point)?,
        }
        Ok(())
    }

    fn add_figure(&mut self, record: FigureRecord) -> Result<()> {
        let Some(amber) = Summary::of(&record.amber) else {
            bail!("figure {} has no usable samples", record.name);
        };
        let baseline = match record.baseline {
            Some(baseline) => {
                let Some(summary) = Summary::of(&baseline.samples) else {
                    bail!(
                        "the baseline of figure {} has no usable samples",
                        record.name
                    );
                };
                Some(Baseline {
                    label: baseline.label,
                    summary,
                    samples: baseline.samples,
                })
            }
            None => None,
        };
        let ratio = baseline
            .as_ref()
            .filter(|baseline| baseline.summary.median != 0.0)
            .map(|baseline| amber.median / baseline.summary.median);
        let met = record
            .goal
            .zip(ratio)
            .map(|(goal, ratio)| goal.is_met_by(ratio));
        self.figures.push(Figure {
            benchmark: self.benchmark.clone(),
            environment: self.environment.clone(),
            name: record.name,
            title: record.title,
            unit: record.unit,
            amber,
            amber_samples: record.amber,
            baseline,
            ratio,
            goal: record.goal,
            met,
        });
        self.refresh();
        Ok(())
    }

    fn add_point(&mut self, record: PointRecord) -> Result<()> {
        let Some(y) = Summary::of(&record.samples) else {
            bail!(
                "point x={} of {} / {} has no usable samples",
                record.x,
                record.plot,
                record.series
            );
        };
        let point = Point {
            x: record.x,
            y,
            samples: record.samples,
        };
        let existing = self.series.iter_mut().find(|series| {
            series.plot == record.plot
                && series.label == record.series
                && series.benchmark == self.benchmark
        });
        match existing {
            Some(series) => series.points.push(point),
            None => self.series.push(Series {
                plot: record.plot,
                label: record.series,
                benchmark: self.benchmark.clone(),
                environment: self.environment.clone(),
                points: vec![point],
            }),
        }
        Ok(())
    }

    /// Prints a line of text from a benchmark without garbling the
    /// progress line.
    pub fn print_text(&self, line: &str) {
        if self.is_terminal {
            eprint!("\r\x1b[2K");
        }
        println!("{line}");
        self.refresh();
    }

    /// Redraws the progress line on a terminal (a log gets a line per step,
    /// not per figure).
    fn refresh(&self) {
        if self.is_terminal {
            self.show_progress();
        }
    }

    /// Ends the progress line of the current benchmark.
    pub(super) fn finish_line(&self) {
        if self.is_terminal {
            eprintln!();
        }
    }

    /// `[2/3 vm 0:42, 5 figures] checkpoint of one dirty page`: rewritten in
    /// place on a terminal, one line per change elsewhere (CI logs).
    fn show_progress(&self) {
        let elapsed = self.started.elapsed().as_secs();
        let figures = self
            .figures
            .iter()
            .filter(|figure| figure.benchmark == self.benchmark)
            .count();
        let line = format!(
            "[{}/{} {} {}:{:02}, {figures} figures] {}",
            self.position.0,
            self.position.1,
            self.benchmark,
            elapsed / 60,
            elapsed % 60,
            self.step
        );
        let mut stderr = std::io::stderr().lock();
        if self.is_terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}
