//! Networking: two machines on one virtual link move a TCP stream.
//!
//! A's QEMU listens on a free port of 127.0.0.1 and B's connects to it
//! (`-netdev socket`), which makes one Ethernet segment of the two virtio-net
//! cards. B runs `nettest listen`, A `nettest send`; both must report the
//! whole stream, and B checks every byte against the pattern. A connection
//! to a port nobody listens on must be refused, not hang.

use std::time::Duration;

use anyhow::Result;
use tests::{ANSWER_TIMEOUT, Cluster, LinkEnd};

/// How long a few MiB may take between two TCG machines on a loaded host.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

/// MiB sent.
const STREAM_MIB: u64 = 4;

/// The port the guests use (inside the link, not on the host).
const GUEST_PORT: u16 = 7000;

#[test]
fn two_machines_move_a_stream_over_tcp_and_report_throughput() -> Result<()> {
    let cluster = Cluster::new()?;
    // A's QEMU listens from its start, so it must be up before B connects.
    let mut a = cluster.machine(LinkEnd::Listen, 1, Vec::new())?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, Vec::new())?;

    let status = a.run_command("net")?;
    assert!(
        status.iter().any(|line| {
            line.starts_with("net: MAC 52:54:00:12:34:11 at PCI ")
                && line.contains("IPv4 169.254.0.1/16")
        }),
        "{status:?}"
    );

    b.send_line(&format!("nettest listen {GUEST_PORT}"))?;
    b.expect(
        &format!("nettest: listening on port {GUEST_PORT}"),
        ANSWER_TIMEOUT,
    )?;
    a.send_line(&format!(
        "nettest send 169.254.0.2 {GUEST_PORT} {STREAM_MIB}"
    ))?;
    let sent = a.expect("sent ", TRANSFER_TIMEOUT)?;
    let received = b.expect("received ", TRANSFER_TIMEOUT)?;
    let prefix = format!("{STREAM_MIB} MiB in ");
    assert!(sent.starts_with(&format!("sent {prefix}")), "{sent}");
    assert!(sent.ends_with(" MiB/s)"), "{sent}");
    assert!(
        received.starts_with(&format!("received {prefix}")),
        "{received}"
    );
    let transcript = b.transcript();
    let byte_count = format!("nettest: {} bytes, all in the pattern", STREAM_MIB << 20);
    assert!(transcript.contains(&byte_count), "{transcript}");
    a.expect_prompt(ANSWER_TIMEOUT)?;
    b.expect_prompt(ANSWER_TIMEOUT)?;

    // Nobody listens on the next port: B's stack answers the SYN with a RST.
    a.send_line(&format!("nettest send 169.254.0.2 {} 1", GUEST_PORT + 1))?;
    a.expect(
        "nettest: the connection was refused or reset",
        ANSWER_TIMEOUT,
    )?;
    a.expect_prompt(ANSWER_TIMEOUT)?;

    let counters = b.run_command("net")?;
    assert!(
        counters.iter().any(|line| line.starts_with("packets: ")),
        "{counters:?}"
    );
    eprintln!("A: {sent}\nB: {received}\nB: {}", counters.join("\nB: "));
    Ok(())
}
