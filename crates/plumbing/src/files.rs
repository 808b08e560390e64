//! Files written whole or not at all: the activity file, the context store and the inbox
//! journal append through [`append_whole`], so a full disk never leaves a torn line.

use std::fs::File;
use std::io;
use std::path::Path;

/// Appends `bytes` to `file` (opened for appending, `len_before` long) whole or not at all:
/// after a failed or short write (a full disk) the file is cut back to `len_before`, so
/// what is there stays whole and the next append does not continue a torn piece. The caller
/// is the file's only writer while this runs.
pub fn append_whole(file: &File, path: &Path, len_before: u64, bytes: &[u8]) -> io::Result<()> {
    let written = write_all(file, path, bytes);
    if written.is_err() {
        // Shrinking needs no space; should it fail anyway, the write's error is the news.
        let _ = file.set_len(len_before);
    }
    written
}

#[cfg(not(feature = "tiny-disk"))]
fn write_all(mut file: &File, _path: &Path, bytes: &[u8]) -> io::Result<()> {
    io::Write::write_all(&mut file, bytes)
}

#[cfg(feature = "tiny-disk")]
fn write_all(file: &File, path: &Path, bytes: &[u8]) -> io::Result<()> {
    test_disk::write_all(file, path, bytes)
}

/// A disk that fills up, for tests: a 64 KiB tmpfs mounted on a temporary directory when this
/// process may mount (root), else a simulated one (writes under the directory get a byte
/// budget; past it they are short and fail with `StorageFull`). `TINY_DISK=simulated` forces
/// the simulated one.
#[cfg(feature = "tiny-disk")]
pub mod test_disk {
    use std::fs::File;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Mutex;

    static BUDGETS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

    pub struct TinyDisk {
        dir: tempfile::TempDir,
        mounted: bool,
    }

    const SIZE: u64 = 64 * 1024;

    impl TinyDisk {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let simulated = std::env::var("TINY_DISK").is_ok_and(|v| v == "simulated");
            let mounted = !simulated && mount(dir.path(), &["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"]);
            if !mounted {
                budgets().push((dir.path().to_owned(), SIZE));
            }
            Self { dir, mounted }
        }

        pub fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Whether the disk is a real tmpfs (else simulated).
        pub fn is_tmpfs(&self) -> bool {
            self.mounted
        }

        /// Space comes back: the disk grows to 1 MiB.
        pub fn grow(&self) {
            if self.mounted {
                assert!(mount(self.path(), &["-o", "remount,size=1m"]), "tmpfs remount failed");
            } else if let Some(entry) = budgets().iter_mut().find(|(d, _)| d == self.path()) {
                entry.1 = 1024 * 1024;
            }
        }
    }

    impl Default for TinyDisk {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TinyDisk {
        fn drop(&mut self) {
            if self.mounted {
                let _ = Command::new("umount").arg(self.dir.path()).status();
            } else {
                budgets().retain(|(d, _)| d != self.dir.path());
            }
        }
    }

    fn mount(dir: &Path, args: &[&str]) -> bool {
        let status = Command::new("mount").args(args).arg(dir).stderr(std::process::Stdio::null()).status();
        status.is_ok_and(|s| s.success())
    }

    fn budgets() -> std::sync::MutexGuard<'static, Vec<(PathBuf, u64)>> {
        BUDGETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn write_all(mut file: &File, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let allowed = match budgets().iter_mut().find(|(dir, _)| path.starts_with(dir)) {
            Some((_, left)) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                n as usize
            }
            None => bytes.len(),
        };
        file.write_all(&bytes[..allowed])?;
        if allowed < bytes.len() {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (simulated)"));
        }
        Ok(())
    }
}
