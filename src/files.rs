//! Files an operator points the daemon at (the configuration, password files, CA and PEM files,
//! `localize` snapshots), read the one careful way: only regular files, at most a stated number
//! of bytes, within a stated time.
//!
//! A path can name anything: a FIFO blocks `open` until a writer comes (forever, for a
//! configuration reload, and the run loop with it), `/dev/zero` never ends, a hung network
//! mount blocks `read`. So a file is opened without blocking (`O_NONBLOCK`, which a regular
//! file ignores), refused unless the opened file is regular (checked on the open descriptor, so
//! a swap between a check and the open cannot sneak a FIFO in), read up to its bound plus one
//! byte, and the whole read runs on a helper thread that the caller waits for at most
//! [`READ_TIMEOUT`]. A read stuck in the kernel past that leaves its thread behind, blocked, and
//! the caller goes on with an error.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Most bytes of a configuration file.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes of a password file.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Most bytes of a PEM file (certificates, keys, CAs).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Most bytes of a `localize` snapshot.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;
/// Longest a read may take before the caller gives up on it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file was not read. Messages name the file, never its content.
#[derive(Debug)]
pub enum FileError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// The path names a FIFO, a device, a socket or a directory.
    NotRegular(&'static str),
    /// The file holds more than the bound.
    TooLarge { limit: u64 },
    /// The read did not finish within [`READ_TIMEOUT`].
    TimedOut,
    /// The file is not UTF-8 text.
    NotText,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io(e) => write!(f, "{e}"),
            FileError::NotRegular(kind) => write!(f, "it is a {kind}, not a regular file"),
            FileError::TooLarge { limit } => write!(f, "it holds more than {} bytes", limit),
            FileError::TimedOut => {
                write!(f, "reading it took longer than {}", humantime::format_duration(READ_TIMEOUT))
            }
            FileError::NotText => write!(f, "it is not UTF-8 text"),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl FileError {
    /// Whether the file does not exist (some callers treat that apart).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them, read within
/// [`READ_TIMEOUT`].
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    read_within(path, limit, READ_TIMEOUT)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| FileError::NotText)
}

fn read_within(path: &Path, limit: u64, timeout: Duration) -> Result<Vec<u8>, FileError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let owned: PathBuf = path.to_owned();
    let spawned = std::thread::Builder::new().name("crossprobe-read".into()).spawn(move || {
        let _ = tx.send(read_now(&owned, limit));
    });
    if let Err(e) = spawned {
        // No thread to spare: read here, still refusing what is not a regular file.
        tracing::debug!(error = %e, "no thread for a bounded read; reading inline");
        return read_now(path, limit);
    }
    rx.recv_timeout(timeout).map_err(|_| FileError::TimedOut)?
}

fn read_now(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(FileError::Io)?;
    let kind = file.metadata().map_err(FileError::Io)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return Err(FileError::NotRegular(what));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(FileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crossprobe-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn regular_files_within_the_bound_are_read() {
        let path = scratch("ok");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_text(&path, 5).unwrap(), "hello");
        assert!(matches!(read(&path, 4), Err(FileError::TooLarge { limit: 4 })));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&path, 10), Err(FileError::NotText)));
        std::fs::remove_file(&path).unwrap();
        let missing = read(&path, 10).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_at_once() {
        let fifo = scratch("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        // No writer ever opens it: a blocking open would wait forever.
        let started = std::time::Instant::now();
        let cases =
            [(fifo.as_path(), "FIFO"), (Path::new("/dev/zero"), "device"), (Path::new("/tmp"), "directory")];
        for (path, kind) in cases {
            match read(path, 1024) {
                Err(FileError::NotRegular(k)) => assert_eq!(k, kind, "{}", path.display()),
                other => panic!("{}: expected a refusal, got {other:?}", path.display()),
            }
        }
        assert!(started.elapsed() < READ_TIMEOUT, "refused without waiting");
        std::fs::remove_file(&fifo).unwrap();
    }

    #[test]
    fn messages_say_why_without_content() {
        assert_eq!(FileError::NotRegular("FIFO").to_string(), "it is a FIFO, not a regular file");
        assert_eq!(FileError::TooLarge { limit: 10 }.to_string(), "it holds more than 10 bytes");
        assert_eq!(FileError::TimedOut.to_string(), "reading it took longer than 5s");
    }
}
