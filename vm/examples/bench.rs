//! `cargo xtask bench --only vm`: the vm against plain wasmi, host calls, checkpoints.
//!
//! Run in release (`cargo run --release -p vm --example bench -- DIR
//! [--quick]`); prints one JSON record per line (xtask/src/bench/record.rs)
//! with the samples of every repetition, after one warm-up. DIR holds the
//! file-backed image. `--quick` runs each measurement once on workloads a
//! tenth the size. `--plain-cpu-loop N` only times the CPU loop of N
//! iterations in plain wasmi (the kernel benchmark's baseline). Domains run
//! on the host runner's memory backing, `vm_host::ProtectedBacking`.

// One writer of the record format, shared with persist's bench example.
#[path = "../../persist/examples/bench/emit.rs"]
#[allow(dead_code, reason = "this benchmark draws no plot points")]
mod emit;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm::persist::{BlockDevice, FileDevice, Image, MemoryDevice, NewDomain};
use vm::wasmi::{self, Caller, Engine, Linker, Memory, MemoryType, Module, Store};
use vm::{
    DEFAULT_FUEL_SLICE, Domain, DomainRecord, DomainStatus, MemoryStorage, PersistStorage,
    RunOutcome, Scheduler, StdPlatform,
};
use vm_host::ProtectedBacking;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Workload sizes and repetitions: full, or a tenth with one repetition.
#[derive(Debug, Clone, Copy)]
struct Workload {
    repetitions: usize,
    loop_iterations: i64,
    host_calls: i64,
    checkpoints: i64,
}

const FULL: Workload = Workload {
    repetitions: 5,
    loop_iterations: 30_000_000,
    host_calls: 2_000_000,
    checkpoints: 200,
};

const QUICK: Workload = Workload {
    repetitions: 1,
    loop_iterations: 3_000_000,
    host_calls: 200_000,
    checkpoints: 20,
};

/// A CPU-bound loop of about a dozen operations per iteration (an LCG and a
/// xor-shift mix), with its result stored so nothing is optimised away.
fn compute_module(iterations: i64) -> String {
    format!(
        r#"(module
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (local $i i64) (local $x i64) (local $y i64)
            (local.set $x (i64.const 12345))
            (loop $again
                (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                                       (i64.const 1442695040888963407)))
                (local.set $y (i64.xor (local.get $y) (i64.shr_u (local.get $x) (i64.const 29))))
                (local.set $y (i64.rotl (local.get $y) (i64.const 7)))
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $again (i64.lt_u (local.get $i) (i64.const {iterations}))))
            (i64.store (i32.const 0) (local.get $y))))"#
    )
}

fn host_call_module(calls: i64) -> String {
    format!(
        r#"(module
        (import "amber" "now" (func $now (result i64)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start") (local $i i64) (local $sum i64)
            (loop $again
                (local.set $sum (i64.add (local.get $sum) (call $now)))
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $again (i64.lt_u (local.get $i) (i64.const {calls}))))
            (i64.store (i32.const 0) (local.get $sum))))"#
    )
}

fn yield_module(calls: i64) -> String {
    format!(
        r#"(module
        (import "amber" "yield" (func $yield))
        (import "env" "memory" (memory 1 1))
        (func (export "_start") (local $i i64)
            (loop $again
                (call $yield)
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $again (i64.lt_u (local.get $i) (i64.const {calls}))))))"#
    )
}

/// Grows memory to `pages` Wasm pages, then dirties one 4 KiB page and
/// commits, `count` times. Memory may grow to 1 GiB (16384 pages).
fn checkpoint_module(pages: u32, count: i64) -> String {
    format!(
        r#"(module
        (import "amber" "checkpoint" (func $checkpoint (result i32)))
        (import "env" "memory" (memory 1 16384))
        (func (export "_start") (local $i i64)
            (drop (memory.grow (i32.const {grow})))
            (drop (call $checkpoint))
            (loop $again
                (i64.store (i32.const 40000) (local.get $i))
                (drop (call $checkpoint))
                (local.set $i (i64.add (local.get $i) (i64.const 1)))
                (br_if $again (i64.lt_u (local.get $i) (i64.const {count}))))))"#,
        grow = pages - 1
    )
}

/// The kernel benchmark's baseline: the CPU loop in plain wasmi without
/// fuel, once to warm up and then `repetitions` times, each printed as
/// `plain-cpu-loop ITERATIONS NANOSECONDS` (put `--quick` first for one).
fn plain_cpu_loop_only(iterations: i64, repetitions: usize) -> Result<()> {
    let compute = compute_module(iterations);
    plain_wasmi(&compute, Fuel::Unmetered)?;
    for _ in 0..repetitions {
        let elapsed = plain_wasmi(&compute, Fuel::Unmetered)?;
        println!("plain-cpu-loop {iterations} {}", elapsed.as_nanos());
    }
    Ok(())
}

/// `repetitions` samples of each of several runs compared with each other:
/// one round of each is the warm-up, then they take turns, so that all of
/// them see the same state of a shared, noisy machine.
fn measure_alternating<const N: usize>(
    repetitions: usize,
    mut runs: [&mut dyn FnMut() -> Result<Duration>; N],
) -> Result<[Vec<Duration>; N]> {
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for repetition in 0..=repetitions {
        for (run, samples) in runs.iter_mut().zip(&mut samples) {
            let time = run()?;
            if repetition > 0 {
                samples.push(time);
            }
        }
    }
    Ok(samples)
}

/// Whether plain wasmi meters fuel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fuel {
    Metered,
    Unmetered,
}

/// Plain wasmi: the module's `_start` called once, no scheduler, no
/// Amber ABI; `amber.now`, when imported, is a bare wasmi host function.
fn plain_wasmi(wat: &str, fuel: Fuel) -> Result<Duration> {
    let mut config = wasmi::Config::default();
    config.consume_fuel(fuel == Fuel::Metered);
    let engine = Engine::new(&config);
    let module = Module::new(&engine, wat::parse_str(wat)?)?;
    let mut store = Store::new(&engine, ());
    if fuel == Fuel::Metered {
        store.set_fuel(u64::MAX)?;
    }
    let memory = Memory::new(&mut store, MemoryType::new(1, Some(1)))?;
    let mut linker = Linker::new(&engine);
    linker.define("env", "memory", memory)?;
    let started = Instant::now();
    linker.func_wrap("amber", "now", move |_caller: Caller<'_, ()>| {
        started.elapsed().as_nanos() as i64
    })?;
    let instance = linker.instantiate_and_start(&mut store, &module)?;
    let start = instance.get_typed_func::<(), ()>(&store, "_start")?;
    let began = Instant::now();
    start.call(&mut store, ())?;
    Ok(began.elapsed())
}

/// The same module as an Amber domain under the scheduler.
fn through_vm(engine: &Engine, wat: &str) -> Result<Duration> {
    let record = DomainRecord::new(
        vm::DomainId::from_le_bytes([1; 16]),
        "bench",
        wat::parse_str(wat)?,
    );
    let domain = Domain::open(
        engine,
        Arc::new(StdPlatform::default()),
        Box::new(MemoryStorage::new(record)),
        Box::new(ProtectedBacking::new()),
    )?;
    let mut scheduler = Scheduler::new(DEFAULT_FUEL_SLICE);
    scheduler.add(domain, ())?;
    let began = Instant::now();
    while !scheduler.is_finished() {
        scheduler.run_round();
    }
    let elapsed = began.elapsed();
    let status = scheduler
        .domains()
        .next()
        .map_or(DomainStatus::Running, |domain| domain.status());
    if status != DomainStatus::Exited(0) {
        return Err(format!("the benchmark domain ended with {status:?}").into());
    }
    Ok(elapsed)
}

/// Time per commit of one dirty page, with memory at `pages` Wasm pages.
fn checkpoints<D: BlockDevice + Send + 'static>(
    engine: &Engine,
    device: D,
    pages: u32,
    count: i64,
) -> Result<Duration> {
    let module = wat::parse_str(checkpoint_module(pages, count))?;
    let image = Image::create(
        device,
        NewDomain {
            id: vm::DomainId(1),
            name: "bench",
            module: &module,
            memory_pages: 1,
            memory_max_pages: 16384,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )?;
    let mut domain = Domain::open(
        engine,
        Arc::new(StdPlatform::default()),
        Box::new(PersistStorage::new(image)),
        Box::new(ProtectedBacking::new()),
    )?;
    // Run up to the first checkpoint (the big grow and its commit).
    while domain.record().commits < 2 {
        domain.run(u64::MAX / 4);
    }
    let began = Instant::now();
    loop {
        if let RunOutcome::Halted(status) = domain.run(u64::MAX / 4) {
            if status != DomainStatus::Exited(0) {
                return Err(format!("the checkpoint domain ended with {status:?}").into());
            }
            break;
        }
    }
    Ok(began.elapsed() / count as u32)
}

/// Rates in millions of loop iterations per second.
fn million_iterations_per_second(times: &[Duration], iterations: i64) -> Vec<f64> {
    times
        .iter()
        .map(|time| iterations as f64 / time.as_secs_f64() / 1e6)
        .collect()
}

fn nanoseconds_per(times: &[Duration], count: i64) -> Vec<f64> {
    times
        .iter()
        .map(|time| time.as_nanos() as f64 / count as f64)
        .collect()
}

fn microseconds(times: &[Duration]) -> Vec<f64> {
    times.iter().map(|time| time.as_secs_f64() * 1e6).collect()
}

fn main() -> Result<()> {
    let mut directory = PathBuf::from("target/amber/bench/vm");
    let mut workload = FULL;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--quick" => workload = QUICK,
            "--plain-cpu-loop" => {
                let iterations = arguments.next().and_then(|word| word.parse().ok());
                let iterations = iterations.ok_or("--plain-cpu-loop needs an iteration count")?;
                return plain_cpu_loop_only(iterations, workload.repetitions);
            }
            _ => directory = PathBuf::from(argument),
        }
    }
    std::fs::create_dir_all(&directory)?;
    let repetitions = workload.repetitions;
    let engine = vm::new_engine();

    let iterations = workload.loop_iterations;
    let compute = compute_module(iterations);
    emit::step("CPU loop: plain wasmi without and with fuel, Amber vm");
    let [plain, plain_fuel, amber] = measure_alternating(
        repetitions,
        [
            &mut || plain_wasmi(&compute, Fuel::Unmetered),
            &mut || plain_wasmi(&compute, Fuel::Metered),
            &mut || through_vm(&engine, &compute),
        ],
    )?;
    let amber_rates = million_iterations_per_second(&amber, iterations);
    emit::figure(&emit::Figure {
        name: "vm.cpu_loop",
        title: "CPU-bound loop in the Amber vm (scheduler, 10k-fuel slices)",
        unit: "M iterations/s",
        amber: &amber_rates,
        baseline: Some((
            "plain wasmi, no fuel",
            &million_iterations_per_second(&plain, iterations),
        )),
        goal: Some(emit::Goal::RatioAtLeast(0.95)),
    });
    emit::figure(&emit::Figure {
        name: "vm.cpu_loop_vs_fuel",
        title: "CPU-bound loop in the Amber vm, against wasmi with fuel",
        unit: "M iterations/s",
        amber: &amber_rates,
        baseline: Some((
            "plain wasmi, fuel metering",
            &million_iterations_per_second(&plain_fuel, iterations),
        )),
        goal: None,
    });

    let calls = workload.host_calls;
    let now_module = host_call_module(calls);
    let yield_calls = calls / 10;
    let yield_module = yield_module(yield_calls);
    emit::step("host calls: a bare wasmi host function, amber.now and amber.yield");
    let [plain_now, now_calls, yields] = measure_alternating(
        repetitions,
        [
            &mut || plain_wasmi(&now_module, Fuel::Metered),
            &mut || through_vm(&engine, &now_module),
            &mut || through_vm(&engine, &yield_module),
        ],
    )?;
    emit::figure(&emit::Figure {
        name: "vm.now_call",
        title: "amber.now host call, wasm to host and back",
        unit: "ns/call",
        amber: &nanoseconds_per(&now_calls, calls),
        baseline: Some((
            "a bare wasmi host function, fuel metering",
            &nanoseconds_per(&plain_now, calls),
        )),
        goal: None,
    });
    // The baseline is a host call that returns at once, so the ratio is
    // what pausing and resuming the call through the scheduler adds.
    emit::figure(&emit::Figure {
        name: "vm.yield",
        title: "amber.yield without asyncify (pause, scheduler, resume)",
        unit: "ns/call",
        amber: &nanoseconds_per(&yields, yield_calls),
        baseline: Some((
            "amber.now, a host call that does not pause",
            &nanoseconds_per(&now_calls, calls),
        )),
        goal: None,
    });

    let count = workload.checkpoints;
    let file_path = directory.join("checkpoint.img");
    let on_memory = |pages: u32| checkpoints(&engine, MemoryDevice::new(65_536), pages, count);
    let on_file = |pages: u32| -> Result<Duration> {
        if file_path.exists() {
            std::fs::remove_file(&file_path)?;
        }
        checkpoints(
            &engine,
            FileDevice::create(&file_path, 65_536)?,
            pages,
            count,
        )
    };
    emit::step("checkpoints in memory, 64 KiB and 64 MiB in use");
    let [memory_small, memory_large] =
        measure_alternating(repetitions, [&mut || on_memory(1), &mut || on_memory(1024)])?;
    emit::step("checkpoints on a file, 64 KiB and 64 MiB in use");
    let [file_small, file_large] =
        measure_alternating(repetitions, [&mut || on_file(1), &mut || on_file(1024)])?;
    if file_path.exists() {
        std::fs::remove_file(&file_path)?;
    }
    emit::figure(&emit::Figure {
        name: "vm.checkpoint_memory_device",
        title: "checkpoint of 1 dirty page, 64 MiB in use, in-memory device",
        unit: "µs",
        amber: &microseconds(&memory_large),
        baseline: Some(("64 KiB in use", &microseconds(&memory_small))),
        goal: Some(emit::Goal::RatioAtMost(2.0)),
    });
    emit::figure(&emit::Figure {
        name: "vm.checkpoint_file_device",
        title: "checkpoint of 1 dirty page, 64 MiB in use, file (fdatasync)",
        unit: "µs",
        amber: &microseconds(&file_large),
        baseline: Some(("64 KiB in use", &microseconds(&file_small))),
        goal: Some(emit::Goal::RatioAtMost(2.0)),
    });
    Ok(())
}
