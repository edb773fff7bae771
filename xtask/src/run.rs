//! `cargo xtask run`: build and boot Amber with the console on this terminal.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::gateway::{Backend, Gateway};
use crate::private::ClusterSecretFile;
use crate::qemu::{Accel, Console, Forward, LinkEnd, NetLink, QemuConfig, UserNet, free_port};
use crate::{app, archive, console, image, kernel, paths, tools};

/// The demo set `cargo xtask run` boots without `--domain`, in disk order.
pub const DEMO_APPS: [&str; 4] = ["hello", "counter", "kv", "kvclient"];

/// The demo app that runs once and exits, and is therefore given a fresh
/// image on every run: each run then shows kv's count of kvclient runs go up,
/// which is the point of the kv pair. The other images are kept.
const ONE_SHOT_DEMO_APP: &str = "kvclient";

/// Size of each spare disk `run` makes (sparse: unused blocks take no space).
const SPARE_DISK_BYTES: u64 = 1 << 30;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Kernel command line (e.g. `test=panic` or `checkpoint-ms=200`).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Accelerator; default KVM when a probe boot under KVM works, TCG otherwise.
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// Boot this domain image instead of the demo set (repeatable; each image
    /// is one virtio-blk disk, in the order given).
    #[arg(long = "domain", value_name = "IMG")]
    pub domains: Vec<PathBuf>,
    /// Recreate the demo images in target/amber/disks, starting every demo
    /// domain from scratch, and blank the spare disks (dropping the domains
    /// `spawn` put on them).
    #[arg(long, conflicts_with = "domains")]
    pub fresh: bool,
    /// Boot two linked instances sharing a fresh cluster secret: A
    /// (169.254.0.1, this terminal) with the disks above and one more spare
    /// disk, and B (169.254.0.2, console on a private Unix socket that
    /// `cargo xtask console` attaches to) with two spare disks kept in
    /// target/amber/pair/. On A, `migrate counter 169.254.0.2` moves
    /// counter to B.
    #[arg(long)]
    pub pair: bool,
    /// Forward 127.0.0.1:HOSTPORT to a domain's PORT through a user-networking
    /// card (repeatable; for domains spawned at the console). With `--pair`,
    /// HOSTPORT follows the domain to whichever machine runs it (a gateway
    /// in front of a forward of A's and one of B's).
    #[arg(long = "forward", value_name = "HOSTPORT:PORT", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
}

/// `HOSTPORT:PORT`, both 1-65535.
fn parse_forward(text: &str) -> Result<Forward, String> {
    let (host, guest) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected HOSTPORT:PORT"))?;
    let port = |part: &str| -> Result<u16, String> {
        match part.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{part:?}: not a port (1-65535)")),
            Ok(port) => Ok(port),
        }
    };
    Ok(Forward {
        host_port: port(host)?,
        guest_port: port(guest)?,
    })
}

/// The user card for `forwards`, None without any.
fn user_net_of(forwards: &[Forward]) -> Option<UserNet> {
    if forwards.is_empty() {
        return None;
    }
    Some(UserNet {
        forwards: forwards.to_vec(),
    })
}

/// A port a domain image among `disks` declares
/// (`Metadata.network.listen`) or an app of the apps archive declares (so
/// that a domain `spawn` starts is reachable too), with a name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeclaredPort {
    /// The domain's name, or the app's with how to start it.
    name: String,
    guest_port: u16,
}

/// Every port the images among `disks` and the apps of the archive
/// `archive` declare, each guest port once (two domains cannot hold one
/// port). Blank spares have no ports.
fn declared_ports(disks: &[PathBuf], archive: &Path) -> Result<Vec<DeclaredPort>> {
    let mut declared: Vec<DeclaredPort> = Vec::new();
    let mut add = |name: String, guest_port: u16| {
        if !declared.iter().any(|port| port.guest_port == guest_port) {
            declared.push(DeclaredPort { name, guest_port });
        }
    };
    for disk in disks {
        if is_blank(disk)? {
            continue;
        }
        let image = match image::open(disk) {
            Ok(image) => image,
            Err(error) => {
                eprintln!("warning: {error:#}; no forwards for it");
                continue;
            }
        };
        let metadata = image.metadata();
        for &port in &metadata.network.listen {
            add(metadata.name.escape_debug().to_string(), port);
        }
    }
    let device = persist::FileDevice::open(archive)
        .with_context(|| format!("opening {}", archive.display()))?;
    let archive = persist::archive::Archive::open(device)
        .with_context(|| format!("reading the apps archive {}", archive.display()))?;
    for entry in archive.entries() {
        for &port in &entry.network.listen {
            add(format!("{} (spawn {})", entry.name, entry.name), port);
        }
    }
    Ok(declared)
}

/// The host port a declared port is reached at: the same number when it
/// is free and not in `taken`, else a free one.
fn host_port_for(guest_port: u16, taken: &[u16]) -> Result<u16> {
    if !taken.contains(&guest_port)
        && std::net::TcpListener::bind(("127.0.0.1", guest_port)).is_ok()
    {
        Ok(guest_port)
    } else {
        free_port()
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    for disk in &args.domains {
        if !disk.is_file() {
            bail!("--domain {}: no such image file", disk.display());
        }
    }
    tools::make_sure_of(&tools::EVERYTHING)?;
    let kernel = kernel::build_kernel()?;
    let freshness = if args.fresh {
        Freshness::Recreate
    } else {
        Freshness::Keep
    };
    let mut disks = if args.domains.is_empty() {
        demo_images(freshness)?
    } else {
        args.domains.clone()
    };
    // For `spawn APP`: the apps archive, and the spare disks with whatever
    // earlier runs spawned on them.
    let archive = archive::build(&[])?;
    let spares = spare_disks(freshness)?;
    let images: Vec<PathBuf> = disks.iter().chain(&spares).cloned().collect();
    let declared = declared_ports(&images, &archive)?;
    disks.push(archive);
    disks.extend(spares);
    let mut config = QemuConfig {
        accel: args
            .accel
            .unwrap_or_else(|| Accel::default_for_run(&kernel)),
        kernel,
        memory_mib: args.memory,
        append: args.append.clone(),
        console: Console::Terminal,
        disks,
        disk_options: std::collections::BTreeMap::new(),
        net: None,
        user_net: None,
        cluster_secret: None,
        nbd_disks: Vec::new(),
    };
    // The services a user connects to: the --forward ones, then each
    // declared port no --forward took, on its own number when free.
    let mut services: Vec<(String, Forward)> = args
        .forwards
        .iter()
        .map(|&forward| ("--forward".to_string(), forward))
        .collect();
    for port in declared {
        if services
            .iter()
            .any(|(_, given)| given.guest_port == port.guest_port)
        {
            continue;
        }
        let taken: Vec<u16> = services.iter().map(|(_, given)| given.host_port).collect();
        let forward = Forward {
            host_port: host_port_for(port.guest_port, &taken)?,
            guest_port: port.guest_port,
        };
        services.push((port.name, forward));
    }
    if args.pair {
        return run_pair(config, &services);
    }
    for (name, forward) in &services {
        eprintln!(
            "{name}: 127.0.0.1:{} -> port {}",
            forward.host_port, forward.guest_port
        );
    }
    let forwards: Vec<Forward> = services.iter().map(|(_, forward)| *forward).collect();
    config.user_net = user_net_of(&forwards);
    eprintln!(
        "booting Amber ({:?}, {} MiB) with {}; `shutdown` commits and powers off, Ctrl-A x quits QEMU (a power cut)",
        config.accel,
        config.memory_mib,
        describe_disks(&config.disks)
    );
    let status = config.command()?.status().context("starting QEMU")?;
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

/// `--pair`: B in the background with its console on a Unix socket in the
/// user's private directory, then A on this terminal; B is killed (a power
/// cut) when A exits. Both get one cluster secret, new for this run, so
/// they trust each other and nobody else.
fn run_pair(mut a: QemuConfig, services: &[(String, Forward)]) -> Result<()> {
    let directory = paths::amber_dir().join("pair");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let spare = |name: &str| -> Result<PathBuf> {
        let path = directory.join(name);
        if !path.exists() {
            std::fs::File::create(&path)
                .and_then(|file| file.set_len(1 << 30))
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(path)
    };
    let link_port = free_port()?;
    let console_socket = console::pair_b_socket()?;
    // A socket left by a run that was killed would make QEMU's bind fail.
    if console_socket.exists() {
        std::fs::remove_file(&console_socket)
            .with_context(|| format!("removing the old {}", console_socket.display()))?;
    }
    let (gateways, a_forwards, b_forwards) = gateways_for(services)?;
    a.user_net = user_net_of(&a_forwards);
    a.cluster_secret = Some(ClusterSecretFile::generate()?);
    a.disks.push(spare("a-spare.img")?);
    a.append = format!("ip=169.254.0.1 {}", a.append).trim().to_string();
    a.net = Some(NetLink {
        end: LinkEnd::Listen,
        port: link_port,
        mac_last_byte: 1,
    });
    let b = QemuConfig {
        disks: vec![spare("b-spare-1.img")?, spare("b-spare-2.img")?],
        append: format!("ip=169.254.0.2 {}", args_without_ip(&a.append)),
        console: Console::UnixSocket(console_socket.clone()),
        disk_options: std::collections::BTreeMap::new(),
        user_net: user_net_of(&b_forwards),
        net: Some(NetLink {
            end: LinkEnd::Connect,
            port: link_port,
            mac_last_byte: 2,
        }),
        ..a.clone()
    };
    // A listens on the link, so it starts first; B connects a moment later.
    let mut a_child = a.command()?.spawn().context("starting QEMU for A")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut b_child = match b.command()?.stdin(Stdio::null()).spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = a_child.kill();
            let _ = a_child.wait();
            return Err(error).context("starting QEMU for B");
        }
    };
    eprintln!(
        "A: 169.254.0.1, this terminal, {}; B: 169.254.0.2, console `cargo xtask console` \
         (socket {}), spare disks in {}. One new cluster secret for both. \
         On A: `migrate counter 169.254.0.2`. B stops when A does.",
        describe_disks(&a.disks),
        console_socket.display(),
        directory.display()
    );
    let status = a_child.wait().context("waiting for A");
    drop(gateways);
    let _ = b_child.kill();
    let _ = b_child.wait();
    let _ = std::fs::remove_file(&console_socket);
    let status = status?;
    if !status.success() {
        bail!("A's QEMU exited with {status}");
    }
    Ok(())
}

/// For each service of `--pair`, a gateway on its host port that follows
/// the domain, in front of a forward of its own on each machine: returns
/// the gateways with A's forwards and B's, and prints each mapping.
fn gateways_for(
    services: &[(String, Forward)],
) -> Result<(Vec<Gateway>, Vec<Forward>, Vec<Forward>)> {
    let mut gateways = Vec::new();
    let (mut a_forwards, mut b_forwards) = (Vec::new(), Vec::new());
    for (name, stable) in services {
        let on = |machine: &str| -> Result<Backend> {
            Ok(Backend {
                machine: machine.to_string(),
                address: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
            })
        };
        let (a, b) = (on("A")?, on("B")?);
        let gateway = Gateway::start(name, stable.host_port, vec![a.clone(), b.clone()])?;
        eprintln!(
            "{name}: {} follows the domain's port {} (A at {}, B at {})",
            gateway.address(),
            stable.guest_port,
            a.address,
            b.address
        );
        for (forwards, backend) in [(&mut a_forwards, &a), (&mut b_forwards, &b)] {
            forwards.push(Forward {
                host_port: backend.address.port(),
                guest_port: stable.guest_port,
            });
        }
        gateways.push(gateway);
    }
    Ok((gateways, a_forwards, b_forwards))
}

/// The user's kernel arguments without A's `ip=`.
fn args_without_ip(append: &str) -> String {
    append
        .split_whitespace()
        .filter(|word| !word.starts_with("ip="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether existing demo images are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Keep,
    Recreate,
}

/// The demo images in target/amber/disks: created when missing (or all of
/// them with [`Freshness::Recreate`]) and kept otherwise, so the domains go
/// on where the last run left them. The one-shot app's image is always new.
fn demo_images(freshness: Freshness) -> Result<Vec<PathBuf>> {
    let directory = paths::disks_dir();
    let images: Vec<PathBuf> = DEMO_APPS
        .iter()
        .map(|name| directory.join(format!("{name}.img")))
        .collect();
    let missing: Vec<&str> = DEMO_APPS
        .iter()
        .zip(&images)
        .filter(|(name, image)| {
            freshness == Freshness::Recreate || **name == ONE_SHOT_DEMO_APP || !image.exists()
        })
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(images);
    }
    let modules = app::build_apps(&missing)?;
    for (name, wasm) in missing.iter().zip(modules) {
        let output = directory.join(format!("{name}.img"));
        if output.exists() {
            std::fs::remove_file(&output)
                .with_context(|| format!("removing the old {}", output.display()))?;
        }
        image::new(&image::NewArgs {
            wasm,
            name: (*name).to_string(),
            memory_max_mib: None,
            size_mib: None,
            args: Vec::new(),
            env: Vec::new(),
            output: Some(output),
            listen: Vec::new(),
            durable_replies: false,
        })?;
    }
    Ok(images)
}

/// The spare disks in target/amber/disks, `spare-N.img`: each is blank
/// until `spawn` puts a domain on it, and is then kept like a demo image.
/// A new blank one is added whenever none is left, so `spawn` always has
/// one. [`Freshness::Recreate`] deletes them all first.
fn spare_disks(freshness: Freshness) -> Result<Vec<PathBuf>> {
    let directory = paths::disks_dir();
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let mut spares: Vec<(u32, PathBuf)> = Vec::new();
    for item in
        std::fs::read_dir(&directory).with_context(|| format!("listing {}", directory.display()))?
    {
        let path = item
            .with_context(|| format!("listing {}", directory.display()))?
            .path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("spare-")?.strip_suffix(".img"))
            .and_then(|number| number.parse::<u32>().ok());
        if let Some(number) = number {
            spares.push((number, path));
        }
    }
    spares.sort();
    if freshness == Freshness::Recreate {
        for (_, path) in spares.drain(..) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let mut has_blank = false;
    for (_, path) in &spares {
        has_blank |= is_blank(path)?;
    }
    if !has_blank {
        let number = spares.last().map_or(1, |(number, _)| number + 1);
        let path = directory.join(format!("spare-{number}.img"));
        std::fs::File::create(&path)
            .and_then(|file| file.set_len(SPARE_DISK_BYTES))
            .with_context(|| format!("creating {}", path.display()))?;
        spares.push((number, path));
    }
    Ok(spares.into_iter().map(|(_, path)| path).collect())
}

/// Whether the disk file's first two blocks are zeros, as the kernel decides
/// that a disk is a spare.
fn is_blank(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut start = Vec::with_capacity(2 * persist::BLOCK_SIZE);
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(2 * persist::BLOCK_SIZE as u64)
                .read_to_end(&mut start)
        })
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(start.iter().all(|&byte| byte == 0))
}

fn describe_disks(disks: &[PathBuf]) -> String {
    if disks.is_empty() {
        return "no disks".to_string();
    }
    let names: Vec<String> = disks.iter().map(|disk| display_name(disk)).collect();
    format!("disks {}", names.join(", "))
}

/// A disk's file name, or its whole path when it has none.
fn display_name(disk: &Path) -> String {
    disk.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| disk.display().to_string())
}

#[cfg(test)]
mod forward_tests {
    use super::*;

    #[test]
    fn a_forward_is_two_ports_and_nothing_else() {
        assert_eq!(
            parse_forward("16379:6379"),
            Ok(Forward {
                host_port: 16379,
                guest_port: 6379
            })
        );
        for bad in ["6379", "0:80", "80:0", "70000:80", "a:b", ":80", "80:"] {
            assert!(parse_forward(bad).is_err(), "{bad} was taken");
        }
    }
}
