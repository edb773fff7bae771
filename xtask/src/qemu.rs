//! QEMU command lines for Amber: machine, memory, accelerator, disks, network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::private::ClusterSecretFile;
use crate::tools;

/// I/O port of QEMU's isa-debug-exit device; the kernel writes its failure code
/// there (kernel/src/arch/x86_64/qemu.rs has the same number).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// QEMU's exit status after the kernel reported a failure (a fault or a panic):
/// isa-debug-exit turns the written value v into (v << 1) | 1, and the kernel
/// writes 0x31.
pub const FAILURE_EXIT_STATUS: i32 = (0x31 << 1) | 1;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: slower per instruction, but on nested
    /// virtualisation it boots faster than KVM, and it needs nothing.
    Tcg,
}

impl Accel {
    /// The accelerator `cargo xtask run` uses without `--accel`: KVM when
    /// it works, TCG otherwise.
    ///
    /// "Works" is tested, not assumed: /dev/kvm must open and `kernel` must
    /// boot under KVM and power off (`test=boot`) within 20 s. On our
    /// nested-virtualisation machines KVM stops the kernel with "KVM internal
    /// error, emulation failure" at its first SSE instruction with a memory
    /// operand, so there the probe fails in a fraction of a second.
    pub fn default_for_run(kernel: &Path) -> Accel {
        if tools::kvm_usable() && kvm_boots(kernel) {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Boots `kernel` under KVM with `test=boot` and reports whether it powered
/// off cleanly in time.
fn kvm_boots(kernel: &Path) -> bool {
    let config = QemuConfig {
        kernel: kernel.to_path_buf(),
        memory_mib: 128,
        append: "test=boot".into(),
        accel: Accel::Kvm,
        console: Console::Stdio,
        disks: Vec::new(),
        disk_options: BTreeMap::new(),
        net: None,
        user_net: None,
        cluster_secret: None,
        nbd_disks: Vec::new(),
    };
    let Ok(mut command) = config.command() else {
        return false;
    };
    let Ok(mut child) = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    wait_or_kill(&mut child, Duration::from_secs(20)).is_some_and(|status| status.success())
}

/// Waits up to `timeout` for QEMU to exit; kills it if it has not (or if
/// waiting fails) and returns None then.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a link between
/// two instances).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr().context("a free port")?.port())
}

/// Where the guest's serial port goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: serial on this terminal, QEMU's monitor behind Ctrl-A c.
    Terminal,
    /// Serial on stdin/stdout only (for programs that drive the console).
    Stdio,
    /// Serial on a Unix socket QEMU listens on (`cargo xtask console PATH`).
    /// Only a user who may enter the socket's directory can connect, so the
    /// path belongs in [`crate::private::private_dir`]: unlike a TCP port
    /// on 127.0.0.1, it keeps other local users off the operator console.
    UnixSocket(PathBuf),
}

impl Console {
    /// The QEMU arguments for this console.
    pub fn arguments(&self) -> Vec<String> {
        let words: &[&str] = match self {
            Console::Terminal => &["-nographic"],
            Console::Stdio => &["-display", "none", "-serial", "stdio", "-monitor", "none"],
            Console::UnixSocket(_) => &["-display", "none", "-monitor", "none", "-serial"],
        };
        let mut arguments: Vec<String> = words.iter().map(|word| (*word).to_string()).collect();
        if let Console::UnixSocket(path) = self {
            arguments.push(format!("unix:{},server=on,wait=off", path.display()));
        }
        arguments
    }
}

/// One QEMU instance's configuration.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    pub memory_mib: u32,
    pub append: String,
    pub accel: Accel,
    pub console: Console,
    /// Raw disk images, each attached as a virtio-blk PCI device.
    pub disks: Vec<PathBuf>,
    /// How some of `disks` are attached beyond a plain raw file, by their
    /// index in `disks` (fault injection, throttling); the others are
    /// plain. Empty for every machine but the failing-disk tests'.
    pub disk_options: BTreeMap<usize, DiskOptions>,
    /// A virtio-net card on a point-to-point link to another QEMU, if any.
    pub net: Option<NetLink>,
    /// A virtio-net card on QEMU user networking that forwards host ports
    /// to domains' listeners, if any.
    pub user_net: Option<UserNet>,
    /// The cluster secret handed to the kernel through fw_cfg. A machine
    /// without one accepts no incoming migration and starts none; every
    /// machine of one cluster gets the same one.
    pub cluster_secret: Option<ClusterSecretFile>,
    /// Disks served over NBD from this host, attached after `disks` (the
    /// crash tests' recording server, `tests/src/crash/`).
    pub nbd_disks: Vec<NbdDisk>,
}

/// A disk that QEMU reads and writes through an NBD server on 127.0.0.1,
/// so that a program on the host sees every write and flush the guest's
/// driver issues, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdDisk {
    /// The TCP port on 127.0.0.1 the server listens on.
    pub port: u16,
}

impl NbdDisk {
    /// The arguments attaching this export as virtio-blk disk `nbd{index}`
    /// on bus 0. `cache=writeback` gives the guest a volatile write cache
    /// (VIRTIO_BLK_F_FLUSH), and QEMU passes each guest flush on as
    /// NBD_CMD_FLUSH.
    pub fn arguments(&self, index: usize) -> [String; 4] {
        [
            "-drive".into(),
            format!(
                "file=nbd://127.0.0.1:{},if=none,id=nbd{index},format=raw,cache=writeback",
                self.port
            ),
            "-device".into(),
            format!("virtio-blk-pci,drive=nbd{index}"),
        ]
    }
}

/// How one disk is attached beyond a plain raw file: layers of QEMU's
/// block layer between the guest's virtio-blk device and the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskOptions {
    /// A rules file for QEMU's `blkdebug` driver, which then sits between
    /// the device and the file and fails the requests its rules pick: an
    /// `[inject-error]` section names the event that arms it (`write_aio`,
    /// `flush_to_disk`, ...), the errno the request fails with, the I/O
    /// type it fails (`iotype`) and whether only once (see QEMU's
    /// docs/devel/blkdebug.txt).
    pub blkdebug_rules: Option<PathBuf>,
    /// Writes limited to this many bytes per second by QEMU's throttling
    /// (reads are not limited). With 1, the first write goes through and
    /// every later one waits for days: a disk that stops answering writes.
    pub write_bytes_per_second: Option<u64>,
}

impl DiskOptions {
    /// The `-drive` option string for `disk` as drive `id`.
    fn drive(&self, disk: &Path, id: &str) -> String {
        let mut drive = match &self.blkdebug_rules {
            None => format!("file={},if=none,id={id},format=raw", disk.display()),
            Some(rules) => format!(
                "driver=raw,file.driver=blkdebug,file.config={},file.image.driver=file,\
                 file.image.filename={},if=none,id={id}",
                rules.display(),
                disk.display()
            ),
        };
        if let Some(bytes_per_second) = self.write_bytes_per_second {
            drive.push_str(&format!(",throttling.bps-write={bytes_per_second}"));
        }
        drive
    }
}

/// Which end of a link a QEMU instance is: QEMU's `-netdev socket` has one
/// instance listen on a TCP port and the other connect to it, then carries
/// Ethernet frames between them both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// Listens on 127.0.0.1:port; must start first.
    Listen,
    /// Connects to 127.0.0.1:port; QEMU exits at once if nobody listens.
    Connect,
}

/// One end of an Ethernet link between two QEMU instances on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLink {
    pub end: LinkEnd,
    /// The TCP port on 127.0.0.1 that carries the link.
    pub port: u16,
    /// The card's MAC address's last byte, after QEMU's 52:54:00:12:34 prefix.
    /// The two ends need different ones; Amber derives its default address
    /// 169.254.0.N from it.
    pub mac_last_byte: u8,
}

impl NetLink {
    /// The card's MAC address, `52:54:00:12:34:NN`.
    pub fn mac(&self) -> String {
        format!("52:54:00:12:34:{:02x}", self.mac_last_byte)
    }

    /// The arguments that add this end's card and link.
    pub fn arguments(&self) -> [String; 4] {
        let option = match self.end {
            LinkEnd::Listen => "listen",
            LinkEnd::Connect => "connect",
        };
        [
            "-netdev".into(),
            format!("socket,id=net0,{option}=127.0.0.1:{}", self.port),
            "-device".into(),
            // No option ROM: the kernel boots through -kernel, never PXE.
            format!("virtio-net-pci,netdev=net0,mac={},romfile=", self.mac()),
        ]
    }
}

/// The MAC address of the user-networking card: the kernel knows that card
/// by it (kernel/src/net, `USER_CARD_MAC`) and gives it QEMU's default
/// guest address, 10.0.2.15.
pub const USER_CARD_MAC: &str = "02:00:0a:00:02:0f";

/// The guest address QEMU user networking forwards to.
pub const USER_GUEST_ADDRESS: &str = "10.0.2.15";

/// A port on 127.0.0.1 forwarded to a port of the guest's user card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host_port: u16,
    pub guest_port: u16,
}

/// A card on QEMU user networking (slirp) with `restrict=on`: nothing from
/// the guest leaves the host, and the host reaches the guest only through
/// the forwards, each bound to 127.0.0.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNet {
    pub forwards: Vec<Forward>,
}

impl UserNet {
    /// The arguments that add the card and its forwards.
    pub fn arguments(&self) -> [String; 4] {
        let mut netdev = String::from("user,id=user0,restrict=on");
        for forward in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-{USER_GUEST_ADDRESS}:{}",
                forward.host_port, forward.guest_port
            ));
        }
        [
            "-netdev".into(),
            netdev,
            "-device".into(),
            format!("virtio-net-pci,netdev=user0,mac={USER_CARD_MAC},romfile="),
        ]
    }
}

impl QemuConfig {
    /// The default for tests: the built kernel, 256 MiB, TCG, stdio console.
    pub fn for_tests() -> QemuConfig {
        QemuConfig {
            kernel: crate::paths::kernel_elf(),
            memory_mib: 256,
            append: String::new(),
            accel: Accel::Tcg,
            console: Console::Stdio,
            disks: Vec::new(),
            disk_options: BTreeMap::new(),
            net: None,
            user_net: None,
            cluster_secret: None,
            nbd_disks: Vec::new(),
        }
    }

    /// The QEMU command for this configuration.
    pub fn command(&self) -> Result<Command> {
        if self.disks.len() > MAX_DISKS {
            anyhow::bail!(
                "{} disks given; a machine takes at most {MAX_DISKS}",
                self.disks.len()
            );
        }
        if !self.nbd_disks.is_empty() && self.disks.len() + self.nbd_disks.len() > BUS_ZERO_DISKS {
            anyhow::bail!(
                "NBD disks sit on bus 0: at most {BUS_ZERO_DISKS} disks in all with them"
            );
        }
        let mut command = Command::new(tools::qemu()?);
        command
            .args(["-machine", "q35", "-no-reboot"])
            .arg("-m")
            .arg(format!("{}M", self.memory_mib))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-device")
            .arg(format!(
                "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"
            ));
        if !self.append.is_empty() {
            command.arg("-append").arg(&self.append);
        }
        match self.accel {
            Accel::Kvm => command.args(["-accel", "kvm", "-cpu", "host"]),
            // RDRAND for the kernel's randomness (the migration links'
            // ephemeral keys, domains' random_get): TCG emulates it from
            // the host's getrandom.
            Accel::Tcg => command.args(["-accel", "tcg", "-cpu", "qemu64,+rdrand"]),
        };
        command.args(self.console.arguments());
        command.args(disk_arguments_with(&self.disks, &self.disk_options));
        for (index, disk) in self.nbd_disks.iter().enumerate() {
            command.args(disk.arguments(index));
        }
        if let Some(link) = &self.net {
            command.args(link.arguments());
        }
        if let Some(user_net) = &self.user_net {
            command.args(user_net.arguments());
        }
        if let Some(secret) = &self.cluster_secret {
            command.args(secret.qemu_arguments());
        }
        Ok(command)
    }
}

/// How many disks sit directly on q35's bus 0 (pcie.0). Its 32 slots also
/// hold the host bridge (0), VGA (1), the default NIC (2), the ICH9
/// functions (31), the network card and the root ports below, so 20 leaves
/// room for those.
pub const BUS_ZERO_DISKS: usize = 20;

/// The first bus-0 slot that holds root ports; further ones go downward.
/// Slot 31 is the ICH9 LPC bridge, so 30 is the highest free one.
const FIRST_ROOT_PORT_SLOT: usize = 0x1e;

/// Root ports per slot: a PCI slot has 8 functions, one port each.
const ROOT_PORTS_PER_SLOT: usize = 8;

/// The most disks a machine takes: bus 0's share plus root ports in the
/// slots from 0x1e down to 0x18 (the first 20 disks and a network card end
/// at 0x17).
pub const MAX_DISKS: usize = BUS_ZERO_DISKS + 7 * ROOT_PORTS_PER_SLOT;

/// QEMU arguments attaching `disks` as virtio-blk PCI devices: the first
/// `BUS_ZERO_DISKS` on bus 0, each further one behind its own PCIe root port
/// (a PCI-to-PCI bridge; the firmware numbers the bus behind it, and the
/// kernel's enumeration follows it). Root ports are packed 8 to a slot as
/// functions of one multifunction device; they reserve no I/O space, which
/// a modern-only virtio device behind a PCIe port never uses.
pub fn disk_arguments(disks: &[PathBuf]) -> Vec<String> {
    disk_arguments_with(disks, &BTreeMap::new())
}

/// [`disk_arguments`] with `options` for some of the disks, by index.
pub fn disk_arguments_with(
    disks: &[PathBuf],
    options: &BTreeMap<usize, DiskOptions>,
) -> Vec<String> {
    let plain = DiskOptions::default();
    let mut arguments = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let options = options.get(&index).unwrap_or(&plain);
        arguments.push("-drive".into());
        arguments.push(options.drive(disk, &format!("disk{index}")));
        let Some(port) = index.checked_sub(BUS_ZERO_DISKS) else {
            arguments.push("-device".into());
            arguments.push(format!("virtio-blk-pci,drive=disk{index}"));
            continue;
        };
        let slot = FIRST_ROOT_PORT_SLOT - port / ROOT_PORTS_PER_SLOT;
        let function = port % ROOT_PORTS_PER_SLOT;
        let multifunction = if function == 0 {
            ",multifunction=on"
        } else {
            ""
        };
        arguments.push("-device".into());
        arguments.push(format!(
            "pcie-root-port,id=rp{port},bus=pcie.0,chassis={},slot=0,\
             addr={slot:#x}.{function},io-reserve=0{multifunction}",
            port + 1
        ));
        arguments.push("-device".into());
        arguments.push(format!("virtio-blk-pci,drive=disk{index},bus=rp{port}"));
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_link_ends_share_a_port_and_differ_in_role_and_mac() {
        let listen = NetLink {
            end: LinkEnd::Listen,
            port: 40123,
            mac_last_byte: 1,
        };
        let connect = NetLink {
            end: LinkEnd::Connect,
            port: 40123,
            mac_last_byte: 2,
        };
        assert_eq!(
            listen.arguments(),
            [
                "-netdev",
                "socket,id=net0,listen=127.0.0.1:40123",
                "-device",
                "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:01,romfile=",
            ]
        );
        assert_eq!(
            connect.arguments()[1],
            "socket,id=net0,connect=127.0.0.1:40123"
        );
        assert_eq!(connect.mac(), "52:54:00:12:34:02");
    }

    #[test]
    fn disks_past_the_twentieth_sit_behind_root_ports_eight_to_a_slot() {
        let disks: Vec<PathBuf> = (0..30)
            .map(|index| PathBuf::from(format!("d{index}.img")))
            .collect();
        let arguments = disk_arguments(&disks);
        let devices: Vec<&String> = arguments
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|argument| !argument.starts_with("file="))
            .collect();
        assert_eq!(devices[19], "virtio-blk-pci,drive=disk19");
        assert_eq!(
            devices[20],
            "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=0,addr=0x1e.0,io-reserve=0,\
             multifunction=on"
        );
        assert_eq!(devices[21], "virtio-blk-pci,drive=disk20,bus=rp0");
        assert_eq!(
            devices[22],
            "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=0,addr=0x1e.1,io-reserve=0"
        );
        assert_eq!(
            devices[36],
            "pcie-root-port,id=rp8,bus=pcie.0,chassis=9,slot=0,addr=0x1d.0,io-reserve=0,\
             multifunction=on"
        );
        assert_eq!(devices.len(), 20 + 2 * 10);
    }

    #[test]
    fn a_disk_with_options_goes_through_blkdebug_and_throttling_and_the_rest_stay_plain() {
        let disks = vec![PathBuf::from("a.img"), PathBuf::from("b.img")];
        let options = BTreeMap::from([(
            1,
            DiskOptions {
                blkdebug_rules: Some(PathBuf::from("rules.conf")),
                write_bytes_per_second: Some(1),
            },
        )]);
        let arguments = disk_arguments_with(&disks, &options);
        assert_eq!(arguments, {
            let mut plain = disk_arguments(&disks);
            plain[5] = "driver=raw,file.driver=blkdebug,file.config=rules.conf,\
                        file.image.driver=file,file.image.filename=b.img,if=none,id=disk1,\
                        throttling.bps-write=1"
                .into();
            plain
        });
        assert_eq!(arguments[1], "file=a.img,if=none,id=disk0,format=raw");
    }

    #[test]
    fn a_user_card_forwards_loopback_ports_to_the_guest_and_nothing_else() {
        let user_net = UserNet {
            forwards: vec![
                Forward {
                    host_port: 16379,
                    guest_port: 6379,
                },
                Forward {
                    host_port: 8080,
                    guest_port: 80,
                },
            ],
        };
        assert_eq!(
            user_net.arguments(),
            [
                "-netdev",
                "user,id=user0,restrict=on,hostfwd=tcp:127.0.0.1:16379-10.0.2.15:6379,\
                 hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80",
                "-device",
                "virtio-net-pci,netdev=user0,mac=02:00:0a:00:02:0f,romfile=",
            ]
        );
    }

    #[test]
    fn without_a_link_there_is_no_network_card() -> Result<()> {
        let Ok(command) = QemuConfig::for_tests().command() else {
            // No QEMU on this machine: nothing to check.
            return Ok(());
        };
        let arguments: Vec<String> = command
            .get_args()
            .map(|argument| argument.to_string_lossy().into_owned())
            .collect();
        assert!(!arguments.iter().any(|argument| argument == "-netdev"));
        assert!(!arguments.iter().any(|argument| argument == "-fw_cfg"));
        Ok(())
    }

    #[test]
    fn a_machine_with_a_secret_gets_it_through_fw_cfg() -> Result<()> {
        let secret = ClusterSecretFile::generate()?;
        let config = QemuConfig {
            cluster_secret: Some(secret.clone()),
            ..QemuConfig::for_tests()
        };
        let Ok(command) = config.command() else {
            return Ok(());
        };
        let arguments: Vec<String> = command
            .get_args()
            .map(|argument| argument.to_string_lossy().into_owned())
            .collect();
        let at = arguments
            .iter()
            .position(|argument| argument == "-fw_cfg")
            .context("no -fw_cfg")?;
        assert_eq!(
            arguments[at + 1],
            format!(
                "name=opt/amber/cluster-secret,file={}",
                secret.path().display()
            )
        );
        Ok(())
    }

    #[test]
    fn an_nbd_disk_is_a_writeback_virtio_disk_on_a_loopback_port() {
        assert_eq!(
            NbdDisk { port: 40999 }.arguments(2),
            [
                "-drive",
                "file=nbd://127.0.0.1:40999,if=none,id=nbd2,format=raw,cache=writeback",
                "-device",
                "virtio-blk-pci,drive=nbd2",
            ]
        );
    }

    #[test]
    fn a_unix_socket_console_listens_without_waiting() {
        let console = Console::UnixSocket(PathBuf::from("/run/user/1000/amber/b.sock"));
        assert_eq!(
            console.arguments(),
            [
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "unix:/run/user/1000/amber/b.sock,server=on,wait=off"
            ]
        );
    }
}
