//! `cargo xtask image new | inspect | verify` round trips on tiny modules.

use std::path::PathBuf;

use xtask::image::{self, MemoryLimits, NewArgs};

fn temp_dir(test: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("xtask-image-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn new_args(wasm: PathBuf, output: PathBuf) -> NewArgs {
    NewArgs {
        wasm,
        name: "hello".into(),
        memory_max_mib: None,
        size_mib: None,
        args: vec!["--greet".into()],
        env: vec!["LANG=C".into()],
        output: Some(output),
        listen: Vec::new(),
        durable_replies: false,
    }
}

#[test]
fn new_inspect_verify_round_trip_rewrites_a_defined_memory() {
    let directory = temp_dir("round-trip");
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (memory 2 8) (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    let output = directory.join("hello.img");
    let path = image::new(&new_args(wasm, output.clone())).unwrap();
    assert_eq!(path, output);

    let info = image::inspect(&path).unwrap();
    assert_eq!(info.name, "hello");
    assert_eq!(info.sequence, 1);
    assert_eq!(info.commits, 0);
    assert_eq!(info.memory_pages, 2);
    assert_eq!(info.memory_max_pages, 8);
    assert_eq!(info.pages_stored, 0);
    assert_eq!(info.args, ["--greet"]);
    assert_eq!(info.env, ["LANG=C"]);
    assert_eq!(info.module_sha256.len(), 64);
    // 8 pages of 64 KiB = 128 blocks, three times over, plus slack.
    assert_eq!(info.block_count, 128 * 3 + 1 + 1024);
    assert_eq!(info.blocks_used + info.blocks_free, info.block_count);
    let json = info.to_json();
    assert_eq!(json["name"], "hello");
    assert_eq!(json["blocks"], info.block_count);
    assert!(info.to_text().contains("name:           hello"));

    // The stored module imports its memory now, with the same limits.
    let device = persist::FileDevice::open(&path).unwrap();
    let mut opened = persist::Image::open(device).unwrap();
    let module = opened.module().unwrap();
    assert_eq!(
        image::memory_limits(&module).unwrap(),
        Some(MemoryLimits {
            initial_pages: 2,
            max_pages: Some(8)
        })
    );
    assert!(
        wasmparser::Parser::new(0)
            .parse_all(&module)
            .any(|payload| matches!(payload, Ok(wasmparser::Payload::ImportSection(_))))
    );

    let report = image::verify(&path).unwrap();
    assert_eq!(report.sequence, 1);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn verify_names_the_first_bad_block() {
    let directory = temp_dir("corrupt");
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#)
            .unwrap(),
    )
    .unwrap();
    let path = image::new(&new_args(wasm, directory.join("bad.img"))).unwrap();
    // The module chain is written first, at block 2.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * persist::BLOCK_SIZE + 30] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let error = format!("{:#}", image::verify(&path).unwrap_err());
    assert!(error.contains("block 2"), "{error}");
    assert!(error.contains("module"), "{error}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn missing_and_garbage_files_give_clear_errors() {
    let directory = temp_dir("garbage");
    let missing = directory.join("missing.img");
    let error = format!("{:#}", image::inspect(&missing).unwrap_err());
    assert!(error.contains("does not exist"), "{error}");

    let garbage = directory.join("garbage.img");
    std::fs::write(&garbage, vec![0x5a; 64 * 4096]).unwrap();
    let error = format!("{:#}", image::verify(&garbage).unwrap_err());
    assert!(error.contains("not a domain image"), "{error}");

    let truncated = directory.join("truncated.img");
    std::fs::write(&truncated, [1, 2, 3]).unwrap();
    let error = format!("{:#}", image::inspect(&truncated).unwrap_err());
    assert!(error.contains("too small"), "{error}");

    let not_wasm = directory.join("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let error = image::new(&new_args(not_wasm, directory.join("x.img"))).unwrap_err();
    assert!(format!("{error:#}").contains("not.wasm"), "{error:#}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn memory_max_above_the_modules_own_is_refused() {
    let directory = temp_dir("memory-max");
    let wasm = directory.join("app.wasm");
    std::fs::write(&wasm, wat::parse_str("(module (memory 1 2))").unwrap()).unwrap();
    let mut args = new_args(wasm, directory.join("x.img"));
    args.memory_max_mib = Some(1);
    let error = format!("{:#}", image::new(&args).unwrap_err());
    assert!(error.contains("above the module's own maximum"), "{error}");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A module of `count` empty functions, the first exported as `_start`.
fn many_functions(count: usize) -> Vec<u8> {
    let mut text =
        String::from(r#"(module (import "env" "memory" (memory 1)) (export "_start" (func 0))"#);
    for _ in 0..count {
        text.push_str(" (func)");
    }
    text.push(')');
    wat::parse_str(&text).unwrap()
}

#[test]
fn image_new_refuses_a_module_the_kernel_would_refuse_with_the_vms_words() {
    let directory = temp_dir("refused");
    let memory = r#"(import "env" "memory" (memory 1))"#;
    let entry = r#"(func (export "_start"))"#;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "unknown_import",
            wat::parse_str(format!(
                r#"(module {memory} (import "hacks" "root" (func)) {entry})"#
            ))
            .unwrap(),
            "the module imports unknown hacks.root",
        ),
        (
            "no_entry",
            wat::parse_str(format!(r#"(module {memory} (func (export "main")))"#)).unwrap(),
            "the module exports no _start function",
        ),
        (
            "start_section",
            wat::parse_str(format!(r#"(module {memory} {entry} (start 0))"#)).unwrap(),
            "the module has a start section, which Amber cannot restore",
        ),
        (
            "many_functions",
            many_functions(10_001),
            "invalid wasm module: the Wasm modules exceeds the limit of 10000 functions",
        ),
    ];
    for (name, module, reason) in cases {
        // The words are the vm's own, as the kernel prints them.
        let vm_error = vm::check_module(&module).unwrap_err().to_string();
        assert!(
            vm_error.starts_with(reason),
            "{name}: the vm says {vm_error}"
        );
        let wasm = directory.join(format!("{name}.wasm"));
        std::fs::write(&wasm, &module).unwrap();
        let output = directory.join(format!("{name}.img"));
        let error = format!(
            "{:#}",
            image::new(&new_args(wasm, output.clone())).unwrap_err()
        );
        assert!(
            error.contains(&format!("cannot be a domain: {vm_error}")),
            "{name}: {error}"
        );
        assert!(!output.exists(), "{name}: an image was written");
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

/// `image new`'s flags as the command line gives them.
#[derive(Debug, clap::Parser)]
struct ImageNewLine {
    #[command(flatten)]
    args: NewArgs,
}

fn parse_line(flags: &[&str]) -> Result<NewArgs, String> {
    use clap::Parser;
    let line = ["image-new", "--wasm", "app.wasm", "--name", "server"]
        .into_iter()
        .chain(flags.iter().copied());
    ImageNewLine::try_parse_from(line)
        .map(|line| line.args)
        .map_err(|error| error.to_string())
}

#[test]
fn listen_ports_and_durable_replies_are_stored_and_inspected() {
    let directory = temp_dir("listen");
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (memory 1 2) (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    let output = directory.join("server.img");
    let parsed = parse_line(&["--listen", "6379", "--listen", "80", "--durable-replies"]).unwrap();
    assert_eq!(parsed.listen, [6379, 80]);
    assert!(parsed.durable_replies);
    let mut args = new_args(wasm.clone(), output.clone());
    args.listen = parsed.listen;
    args.durable_replies = parsed.durable_replies;
    let path = image::new(&args).unwrap();

    let info = image::inspect(&path).unwrap();
    assert_eq!(info.network.listen, [6379, 80]);
    assert!(info.network.durable_replies);
    assert!(info.network.connections.is_empty());
    let text = info.to_text();
    assert!(
        text.contains("listen:         6379 (socket 3), 80 (socket 4)\n"),
        "{text}"
    );
    assert!(text.contains("replies:        durable"), "{text}");
    assert!(text.contains("connections:    none\n"), "{text}");
    let json = info.to_json();
    assert_eq!(json["listen"], serde_json::json!([6379, 80]));
    assert_eq!(json["durable_replies"], true);
    assert_eq!(json["connections"], serde_json::json!([]));

    // The sockets open at a commit show too.
    {
        let device = persist::FileDevice::open(&path).unwrap();
        let mut opened = persist::Image::open(device).unwrap();
        opened.metadata_mut().network.connections = vec![5, 6];
        opened.commit().unwrap();
    }
    let info = image::inspect(&path).unwrap();
    assert_eq!(info.to_json()["connections"], serde_json::json!([5, 6]));
    assert!(
        info.to_text()
            .contains("connections:    sockets 5, 6 (open at the commit"),
        "{}",
        info.to_text()
    );

    // Without the flags: no ports, immediate replies.
    let plain = image::new(&new_args(wasm, directory.join("plain.img"))).unwrap();
    let info = image::inspect(&plain).unwrap();
    assert_eq!(info.network, persist::NetworkRecord::default());
    assert!(info.to_text().contains("listen:         none\n"));
    assert!(info.to_text().contains("replies:        immediate\n"));
    assert_eq!(info.to_json()["durable_replies"], false);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn bad_listen_ports_are_refused_with_clear_words() {
    // On the command line: not a number, out of range, zero.
    for (port, words) in [
        ("http", "`http` is not a port number (1 to 65535)"),
        ("65536", "`65536` is not a port number (1 to 65535)"),
        ("-1", "unexpected argument"),
        ("0", "port 0 names no port"),
    ] {
        let error = parse_line(&["--listen", port]).unwrap_err();
        assert!(error.contains(words), "{port}: {error}");
    }
    // What the line parses, image new refuses: twice, or more than 8.
    let directory = temp_dir("bad-listen");
    let wasm = directory.join("app.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(r#"(module (memory 1 2) (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    let output = directory.join("x.img");
    for (listen, words) in [
        (vec![80, 443, 80], "--listen: listen port 80 declared twice"),
        (
            (1..=9).collect(),
            "--listen: 9 listen ports declared (at most 8 allowed)",
        ),
        (vec![0], "--listen: listen port 0 declared"),
    ] {
        let mut args = new_args(wasm.clone(), output.clone());
        args.listen = listen;
        let error = format!("{:#}", image::new(&args).unwrap_err());
        assert!(error.contains(words), "{error}");
        assert!(!output.exists(), "a refused image is not written");
    }
    let eight: Vec<String> = (1..=8).map(|port| port.to_string()).collect();
    let mut line = Vec::new();
    for port in &eight {
        line.extend(["--listen", port.as_str()]);
    }
    assert_eq!(parse_line(&line).unwrap().listen, [1, 2, 3, 4, 5, 6, 7, 8]);
    std::fs::remove_dir_all(&directory).unwrap();
}
