//! Harness for tests that boot the Amber kernel in QEMU.

#![forbid(unsafe_code)]
