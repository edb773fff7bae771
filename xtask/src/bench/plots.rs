//! The report's plots: which exist, and drawing them as SVG with plotters.
//!
//! plotters is built with its SVG backend only and without its `ttf`
//! feature, so it needs no fontconfig or freetype: the SVG backend writes
//! text as `<text>` elements and lays them out with plotters' built-in size
//! estimate, and the viewer's fonts draw them.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::report::{PlotEntry, Series, significant};

/// A plot of the report, and what it needs when it has no data.
#[derive(Debug, Clone, Copy)]
pub struct PlotSpec {
    pub id: &'static str,
    pub title: &'static str,
    pub x_label: &'static str,
    pub y_label: &'static str,
    /// Why there is no data, when no benchmark contributed a series.
    pub when_missing: &'static str,
}

/// Commit time against dirty pages (persist).
pub const COMMIT_VS_DIRTY: &str = "commit-vs-dirty";
/// Commit time against the image's memory maximum, at fixed dirty pages
/// (persist): flat when a commit costs what was dirtied.
pub const COMMIT_VS_IMAGE_SIZE: &str = "commit-vs-image-size";
/// Resume time against domain size (kernel).
pub const RESUME_VS_SIZE: &str = "resume-vs-size";
/// Page-in throughput against RAM size, memory over-committed (kernel paging).
pub const PAGE_IN_VS_RAM: &str = "page-in-vs-ram";
/// Migration time against domain size (migrate).
pub const MIGRATION_VS_SIZE: &str = "migration-vs-size";

/// Every plot the report shows, in order. A benchmark contributes to one
/// by emitting points with its id; a plot nobody contributed to is listed
/// as not measured yet, never drawn from made-up data.
pub const PLOTS: [PlotSpec; 5] = [
    PlotSpec {
        id: COMMIT_VS_DIRTY,
        title: "Commit time against dirty pages",
        x_label: "dirty pages (4 KiB) per commit",
        y_label: "commit time (ms)",
        when_missing: "the persist benchmark did not run",
    },
    PlotSpec {
        id: COMMIT_VS_IMAGE_SIZE,
        title: "Commit time against image size",
        x_label: "image memory maximum (MiB)",
        y_label: "commit time (ms)",
        when_missing: "the persist benchmark did not run",
    },
    PlotSpec {
        id: RESUME_VS_SIZE,
        title: "Resume time against domain size",
        x_label: "domain maximum memory (MiB)",
        y_label: "resume: domain open (ms)",
        when_missing: "the kernel benchmark did not run",
    },
    PlotSpec {
        id: PAGE_IN_VS_RAM,
        title: "Page-in throughput against RAM size (memory over-committed)",
        x_label: "guest RAM (MiB)",
        y_label: "page-in throughput (MiB/s)",
        when_missing: "the kernel benchmark did not run",
    },
    PlotSpec {
        id: MIGRATION_VS_SIZE,
        title: "Migration time against domain size",
        x_label: "domain size (MiB)",
        y_label: "migration time (s)",
        when_missing: "the migrate benchmark did not run",
    },
];

/// Draws every plot that has data into `directory` as `ID.svg`; returns
/// one entry per plot of [`PLOTS`] for the report.
pub fn draw_all(series: &[Series], directory: &Path) -> Result<Vec<PlotEntry>> {
    let mut entries = Vec::new();
    for spec in PLOTS {
        let lines: Vec<&Series> = series
            .iter()
            .filter(|line| line.plot == spec.id && !line.points.is_empty())
            .collect();
        let file = format!("{}.svg", spec.id);
        let path = directory.join(&file);
        if lines.is_empty() {
            // A stale plot from an earlier run must not pass for this one's.
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the stale {}", path.display()))?;
            }
            entries.push(PlotEntry {
                id: spec.id.into(),
                title: spec.title.into(),
                file: None,
                missing: Some(spec.when_missing.into()),
            });
            continue;
        }
        draw(&spec, &lines, &path).with_context(|| format!("drawing {}", path.display()))?;
        entries.push(PlotEntry {
            id: spec.id.into(),
            title: spec.title.into(),
            file: Some(file),
            missing: None,
        });
    }
    Ok(entries)
}

/// The log range around `values` with some room at either end.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|value| *value > 0.0)
        .fold((f64::MAX, f64::MIN), |(low, high), value| {
            (low.min(value), high.max(value))
        });
    if low > high {
        return (0.1, 10.0);
    }
    (low / 1.6, high * 1.6)
}

/// Line colours that stay apart on white (a colour-blind-safe set).
const COLORS: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

/// Ticks of a log axis from `low` to `high`: 1, 2 and 5 times each power
/// of ten, only the powers when that gives more than a dozen, and every
/// integer multiple when it gives fewer than three.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let in_range = |multiples: &[f64]| -> Vec<f64> {
        let first = low.log10().floor() as i32;
        let last = high.log10().ceil() as i32;
        (first..=last)
            .flat_map(|exponent| {
                multiples
                    .iter()
                    .map(move |multiple| multiple * 10f64.powi(exponent))
            })
            .filter(|tick| (low..=high).contains(tick))
            .collect()
    };
    let ticks = in_range(&[1.0, 2.0, 5.0]);
    if ticks.len() > 12 {
        in_range(&[1.0])
    } else if ticks.len() < 3 {
        in_range(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    } else {
        ticks
    }
}

/// An axis label: integers as integers, the rest to three digits without
/// trailing zeros.
fn axis_label(value: f64) -> String {
    if value >= 1.0 && value.fract() == 0.0 {
        return format!("{value:.0}");
    }
    let text = significant(value);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// One plot: log-log axes (every plot spans orders of magnitude), the
/// median of each point joined by a line, its min–max as a vertical bar.
fn draw(spec: &PlotSpec, lines: &[&Series], path: &Path) -> Result<()> {
    let points = || lines.iter().flat_map(|line| line.points.iter());
    let (x_low, x_high) = log_bounds(points().map(|point| point.x));
    let (y_low, y_high) =
        log_bounds(points().flat_map(|point| [point.y.min, point.y.median, point.y.max]));
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x_low..x_high)
                .log_scale()
                .with_key_points(log_ticks(x_low, x_high))
                .with_light_points(Vec::new()),
            (y_low..y_high)
                .log_scale()
                .with_key_points(log_ticks(y_low, y_high))
                .with_light_points(Vec::new()),
        )?;
    chart
        .configure_mesh()
        .x_desc(spec.x_label)
        .y_desc(spec.y_label)
        .x_label_formatter(&|x| axis_label(*x))
        .y_label_formatter(&|y| axis_label(*y))
        .draw()?;
    for (index, line) in lines.iter().enumerate() {
        let color = COLORS[index % COLORS.len()].to_rgba();
        let mut sorted = line.points.clone();
        sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
        chart
            .draw_series(LineSeries::new(
                sorted.iter().map(|point| (point.x, point.y.median)),
                color.stroke_width(2),
            ))?
            .label(line.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart.draw_series(
            sorted
                .iter()
                .map(|point| Circle::new((point.x, point.y.median), 4, color.filled())),
        )?;
        chart.draw_series(
            sorted
                .iter()
                .filter(|point| point.y.count > 1)
                .map(|point| {
                    PathElement::new(vec![(point.x, point.y.min), (point.x, point.y.max)], color)
                }),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_one_two_five() {
        assert_eq!(
            log_ticks(0.7, 120.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(0.5, 1e6).len(), 7);
        assert_eq!(log_ticks(3.0, 9.5), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(axis_label(4096.0), "4096");
        assert_eq!(axis_label(0.25), "0.25");
        assert_eq!(axis_label(12.5), "12.5");
    }
}
