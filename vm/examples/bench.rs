//! `cargo xtask bench vm`: the vm against plain wasmi, host calls, checkpoints.
//!
//! Run in release (`cargo run --release -p vm --example bench [DIR]`); prints
//! a table of medians over several repetitions. DIR holds the file-backed
//! image (default target/amber/bench/vm).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm::persist::{BlockDevice, FileDevice, Image, MemoryDevice, NewDomain};
use vm::wasmi::{self, Engine, Linker, Memory, MemoryType, Module, Store};
use vm::{
    DEFAULT_FUEL_SLICE, Domain, DomainRecord, DomainStatus, HashedHeapBacking, MemoryStorage,
    PersistStorage, RunOutcome, Scheduler, StdPlatform,
};

const REPETITIONS: usize = 5;
const LOOP_ITERATIONS: i64 = 30_000_000;
const HOST_CALLS: i64 = 2_000_000;
const CHECKPOINTS: i64 = 200;

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

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(mut run: impl FnMut() -> Duration) -> Duration {
    run(); // warm-up
    median((0..REPETITIONS).map(|_| run()).collect())
}

/// Plain wasmi: the module's `_start` called once, no scheduler, no host ABI.
fn plain_wasmi(wat: &str, with_fuel: bool) -> Duration {
    let mut config = wasmi::Config::default();
    config.consume_fuel(with_fuel);
    let engine = Engine::new(&config);
    let module = Module::new(&engine, wat::parse_str(wat).expect("WAT")).expect("module");
    let mut store = Store::new(&engine, ());
    if with_fuel {
        store.set_fuel(u64::MAX).expect("fuel");
    }
    let memory = Memory::new(&mut store, MemoryType::new(1, Some(1))).expect("memory");
    let mut linker = Linker::new(&engine);
    linker.define("env", "memory", memory).expect("define");
    let instance = linker
        .instantiate_and_start(&mut store, &module)
        .expect("instance");
    let start = instance
        .get_typed_func::<(), ()>(&store, "_start")
        .expect("_start");
    let began = Instant::now();
    start.call(&mut store, ()).expect("run");
    began.elapsed()
}

/// The same module as an Amber domain under the scheduler.
fn through_vm(engine: &Engine, wat: &str) -> Duration {
    let record = DomainRecord::new([1; 16], "bench", wat::parse_str(wat).expect("WAT"));
    let domain = Domain::open(
        engine,
        Arc::new(StdPlatform::default()),
        Box::new(MemoryStorage::new(record)),
        Box::new(HashedHeapBacking::new()),
    )
    .expect("domain");
    let mut scheduler = Scheduler::new(DEFAULT_FUEL_SLICE);
    scheduler.add(domain).expect("add");
    let began = Instant::now();
    while !scheduler.is_finished() {
        scheduler.run_round();
    }
    let elapsed = began.elapsed();
    let status = scheduler.domains()[0].status();
    assert_eq!(
        status,
        DomainStatus::Exited(0),
        "the benchmark domain ended badly"
    );
    elapsed
}

/// Time per commit of one dirty page, with memory at `pages` Wasm pages.
fn checkpoints<D: BlockDevice + Send + 'static>(
    engine: &Engine,
    device: D,
    pages: u32,
) -> Duration {
    let module = wat::parse_str(checkpoint_module(pages, CHECKPOINTS)).expect("WAT");
    let image = Image::create(
        device,
        NewDomain {
            id: 1,
            name: "bench",
            module: &module,
            memory_pages: 1,
            memory_max_pages: 16384,
            args: Vec::new(),
            env: Vec::new(),
        },
    )
    .expect("image");
    let mut domain = Domain::open(
        engine,
        Arc::new(StdPlatform::default()),
        Box::new(PersistStorage::new(image)),
        Box::new(HashedHeapBacking::new()),
    )
    .expect("domain");
    // Run up to the first checkpoint (the big grow and its commit).
    while domain.record().commits < 2 {
        domain.run(u64::MAX / 4);
    }
    let began = Instant::now();
    loop {
        if let RunOutcome::Ended(status) = domain.run(u64::MAX / 4) {
            assert_eq!(status, DomainStatus::Exited(0));
            break;
        }
    }
    began.elapsed() / CHECKPOINTS as u32
}

fn main() {
    let directory = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/amber/bench/vm"));
    std::fs::create_dir_all(&directory).expect("bench directory");
    let engine = vm::new_engine();
    let compute = compute_module(LOOP_ITERATIONS);
    let plain = measure(|| plain_wasmi(&compute, false));
    let plain_fuel = measure(|| plain_wasmi(&compute, true));
    let amber = measure(|| through_vm(&engine, &compute));
    let per_iteration = |time: Duration| time.as_nanos() as f64 / LOOP_ITERATIONS as f64;
    let million_per_second = |time: Duration| LOOP_ITERATIONS as f64 / time.as_secs_f64() / 1e6;
    println!("vm benchmark: median of {REPETITIONS} runs (after one warm-up)");
    println!();
    println!(
        "{:<52} {:>12} {:>14}",
        "CPU-bound loop (12 ops/iteration)", "M iter/s", "vs plain wasmi"
    );
    for (name, time) in [
        ("plain wasmi, no fuel", plain),
        ("plain wasmi, fuel metering", plain_fuel),
        ("Amber vm (scheduler, 10k-fuel slices)", amber),
    ] {
        println!(
            "{name:<52} {:>12.1} {:>13.3}x",
            million_per_second(time),
            per_iteration(plain) / per_iteration(time)
        );
    }
    println!(
        "{:<52} {:>12} {:>13.3}x",
        "Amber vm vs plain wasmi with fuel",
        "",
        per_iteration(plain_fuel) / per_iteration(amber)
    );
    println!();
    let now_calls = measure(|| through_vm(&engine, &host_call_module(HOST_CALLS)));
    let yields = measure(|| through_vm(&engine, &yield_module(HOST_CALLS / 10)));
    println!("{:<52} {:>12}", "host calls", "ns/call");
    println!(
        "{:<52} {:>12.1}",
        "amber.now (runs inside the host function)",
        now_calls.as_nanos() as f64 / HOST_CALLS as f64
    );
    println!(
        "{:<52} {:>12.1}",
        "amber.yield, no asyncify (pause, scheduler, resume)",
        yields.as_nanos() as f64 / (HOST_CALLS / 10) as f64
    );
    println!();
    println!(
        "{:<52} {:>12}",
        "checkpoint of 1 dirty page, 1 GiB-max domain", "us/commit"
    );
    let file_path = directory.join("checkpoint.img");
    for (name, pages, on_file) in [
        ("memory 64 KiB, MemoryDevice", 1u32, false),
        ("memory 64 MiB, MemoryDevice", 1024, false),
        ("memory 64 KiB, FileDevice (fdatasync)", 1, true),
        ("memory 64 MiB, FileDevice (fdatasync)", 1024, true),
    ] {
        let time = measure(|| {
            if on_file {
                let _ = std::fs::remove_file(&file_path);
                let device = FileDevice::create(&file_path, 65_536).expect("image file");
                checkpoints(&engine, device, pages)
            } else {
                checkpoints(&engine, MemoryDevice::new(65_536), pages)
            }
        });
        println!("{name:<52} {:>12.1}", time.as_nanos() as f64 / 1000.0);
    }
    let _ = std::fs::remove_file(&file_path);
    println!();
    println!(
        "Host dirty tracking hashes every page of current memory at a commit (the\n\
         64 MiB rows); the kernel reads dirty bits instead."
    );
}
