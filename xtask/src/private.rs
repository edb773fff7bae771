//! Files only this user may open: cluster secrets and machine B's console.
//!
//! A cluster secret is what makes a machine trust a migration peer, and
//! machine B's console in `cargo xtask run --pair` is an operator console:
//! neither may be readable by another local user. Both live in one
//! directory of mode 0700 ([`private_dir`]), and each secret file is
//! created with mode 0600 before a byte is written to it.
//!
//! The secret itself is never printed: [`ClusterSecretFile`]'s `Debug`
//! shows only the path, and nothing in xtask formats its bytes except into
//! the file QEMU hands the kernel through fw_cfg.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::paths;

/// Bytes in a cluster secret (the kernel's `ClusterSecret`: a Noise PSK).
pub const SECRET_BYTES: usize = 32;

/// The fw_cfg file the kernel reads its cluster secret from.
pub const SECRET_FW_CFG_NAME: &str = "opt/amber/cluster-secret";

/// The directory for this user's secrets and sockets, created mode 0700
/// (and set to 0700 if it existed with more): `$XDG_RUNTIME_DIR/amber`
/// when the session has a runtime directory (a per-user tmpfs, gone at
/// logout), else `target/amber/private`.
pub fn private_dir() -> Result<PathBuf> {
    let directory = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if Path::new(&runtime).is_dir() => PathBuf::from(runtime).join("amber"),
        _ => paths::amber_dir().join("private"),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    // `create` leaves an existing directory's mode alone.
    std::fs::set_permissions(&directory, Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (mode 0700)", directory.display()))?;
    Ok(directory)
}

/// A fresh random cluster secret written to its own file in
/// [`private_dir`], for QEMU's `-fw_cfg name=opt/amber/cluster-secret,
/// file=PATH`. Clones share the file, which is removed when the last clone
/// is dropped: keep one as long as a machine may still be starting (QEMU
/// reads the file while it starts, after `spawn` has returned).
#[derive(Clone)]
pub struct ClusterSecretFile {
    inner: Arc<SecretInner>,
}

struct SecretInner {
    path: PathBuf,
    bytes: [u8; SECRET_BYTES],
}

impl Drop for SecretInner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl std::fmt::Debug for ClusterSecretFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: a Debug print ends up in logs and test output.
        formatter
            .debug_struct("ClusterSecretFile")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl ClusterSecretFile {
    /// A new secret from the operating system's random source, written as
    /// 64 hex digits and a newline to a new mode-0600 file.
    pub fn generate() -> Result<ClusterSecretFile> {
        let mut bytes = [0u8; SECRET_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .context("reading a cluster secret from /dev/urandom")?;
        ClusterSecretFile::with_bytes(bytes)
    }

    /// A secret file holding `bytes` (a test that needs a known secret, or
    /// the same one on several runs).
    pub fn with_bytes(bytes: [u8; SECRET_BYTES]) -> Result<ClusterSecretFile> {
        let path = private_dir()?.join(paths::unique_name("cluster-secret", "hex"));
        write_private(&path, format!("{}\n", hex(&bytes)).as_bytes())?;
        Ok(ClusterSecretFile {
            inner: Arc::new(SecretInner { path, bytes }),
        })
    }

    /// Where the secret is.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The secret's bytes: for a test peer that must speak to the machines
    /// as one of the cluster. Never print them.
    pub fn bytes(&self) -> [u8; SECRET_BYTES] {
        self.inner.bytes
    }

    /// The QEMU arguments that hand this secret to the kernel.
    pub fn qemu_arguments(&self) -> [String; 2] {
        secret_arguments(self.path())
    }
}

/// `-fw_cfg name=opt/amber/cluster-secret,file=PATH`. QEMU's option parser
/// splits at commas, so a path with one is refused when the secret is
/// written ([`write_private`]) rather than handed over mangled.
pub fn secret_arguments(path: &Path) -> [String; 2] {
    [
        "-fw_cfg".into(),
        format!("name={SECRET_FW_CFG_NAME},file={}", path.display()),
    ]
}

/// Creates `path` with mode 0600 (failing if it exists) and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.to_string_lossy().contains(',') {
        bail!(
            "{}: QEMU cannot take a path with a comma in -fw_cfg",
            path.display()
        );
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_private_hex_and_gone_after_the_last_clone() -> Result<()> {
        let secret = ClusterSecretFile::generate()?;
        let path = secret.path().to_path_buf();
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.len(), 2 * SECRET_BYTES + 1);
        assert!(text.trim_end().bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_eq!(text.trim_end(), hex(&secret.bytes()));
        let mode = std::fs::metadata(&path)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let directory_mode = std::fs::metadata(private_dir()?)?.permissions().mode();
        assert_eq!(directory_mode & 0o777, 0o700);
        assert!(!format!("{secret:?}").contains(text.trim_end()));
        let clone = secret.clone();
        drop(secret);
        assert!(path.exists());
        drop(clone);
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn two_secrets_differ() -> Result<()> {
        let first = ClusterSecretFile::generate()?;
        let second = ClusterSecretFile::generate()?;
        assert_ne!(first.bytes(), second.bytes());
        assert_ne!(first.path(), second.path());
        Ok(())
    }

    #[test]
    fn the_fw_cfg_argument_names_the_kernels_file() {
        assert_eq!(
            secret_arguments(Path::new("/run/user/1000/amber/s.hex")),
            [
                "-fw_cfg",
                "name=opt/amber/cluster-secret,file=/run/user/1000/amber/s.hex"
            ]
        );
    }
}
