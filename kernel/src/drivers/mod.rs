//! Device drivers.
//!
//! With arch/ and memory/, one of the three places where the kernel uses
//! `unsafe`; every block says why it is sound.

pub mod serial;
