//! Recordings that last: the files `run --record FILE` writes, and the order `replay` reads
//! them in.
//!
//! The recorder appends to `FILE` (a restart keeps what the last run wrote). When `FILE`'s
//! first record is [`Retention::max_age`] old or the file reaches [`Retention::max_bytes`], it is
//! renamed `FILE.<first record's time>` (`outcomes.jsonl.20261130T221552.123Z`) and compressed
//! to `FILE.<time>.gz` by a background thread, and a new `FILE` begins. Rotated files whose
//! records all lie more than [`Retention::keep`] in the past are deleted. A crash can tear the
//! last line of `FILE`; the next run starts on a new line, so only that line is lost, and
//! `replay` names it ([`super::replay`]).
//!
//! [`files`] lists a recording in replay order: a file alone, or a directory's rotated files by
//! time and then its live file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::record::{rfc3339_ms, unix_ms, OutcomeRecord};

/// When a recording rotates and how long rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Rotate when the live file reaches this size (bytes, before compression).
    pub max_bytes: u64,
    /// Rotate when the live file's first record is this old.
    pub max_age: Duration,
    /// Delete a rotated file once its newest record is this old.
    pub keep: Duration,
}

impl Default for Retention {
    /// 64 MiB or one hour per file, kept eight days: a week of history to tune on plus a day of
    /// margin for the incident found late; hourly files keep `--from/--to` cheap to find.
    fn default() -> Self {
        Retention {
            max_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(3600),
            keep: Duration::from_secs(8 * 24 * 3600),
        }
    }
}

/// Writes outcome records to a lasting, rotated, compressed recording.
pub struct Recorder {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    /// Wall-clock milliseconds of the live file's first record; names it when it rotates.
    first_ms: Option<u64>,
    retention: Retention,
    compressing: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Opens `path` for appending (creating it), ends a line torn by a crash, and finishes the
    /// compression and pruning a previous run may have left undone.
    pub fn open(path: &Path, retention: Retention) -> io::Result<Recorder> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let bytes = file.metadata()?.len();
        if bytes > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(bytes - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        let first_ms = first_clock_ms(path);
        let mut recorder = Recorder {
            path: path.to_owned(),
            file: BufWriter::new(file),
            bytes,
            first_ms,
            retention,
            compressing: None,
        };
        let (path, keep) = (recorder.path.clone(), recorder.retention.keep);
        recorder.compressing = Some(std::thread::spawn(move || compress_and_prune(&path, keep)));
        Ok(recorder)
    }

    /// Appends `record` (which carries its wall-clock `time`), rotating first when due.
    pub fn write(&mut self, record: &OutcomeRecord) -> io::Result<()> {
        let now_ms = record.clock_ms().map_err(io::Error::other)?;
        if let Some(first) = self.first_ms {
            let age = Duration::from_millis(now_ms.saturating_sub(first));
            if self.bytes >= self.retention.max_bytes || age >= self.retention.max_age {
                self.rotate(first)?;
            }
        }
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        self.first_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Writes what is buffered to the file: once per evaluation tick, so a crash loses at most
    /// one tick of records.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Flushes and waits for a compression in progress.
    pub fn finish(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if let Some(t) = self.compressing.take() {
            let _ = t.join();
        }
        Ok(())
    }

    fn rotate(&mut self, first_ms: u64) -> io::Result<()> {
        self.file.flush()?;
        let rotated = sibling(&self.path, &stamp(first_ms));
        fs::rename(&self.path, &rotated)?;
        self.file = BufWriter::new(OpenOptions::new().append(true).create(true).open(&self.path)?);
        self.bytes = 0;
        self.first_ms = None;
        if let Some(t) = self.compressing.take() {
            let _ = t.join();
        }
        let (path, keep) = (self.path.clone(), self.retention.keep);
        self.compressing = Some(std::thread::spawn(move || compress_and_prune(&path, keep)));
        Ok(())
    }
}

/// `FILE.<suffix>` beside `FILE`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// A file-name stamp of a wall-clock time: `20261130T221552.123Z`, which sorts as the time does.
fn stamp(ms: u64) -> String {
    rfc3339_ms(ms).replace(['-', ':'], "")
}

/// The milliseconds of a [`stamp`].
fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    unix_ms(&format!("{}-{}-{}T{}:{}:{}", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..]))
}

/// The clock of the first record of a recording file, when it has one.
fn first_clock_ms(path: &Path) -> Option<u64> {
    let mut line = String::new();
    BufReader::new(File::open(path).ok()?).take(64 * 1024).read_line(&mut line).ok()?;
    serde_json::from_str::<OutcomeRecord>(&line).ok()?.time.as_deref().and_then(unix_ms)
}

/// Compresses the rotated, uncompressed siblings of `live` (`FILE.<stamp>` to
/// `FILE.<stamp>.gz`), then deletes the rotated files older than `keep`. Failures are logged:
/// the uncompressed file stays and replays as well.
fn compress_and_prune(live: &Path, keep: Duration) {
    let rotated = match rotated_siblings(live) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(file = %live.display(), error = %e, "cannot list the rotated record files");
            return;
        }
    };
    for r in rotated.iter().filter(|r| !r.gz) {
        if let Err(e) = compress(&r.path) {
            tracing::warn!(file = %r.path.display(), error = %e, "cannot compress a rotated record file");
        }
    }
    let Ok(rotated) = rotated_siblings(live) else { return };
    let now_ms =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let horizon = now_ms.saturating_sub(keep.as_millis() as u64);
    // A rotated file's records end where the next file's begin.
    for pair in rotated.windows(2) {
        if pair[1].first_ms <= horizon {
            if let Err(e) = fs::remove_file(&pair[0].path) {
                tracing::warn!(file = %pair[0].path.display(), error = %e, "cannot delete an expired record file");
            }
        }
    }
    if let (Some(last), Some(live_first)) = (rotated.last(), first_clock_ms(live)) {
        if live_first <= horizon {
            let _ = fs::remove_file(&last.path);
        }
    }
}

/// Gzips `path` to `path.gz` through a temporary file, then removes `path`.
fn compress(path: &Path) -> io::Result<()> {
    let tmp = sibling(path, "gz.tmp");
    let mut gz = GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
    io::copy(&mut File::open(path)?, &mut gz)?;
    gz.finish()?.sync_all()?;
    fs::rename(&tmp, sibling(path, "gz"))?;
    fs::remove_file(path)
}

/// One rotated file of a recording.
#[derive(Debug)]
struct Rotated {
    path: PathBuf,
    first_ms: u64,
    gz: bool,
}

/// The rotated siblings of `live`, oldest first; of a file both plain and compressed (a crash
/// between the two), the compressed one.
fn rotated_siblings(live: &Path) -> io::Result<Vec<Rotated>> {
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = live.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(r) = rotated_name(&base, &name) {
            found.push(Rotated { path: dir.join(&name), first_ms: r.0, gz: r.1 });
        }
    }
    found.sort_by_key(|r| (r.first_ms, !r.gz));
    found.dedup_by_key(|r| r.first_ms);
    Ok(found)
}

/// `(first_ms, compressed)` when `name` is a rotated file of the live file `base`.
fn rotated_name(base: &str, name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    let (stamp, gz) = match rest.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (rest, false),
    };
    parse_stamp(stamp).map(|ms| (ms, gz))
}

/// Why a recording cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} holds the recordings of several files ({}); give one of them, or a directory with one",
        dir.display(), bases.join(", ")
    )]
    Several { dir: PathBuf, bases: Vec<String> },
    #[error("{} holds no recording (no FILE.jsonl or FILE.jsonl.<time>.gz)", .0.display())]
    None(PathBuf),
}

/// Records of one file may run this far past the first record of the next (outcomes reach the
/// recorder a little out of order): a window skips a rotated file by its name only beyond it.
pub const NAME_SLACK: Duration = Duration::from_secs(60);

/// The wall-clock milliseconds a rotated file's name gives for its first record.
pub fn named_start(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_string_lossy();
    let (base, _) = name.split_once(".jsonl.")?;
    rotated_name(&format!("{base}.jsonl"), &name).map(|(ms, _)| ms)
}

/// The files of the recording at `path`, in replay order: `path` itself when it is a file; for
/// a directory, the rotated files of its one live `*.jsonl` oldest first, then the live file.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    let read = |source| RecordingError::Read { path: path.to_owned(), source };
    if !fs::metadata(path).map_err(read)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(path).map_err(read)? {
        names.push(entry.map_err(read)?.file_name().to_string_lossy().into_owned());
    }
    let mut bases: Vec<String> = names.iter().filter(|n| n.ends_with(".jsonl")).cloned().collect();
    for n in &names {
        if let Some((base, _)) = n.split_once(".jsonl.") {
            let base = format!("{base}.jsonl");
            if rotated_name(&base, n).is_some() && !bases.contains(&base) {
                bases.push(base);
            }
        }
    }
    bases.sort();
    match bases.as_slice() {
        [] => Err(RecordingError::None(path.to_owned())),
        [base] => {
            let live = path.join(base);
            let mut out: Vec<PathBuf> =
                rotated_siblings(&live).map_err(read)?.into_iter().map(|r| r.path).collect();
            if live.exists() {
                out.push(live);
            }
            Ok(out)
        }
        _ => Err(RecordingError::Several { dir: path.to_owned(), bases }),
    }
}

/// Opens one recording file, decompressing a `.gz` one.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_time_and_parse_back() {
        let a = 1_796_076_952_123;
        assert_eq!(stamp(a), "20261130T221552.123Z");
        assert_eq!(parse_stamp(&stamp(a)), Some(a));
        assert!(stamp(a) < stamp(a + 1));
        assert_eq!(rotated_name("o.jsonl", "o.jsonl.20261130T221552.123Z.gz"), Some((a, true)));
        assert_eq!(rotated_name("o.jsonl", "o.jsonl.20261130T221552.123Z"), Some((a, false)));
        assert_eq!(rotated_name("o.jsonl", "o.jsonl.20261130T221552.123Z.gz.tmp"), None);
        assert_eq!(rotated_name("o.jsonl", "p.jsonl.20261130T221552.123Z.gz"), None);
    }

    #[test]
    fn rotated_files_older_than_keep_are_deleted_and_plain_ones_compressed() {
        let dir = std::env::temp_dir().join(format!("crossprobe-recording-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let live = dir.join("o.jsonl");
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let day = 24 * 3600 * 1000;
        // Files begun 10, 9 and 1 days ago: the first ends 9 days ago (when the next begins),
        // past a keep of 8 days; the second ends a day ago and stays. The last is not compressed
        // yet (a crash mid-compression).
        for (ago, ext) in [(10, ".gz"), (9, ".gz"), (1, "")] {
            fs::write(sibling(&live, &format!("{}{ext}", stamp(now - ago * day))), "{}\n").unwrap();
        }
        let mut r = Recorder::open(&live, Retention::default()).unwrap();
        r.finish().unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want = vec![
            "o.jsonl".to_owned(),
            format!("o.jsonl.{}.gz", stamp(now - 9 * day)),
            format!("o.jsonl.{}.gz", stamp(now - day)),
        ];
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, want);
    }
}
