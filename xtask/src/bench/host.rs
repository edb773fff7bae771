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
    let mut text = persist::date_text(seconds);
    text.truncate("YYYY-MM-DD HH:MM".len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\n";
        assert_eq!(field(text, "model name").as_deref(), Some("AMD EPYC"));
        assert_eq!(field(text, "flags"), None);
    }
}
