//! The host a report was measured on: CPU, cores, memory, OS, QEMU.

use std::process::Command;

use serde::Serialize;

use crate::{paths, tools};

/// What the report says of the host. Every field is best effort: a
/// machine that hides something reports "unknown", never an error.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub os: String,
    pub kernel: String,
    pub qemu: String,
    /// The 1-minute load average when the run started: above the core
    /// count, other work competed with the benchmarks.
    pub load_average: f64,
}

impl Host {
    pub fn detect() -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = field(&meminfo, "MemTotal")
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os = os_release
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map_or_else(
                || "unknown OS".into(),
                |name| name.trim_matches('"').to_string(),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |text| text.trim().to_string());
        Host {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |cores| cores.get()),
            memory_mib,
            os,
            kernel: format!("Linux {kernel}"),
            qemu: qemu_version(),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores, {} GiB RAM, {} ({}), {}; load average {:.1} at the start",
            self.cpu,
            self.cores,
            self.memory_mib / 1024,
            self.os,
            self.kernel,
            self.qemu,
            self.load_average
        )
    }
}

/// The value of the first `name : value` line of a /proc file.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

/// `QEMU 7.2.22`, or "QEMU not found".
fn qemu_version() -> String {
    let Ok(qemu) = tools::qemu() else {
        return "QEMU not found".into();
    };
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let version = text.lines().next()?.split("version ").nth(1)?;
            let number = version.split_whitespace().next()?;
            Some(format!("QEMU {number}"))
        })
        .unwrap_or_else(|| "QEMU (version unknown)".into())
}

/// `git describe --always --dirty` of the workspace, or "unknown".
pub fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--exclude", "*"])
        .current_dir(paths::workspace_root())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The current time as `YYYY-MM-DD HH:MM` in UTC.
pub fn now_utc() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (seconds / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let minutes_of_day = seconds % 86_400 / 60;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        minutes_of_day / 60,
        minutes_of_day % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, "chrono-Compatible Low-Level Date
/// Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
    }

    #[test]
    fn proc_fields() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\n";
        assert_eq!(field(text, "model name").as_deref(), Some("AMD EPYC"));
        assert_eq!(field(text, "flags"), None);
    }
}
