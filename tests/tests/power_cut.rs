//! Power cuts: counter and kv survive SIGKILL of QEMU at random moments.
//!
//! Every round boots the same counter and kv images (plus a fresh kvclient
//! image), waits for counter's first line, and kills QEMU at a random moment
//! (a seeded xorshift picks it; the seed is printed, and
//! `AMBER_POWER_CUT_SEED` replays its choices). After every cut each image
//! must pass a full checksum walk, and the next boot must resume from a state
//! the previous boot could have committed:
//!
//! - counter's first value is at most one above the last value printed
//!   before the cut (a commit never holds a count that was not printed), and
//!   at least the first value of the boot before (a cut never undoes a
//!   commit that was durable when that boot began), at least one above the
//!   last value printed before a confirmed `checkpoint counter`, and never 1
//!   once the image holds a commit beyond the one made at instantiation;
//! - kvclient's `runs before this one: N` never goes back either, and after
//!   a run that printed `kvclient done` followed by a confirmed `checkpoint
//!   kv`, N counts that run.
//!
//! `AMBER_POWER_CUT_ROUNDS` sets the number of rounds (default 20;
//! `cargo xtask soak power-cut N` runs more).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, Xorshift, count_of, domain_image, environment_number,
    last_count, seed_from_environment, test_config, work_dir,
};

/// Rounds when `AMBER_POWER_CUT_ROUNDS` is not set.
const DEFAULT_ROUNDS: u64 = 20;

/// Periodic checkpoints every 200 ms, so that most random cuts land after
/// several of them and some land in the middle of one.
const KERNEL_ARGUMENTS: &str = "checkpoint-ms=200";

/// The cut comes this long after the moment the round waits for, at least.
const MIN_CUT_DELAY_MS: u64 = 50;

/// ... and at most.
const MAX_CUT_DELAY_MS: u64 = 2000;

/// Rounds cut at least this long after counter's first line have seen at
/// least four periodic checkpoints come due; one of them must commit.
const LONG_CUT_DELAY_MS: u64 = 1000;

/// When a round cuts the power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutMoment {
    /// At a random moment after counter's first line: in a periodic
    /// checkpoint, in kvclient's run, during boot's own commits.
    AfterFirstCount,
    /// At a random moment after kvclient printed `kvclient done` and
    /// `checkpoint counter` and `checkpoint kv` were answered.
    AfterCheckpoint,
}

/// What the durable state may be, learnt from everything printed so far.
#[derive(Debug)]
struct Bounds {
    /// The lowest first count the next boot may print.
    lowest_count: u64,
    /// The highest first count the next boot may print (none before the
    /// first boot: a fresh image prints 1).
    highest_count: u64,
    /// The lowest `runs before this one` the next kvclient may print.
    lowest_runs: u64,
    /// The highest: one more than the most any kvclient printed, since each
    /// run stores its own count plus one.
    highest_runs: u64,
}

/// One boot's domains and their images.
struct Images {
    counter: PathBuf,
    kv: PathBuf,
    kvclient: PathBuf,
}

impl Images {
    fn all(&self) -> [PathBuf; 3] {
        [self.counter.clone(), self.kv.clone(), self.kvclient.clone()]
    }

    fn verify(&self) -> Result<()> {
        for image in self.all() {
            xtask::image::verify(&image)?;
        }
        Ok(())
    }
}

/// What one round saw, for the final checks and the summary.
struct RoundReport {
    moment: CutMoment,
    cut_delay_ms: u64,
    /// Whether counter's image holds more commits after the cut than before
    /// the boot.
    has_counter_commit: bool,
}

/// N in `[kvclient] runs before this one: N`.
fn runs_of(line: &str) -> Option<u64> {
    line.split("[kvclient] runs before this one: ")
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

fn counter_commits(image: &Path) -> Result<u64> {
    Ok(xtask::image::inspect(image)?.commits)
}

/// The test's state across rounds.
struct PowerCuts {
    seed: u64,
    random: Xorshift,
    directory: PathBuf,
    counter: PathBuf,
    kv: PathBuf,
    bounds: Bounds,
    /// The transcript of the boot before the current one, for failures.
    previous_transcript: String,
}

impl PowerCuts {
    /// An error naming the seed and showing both boots' transcripts.
    fn failure(&self, round: u64, what: &str, transcript: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "round {round}: {what}\n{}\nreplay with AMBER_POWER_CUT_SEED={}\n\
             ----- transcript of the boot before (ends at the cut) -----\n{}\n\
             ----- transcript of this boot -----\n{transcript}\n----- end of transcripts -----",
            self.describe_bounds(),
            self.seed,
            self.previous_transcript,
        )
    }

    fn describe_bounds(&self) -> String {
        format!(
            "expected a first count in {}..={} and kvclient runs in {}..={}",
            self.bounds.lowest_count,
            self.bounds.highest_count,
            self.bounds.lowest_runs,
            self.bounds.highest_runs
        )
    }

    fn images(&self, name: &str) -> Result<Images> {
        let directory = self.directory.join(name);
        std::fs::create_dir_all(&directory)?;
        Ok(Images {
            counter: self.counter.clone(),
            kv: self.kv.clone(),
            kvclient: domain_image(&directory, "kvclient", "kvclient")?,
        })
    }

    /// Boots `images` and checks counter's first count; returns the machine
    /// and that count.
    fn boot(&self, round: u64, images: &Images) -> Result<(Machine, u64)> {
        let mut config = test_config()?;
        config.append = KERNEL_ARGUMENTS.to_string();
        config.disks = images.all().to_vec();
        let mut machine = Machine::boot(&config)?;
        let line = machine
            .expect("[counter] count ", BOOT_TIMEOUT)
            .map_err(|error| self.failure(round, &format!("{error:#}"), ""))?;
        let first = count_of("counter", &line)
            .ok_or_else(|| self.failure(round, "unreadable count", &machine.transcript()))?;
        if first < self.bounds.lowest_count || first > self.bounds.highest_count {
            return Err(self.failure(
                round,
                &format!("counter resumed at {first}"),
                &machine.transcript(),
            ));
        }
        Ok((machine, first))
    }

    /// Checks every `runs before this one` in `transcript` against the
    /// bounds and returns the last one.
    fn check_runs(&self, round: u64, transcript: &str) -> Result<Option<u64>> {
        let mut last = None;
        for runs in transcript.lines().filter_map(runs_of) {
            if runs < self.bounds.lowest_runs || runs > self.bounds.highest_runs {
                return Err(self.failure(
                    round,
                    &format!("kvclient printed runs before this one: {runs}"),
                    transcript,
                ));
            }
            last = Some(runs);
        }
        Ok(last)
    }

    /// Waits until kvclient printed `kvclient done`, checks its runs and
    /// returns them.
    fn wait_for_kvclient(&self, round: u64, machine: &Machine) -> Result<u64> {
        // kvclient may finish before counter's first line, which `expect`
        // has already consumed, so this looks at the whole transcript.
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while !machine.transcript().contains("[kvclient] kvclient done") {
            if Instant::now() >= deadline {
                return Err(self.failure(round, "kvclient did not finish", &machine.transcript()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.check_runs(round, &machine.transcript())?
            .context("kvclient finished without printing its runs")
    }

    /// Waits for kvclient to finish, then asks for checkpoints of counter
    /// and kv; raises the bounds for what the commits confirm.
    fn checkpoint_after_kvclient(
        &self,
        round: u64,
        machine: &mut Machine,
        pending: &mut Bounds,
    ) -> Result<()> {
        let runs = self.wait_for_kvclient(round, machine)?;

        // Whatever counter commits from now on has at least the count it
        // has printed already.
        let printed = last_count("counter", &machine.transcript()).context("no count")?;
        machine.send_line("checkpoint counter")?;
        let answer = machine.expect("counter: ", ANSWER_TIMEOUT)?;
        if answer.trim_end().ends_with("counter: committed") {
            pending.lowest_count = pending.lowest_count.max(printed + 1);
        } else {
            println!("round {round}: checkpoint counter answered {answer:?}");
        }
        // kv stored `runs + 1` before answering the put that kvclient made
        // before `kvclient done`.
        machine.send_line("checkpoint kv")?;
        let answer = machine.expect("kv: ", ANSWER_TIMEOUT)?;
        if answer.trim_end().ends_with("kv: committed") {
            pending.lowest_runs = pending.lowest_runs.max(runs + 1);
        } else {
            println!("round {round}: checkpoint kv answered {answer:?}");
        }
        Ok(())
    }

    fn round(&mut self, round: u64, moment: CutMoment) -> Result<RoundReport> {
        let images = self.images(&format!("round-{round}"))?;
        let commits_before = counter_commits(&images.counter)?;
        let (mut machine, first) = self.boot(round, &images)?;
        // Bounds for the next boot, from what this boot shows.
        let mut pending = Bounds {
            lowest_count: first,
            highest_count: first,
            lowest_runs: self.bounds.lowest_runs,
            highest_runs: self.bounds.highest_runs,
        };
        if moment == CutMoment::AfterCheckpoint {
            self.checkpoint_after_kvclient(round, &mut machine, &mut pending)?;
        }
        let cut_delay_ms = self.random.between(MIN_CUT_DELAY_MS, MAX_CUT_DELAY_MS);
        thread::sleep(Duration::from_millis(cut_delay_ms));
        machine.power_cut();
        let transcript = machine.transcript();

        let runs = self.check_runs(round, &transcript)?;
        if let Some(runs) = runs {
            // The value kv held at boot (with its durable mailbox applied)
            // is what kvclient read; later commits only raise it.
            pending.lowest_runs = pending.lowest_runs.max(runs);
            pending.highest_runs = pending.highest_runs.max(runs + 1);
        }
        let last = last_count("counter", &transcript).unwrap_or(first);
        pending.highest_count = last + 1;
        if let Err(error) = images.verify() {
            return Err(self.failure(
                round,
                &format!("an image failed verification after the cut: {error:#}"),
                &transcript,
            ));
        }
        let commits_after = counter_commits(&images.counter)?;
        // The first commit of a fresh image holds the state before counter
        // ran; every later one was made after counter printed a count.
        if commits_after >= 2 {
            pending.lowest_count = pending.lowest_count.max(2);
        }
        println!(
            "round {round}: {moment:?}, cut {cut_delay_ms} ms later; counter printed {first}..={last}, \
             kvclient runs {runs:?}, counter commits {commits_before} -> {commits_after}; next boot \
             must resume counter in {}..={}",
            pending.lowest_count, pending.highest_count
        );
        self.bounds = pending;
        self.previous_transcript = transcript;
        Ok(RoundReport {
            moment,
            cut_delay_ms,
            has_counter_commit: commits_after > commits_before,
        })
    }

    /// A last boot checks the last cut, then shuts down cleanly.
    fn final_boot(&mut self, round: u64) -> Result<()> {
        let images = self.images("final")?;
        let (mut machine, _first) = self.boot(round, &images)?;
        self.wait_for_kvclient(round, &machine)?;
        machine.send_line("shutdown")?;
        machine.expect_exit(0, ANSWER_TIMEOUT)?;
        images.verify()
    }
}

#[test]
fn counter_and_kv_survive_power_cuts_at_random_moments() -> Result<()> {
    let started = Instant::now();
    let rounds = environment_number("AMBER_POWER_CUT_ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    let seed = seed_from_environment("AMBER_POWER_CUT_SEED")?;
    println!("power cuts: {rounds} rounds, AMBER_POWER_CUT_SEED={seed}");
    let directory = work_dir("power-cut")?;
    let mut cuts = PowerCuts {
        seed,
        random: Xorshift::new(seed),
        counter: domain_image(&directory, "counter", "counter")?,
        kv: domain_image(&directory, "kv", "kv")?,
        directory,
        bounds: Bounds {
            lowest_count: 1,
            highest_count: 1,
            lowest_runs: 0,
            highest_runs: 0,
        },
        previous_transcript: String::new(),
    };

    let mut reports = Vec::new();
    for round in 0..rounds {
        // The first round always checkpoints, so that even one round shows
        // kv keeping a finished run; later rounds choose at random.
        let moment = if round == 0 || cuts.random.next_u64().is_multiple_of(2) {
            CutMoment::AfterCheckpoint
        } else {
            CutMoment::AfterFirstCount
        };
        let report = cuts
            .round(round, moment)
            .with_context(|| format!("round {round}, AMBER_POWER_CUT_SEED={seed}"))?;
        reports.push(report);
    }
    cuts.final_boot(rounds)
        .with_context(|| format!("the boot after the last cut, AMBER_POWER_CUT_SEED={seed}"))?;

    if rounds > 0 {
        assert!(
            cuts.bounds.lowest_runs >= 1,
            "kv never confirmed a checkpoint after kvclient's run"
        );
    }
    // Periodic checkpoints must happen: rounds cut long after the first
    // count must (almost) all have committed counter. One is enough here, so
    // that a starved machine does not fail the test.
    let long_rounds: Vec<&RoundReport> = reports
        .iter()
        .filter(|report| {
            report.moment == CutMoment::AfterFirstCount && report.cut_delay_ms >= LONG_CUT_DELAY_MS
        })
        .collect();
    let committed = long_rounds
        .iter()
        .filter(|report| report.has_counter_commit)
        .count();
    assert!(
        long_rounds.len() < 3 || committed > 0,
        "no periodic checkpoint of counter in {} rounds cut at least {LONG_CUT_DELAY_MS} ms \
         after its first count (seed {seed})",
        long_rounds.len()
    );
    println!(
        "power cuts: {rounds} cuts survived in {:.1} s (seed {seed}); {committed} of {} long \
         rounds without an explicit checkpoint had committed counter",
        started.elapsed().as_secs_f64(),
        long_rounds.len()
    );
    Ok(())
}
