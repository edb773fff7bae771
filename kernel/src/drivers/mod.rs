//! Device drivers.
//!
//! With arch/ and memory/, one of the three places where the kernel uses
//! `unsafe`; every block says why it is sound.

pub mod fw_cfg;
pub mod pci;
pub mod serial;
pub mod virtio_blk;
pub mod virtio_hal;
pub mod virtio_net;
