//! Benchmark records for xtask, one JSON object per line on stdout.
//!
//! The format is xtask's (xtask/src/bench/record.rs). The examples write it
//! by hand because persist and vm do not depend on serde_json; vm's bench
//! example includes this file too (`#[path]`), so the writer exists once.

pub enum Goal {
    RatioAtMost(f64),
    RatioAtLeast(f64),
}

pub struct Figure<'a> {
    pub name: &'a str,
    pub title: &'a str,
    pub unit: &'a str,
    pub amber: &'a [f64],
    pub baseline: Option<(&'a str, &'a [f64])>,
    pub goal: Option<Goal>,
}

pub fn step(text: &str) {
    println!(r#"{{"type":"step","text":{}}}"#, string(text));
}

pub fn point(plot: &str, series: &str, x: f64, samples: &[f64]) {
    println!(
        r#"{{"type":"point","plot":{},"series":{},"x":{x},"samples":{}}}"#,
        string(plot),
        string(series),
        numbers(samples)
    );
}

pub fn figure(figure: &Figure<'_>) {
    let mut line = format!(
        r#"{{"type":"figure","name":{},"title":{},"unit":{},"amber":{}"#,
        string(figure.name),
        string(figure.title),
        string(figure.unit),
        numbers(figure.amber)
    );
    if let Some((label, samples)) = figure.baseline {
        line += &format!(
            r#","baseline":{{"label":{},"samples":{}}}"#,
            string(label),
            numbers(samples)
        );
    }
    match figure.goal {
        Some(Goal::RatioAtMost(bound)) => {
            line += &format!(r#","goal":{{"ratio_at_most":{bound}}}"#)
        }
        Some(Goal::RatioAtLeast(bound)) => {
            line += &format!(r#","goal":{{"ratio_at_least":{bound}}}"#)
        }
        None => {}
    }
    println!("{line}}}");
}

/// A JSON string (RFC 8259 section 7).
fn string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            control if control < ' ' => quoted.push_str(&format!("\\u{:04x}", control as u32)),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

/// A JSON array of numbers; Rust prints finite f64 without exponents.
fn numbers(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|value| format!("{value}")).collect();
    format!("[{}]", items.join(","))
}
