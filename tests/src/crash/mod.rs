//! Crash states below QEMU: a recorded disk and what a power cut may leave.
//!
//! The QEMU power-cut tests kill QEMU, whose host page cache keeps every
//! write the guest issued, so they cannot tell whether the driver's flushes
//! mean anything. Here the guest's disk is an NBD export served by
//! [`nbd::RecordingServer`] from memory: every write and flush the kernel
//! issues arrives in order (virtio-blk keeps at most one request in flight)
//! and is appended to a trace ([`trace::Recording`]), with marks where the
//! harness read a console line that reported a commit durable.
//!
//! From a trace, [`states::for_each_state`] builds the disks a real drive
//! with a volatile write cache could hold after a power cut: every prefix up
//! to a flush, and, of the writes after the last flush before the cut, any
//! subset in any order, with 4 KiB blocks torn at 512-byte sectors.
//! [`check::check_recording`] opens each with persist and requires the
//! newest commit that was durable (its superblock flushed, or reported
//! committed on the console) or a newer one, with `verify` clean.

pub mod check;
pub mod disk;
pub mod nbd;
pub mod states;
pub mod trace;

#[cfg(test)]
mod tests;
