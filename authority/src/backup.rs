//! Backing up and restoring an authority directory (`aip-ca backup`, `aip-ca restore`).
//!
//! A backup is one tar file (POSIX ustar, readable with `tar -tvf`): first a manifest
//! ([`MANIFEST_NAME`]: format version, backend, creation time, and every file with its size
//! and SHA-256), then the files in the manifest's order — `aip.toml`, the CA certificates, the
//! encrypted key files, anything else in the directory, and on SQLite a consistent copy of the
//! database taken while the authority serves (`aip_db::backup::snapshot_sqlite`, never a copy
//! of the live file). On PostgreSQL the database is left to `pg_dump`; the backup holds the
//! keys and the configuration. The file is written beside its destination with mode 0600 and
//! linked into place at the end, so it appears whole or not at all and never replaces a file.
//!
//! A restore checks every entry against the manifest while it unpacks into a staging directory
//! beside the target, moves the counters past anything the lost authority may have published
//! (`aip_db::Database::advance_counters`), and only then renames the staging directory into
//! place: a damaged archive leaves nothing behind.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use aip_db::backup::{Advanced, snapshot_sqlite};
use aip_db::{Database, DbError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{CONFIG_FILE, FileConfig};
use crate::error::AuthorityError;
use crate::init::{DATABASE_FILE, database_url};

/// The manifest's name, the archive's first entry.
pub const MANIFEST_NAME: &str = "aip-backup.json";
/// The archive format this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest read back.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest file a ustar header can describe (11 octal digits).
const MAX_ENTRY_BYTES: u64 = (1 << 33) - 1;
/// Longest entry name a ustar header holds without its prefix field.
const MAX_NAME_BYTES: usize = 100;
const BLOCK: usize = 512;

/// Which database the backed-up authority used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The SQLite file, included in the archive.
    Sqlite,
    /// A PostgreSQL server, backed up with `pg_dump` (not in the archive).
    Postgres,
}

/// One file of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Path relative to the authority directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
}

/// What an archive holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The database backend.
    pub backend: Backend,
    /// When the backup started (Unix time).
    pub created_at: i64,
    /// On SQLite, which of [`Manifest::files`] is the database copy.
    pub database: Option<String>,
    /// Every file, in archive order.
    pub files: Vec<ManifestFile>,
}

/// Why a backup or a restore failed. Nothing is left behind either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The backup file exists already.
    #[error("{0} exists; a backup never replaces a file")]
    Exists(PathBuf),
    /// The restore target holds files.
    #[error("{0} exists and is not empty; restore into a new directory")]
    NotEmpty(PathBuf),
    /// The archive is damaged, truncated or not a backup.
    #[error("{path}: not a usable backup: {reason}")]
    Damaged {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// What was asked cannot be done this way; the text says why.
    #[error("{0}")]
    Unsupported(String),
    /// The authority's configuration could not be read.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] DbError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What [`backup`] wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// The archive.
    pub out: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Entries of the directory left out (neither regular files nor directories).
    pub skipped: Vec<PathBuf>,
}

/// Backs up the authority in `dir` to the new file `out`, while it serves. `database_url`
/// overrides the configuration's, as for `serve`; `now` is Unix time. Works on the directory
/// itself, so it runs on the authority's host.
pub async fn backup(
    dir: &Path,
    out: &Path,
    database_url_override: Option<&str>,
    now: i64,
) -> Result<BackupReport, BackupError> {
    let config = FileConfig::load(dir).map_err(AuthorityError::from)?;
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let dir_abs = std::fs::canonicalize(dir).map_err(io_error(dir))?;
    let parent = parent_of(out);
    let parent_abs = std::fs::canonicalize(parent).map_err(io_error(parent))?;
    if parent_abs.starts_with(&dir_abs) {
        return Err(BackupError::Unsupported(format!(
            "{}: write the backup outside the authority directory",
            out.display()
        )));
    }
    let url = database_url_override.map_or_else(|| database_url(dir, config.database_url.as_deref()), str::to_owned);
    let backend = if url.starts_with("sqlite:") {
        if database_url_override.is_some() || config.database_url.is_some() {
            return Err(BackupError::Unsupported(
                "only the SQLite database in the authority directory (aip.db) can be backed up; \
                 this configuration names another file"
                    .into(),
            ));
        }
        Backend::Sqlite
    } else {
        Backend::Postgres
    };

    let staging = tempdir_beside(out)?;
    let result = write_archive(dir, &staging, out, backend, &url, now).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn write_archive(
    dir: &Path,
    staging: &Path,
    out: &Path,
    backend: Backend,
    url: &str,
    now: i64,
) -> Result<BackupReport, BackupError> {
    let mut skipped = Vec::new();
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    let database_siblings: Vec<String> = ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| format!("{DATABASE_FILE}{suffix}"))
        .collect();
    collect_files(dir, dir, &mut sources, &mut skipped)?;
    if backend == Backend::Sqlite {
        sources.retain(|(name, _)| !database_siblings.contains(name));
    }
    if !sources.iter().any(|(name, _)| name == CONFIG_FILE) {
        return Err(BackupError::Unsupported(format!(
            "{}: no {CONFIG_FILE} there",
            dir.display()
        )));
    }
    let database = match backend {
        Backend::Sqlite => {
            let copy = staging.join(DATABASE_FILE);
            snapshot_sqlite(url, &copy).await?;
            sources.push((DATABASE_FILE.to_owned(), copy));
            Some(DATABASE_FILE.to_owned())
        }
        Backend::Postgres => None,
    };

    // Hash first (the manifest leads the archive), then write what was hashed: a file that
    // changes in between is caught by the second hash.
    let mut files = Vec::with_capacity(sources.len());
    for (name, path) in &sources {
        let (size, sha256) = hash_file(path)?;
        files.push(ManifestFile {
            path: name.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        backend,
        created_at: now,
        database,
        files,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Unsupported(format!("cannot encode the manifest: {e}")))?;

    let partial = staging.join("archive.tar");
    let file = create_private(&partial)?;
    let mut writer = BufWriter::new(file);
    write_entry(
        &mut writer,
        MANIFEST_NAME,
        &mut &manifest_json[..],
        manifest_json.len() as u64,
        now,
        &partial,
    )?;
    for (entry, (_, path)) in manifest.files.iter().zip(&sources) {
        let source = File::open(path).map_err(io_error(path))?;
        let mut hashing = HashingReader::new(source.take(entry.size));
        write_entry(&mut writer, &entry.path, &mut hashing, entry.size, now, &partial)?;
        if hashing.count != entry.size || hashing.finish() != entry.sha256 {
            return Err(BackupError::Unsupported(format!(
                "{} changed while it was backed up; run the backup again",
                path.display()
            )));
        }
    }
    writer.write_all(&[0; 2 * BLOCK]).map_err(io_error(&partial))?;
    let file = writer.into_inner().map_err(|e| BackupError::Io {
        path: partial.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_error(&partial))?;
    drop(file);
    // A hard link never replaces an existing file: the archive appears whole, or not at all.
    std::fs::hard_link(&partial, out).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            BackupError::Exists(out.to_owned())
        } else {
            BackupError::Io {
                path: out.to_owned(),
                source: e,
            }
        }
    })?;
    sync_dir(parent_of(out));
    Ok(BackupReport {
        out: out.to_owned(),
        manifest,
        skipped,
    })
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The restored directory.
    pub dir: PathBuf,
    /// The archive's manifest.
    pub manifest: Manifest,
    /// The counters after the restore.
    pub advanced: Advanced,
}

/// Restores the archive `from` into `dir` (missing or empty). The database is the archive's
/// copy on SQLite; on PostgreSQL it is the one `database_url` (else the restored
/// configuration) names, which must already hold the data restored with `pg_restore`. Either
/// way the counters move past anything published since the copy (see
/// `aip_db::Database::advance_counters`). `now` is Unix time.
pub async fn restore(
    from: &Path,
    dir: &Path,
    database_url_override: Option<&str>,
    now: i64,
) -> Result<RestoreReport, BackupError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io_error(dir))?.next().is_some() {
        return Err(BackupError::NotEmpty(dir.to_owned()));
    }
    let parent = parent_of(dir);
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging = tempdir_beside(dir)?;
    let result = restore_into(from, &staging, database_url_override, now).await;
    let finished = result.and_then(|(manifest, advanced)| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(io_error(dir))?;
        }
        std::fs::rename(&staging, dir).map_err(io_error(dir))?;
        sync_dir(parent);
        Ok(RestoreReport {
            dir: dir.to_owned(),
            manifest,
            advanced,
        })
    });
    if finished.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    finished
}

async fn restore_into(
    from: &Path,
    staging: &Path,
    database_url_override: Option<&str>,
    now: i64,
) -> Result<(Manifest, Advanced), BackupError> {
    let file = File::open(from).map_err(io_error(from))?;
    let manifest = unpack(BufReader::new(file), from, staging)?;
    let url = match manifest.backend {
        Backend::Sqlite => {
            if database_url_override.is_some() {
                return Err(BackupError::Unsupported(
                    "this backup holds its SQLite database; --database-url is for PostgreSQL".into(),
                ));
            }
            Database::sqlite_url(&staging.join(DATABASE_FILE))
        }
        Backend::Postgres => {
            let config = FileConfig::load(staging).map_err(AuthorityError::from)?;
            match database_url_override.map(str::to_owned).or(config.database_url) {
                Some(url) => url,
                None => {
                    return Err(BackupError::Unsupported(
                        "a PostgreSQL backup needs the database URL (--database-url)".into(),
                    ));
                }
            }
        }
    };
    let database = Database::connect(&url).await?;
    let (records, _) = match database.audit_head().await {
        Ok(head) => head,
        Err(e) => {
            database.close().await;
            return Err(e.into());
        }
    };
    if records == 0 {
        database.close().await;
        return Err(BackupError::Unsupported(
            "the database holds no authority; on PostgreSQL, restore it with pg_restore first".into(),
        ));
    }
    let details = serde_json::json!({"backup_created_at": manifest.created_at, "backend": manifest.backend});
    let advanced = database.advance_counters("system:restore", details, now).await;
    database.close().await;
    Ok((manifest, advanced?))
}

/// Unpacks the archive read from `reader` into `staging`, checking every entry against the
/// manifest; the manifest.
fn unpack(mut reader: impl Read, path: &Path, staging: &Path) -> Result<Manifest, BackupError> {
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let Some((name, size)) = read_header(&mut reader, path)? else {
        return Err(damaged("the archive is empty".into()));
    };
    if name != MANIFEST_NAME {
        return Err(damaged(format!("the first entry is {name:?}, not the manifest")));
    }
    if size > MAX_MANIFEST_BYTES {
        return Err(damaged("the manifest is too large".into()));
    }
    let mut manifest_bytes = Vec::new();
    read_exact_data(&mut reader, size, &mut manifest_bytes, path)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| damaged(format!("the manifest does not parse: {e}")))?;
    check_manifest(&manifest).map_err(damaged)?;

    for expected in &manifest.files {
        let Some((name, size)) = read_header(&mut reader, path)? else {
            return Err(damaged(format!(
                "{} is missing (the archive is truncated)",
                expected.path
            )));
        };
        if name != expected.path || size != expected.size {
            return Err(damaged(format!(
                "entry {name:?} ({size} bytes) where the manifest has {:?} ({} bytes)",
                expected.path, expected.size
            )));
        }
        let target = staging.join(&expected.path);
        if let Some(parent) = target.parent() {
            private_dirs(staging, parent)?;
        }
        let mut file = BufWriter::new(create_private(&target)?);
        let mut hashing = HashingReader::new((&mut reader).take(size));
        let copied = io::copy(&mut hashing, &mut file).map_err(io_error(&target))?;
        if copied != size {
            return Err(damaged(format!(
                "{} is cut short (the archive is truncated)",
                expected.path
            )));
        }
        let sha256 = hashing.finish();
        skip_padding(&mut reader, size, path)?;
        if sha256 != expected.sha256 {
            return Err(damaged(format!(
                "{} does not match its SHA-256 in the manifest",
                expected.path
            )));
        }
        let file = file.into_inner().map_err(|e| BackupError::Io {
            path: target.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_error(&target))?;
    }
    if read_header(&mut reader, path)?.is_some() {
        return Err(damaged("an entry the manifest does not list".into()));
    }
    Ok(manifest)
}

/// Checks the manifest's format, backend and file names (relative, no `..`, unique).
fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    if manifest.format != FORMAT_VERSION {
        return Err(format!(
            "format {} (this version reads format {FORMAT_VERSION})",
            manifest.format
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for file in &manifest.files {
        check_name(&file.path)?;
        if file.path == MANIFEST_NAME || !seen.insert(file.path.as_str()) {
            return Err(format!("{:?} is listed twice", file.path));
        }
        if file.sha256.len() != 64
            || !file
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(format!("{:?} has no SHA-256", file.path));
        }
    }
    if !seen.contains(CONFIG_FILE) {
        return Err(format!("no {CONFIG_FILE}"));
    }
    match (manifest.backend, manifest.database.as_deref()) {
        (Backend::Sqlite, Some(DATABASE_FILE)) if seen.contains(DATABASE_FILE) => Ok(()),
        (Backend::Sqlite, _) => Err("an SQLite backup without its database".into()),
        (Backend::Postgres, None) if !seen.contains(DATABASE_FILE) => Ok(()),
        (Backend::Postgres, _) => Err("a PostgreSQL backup with an SQLite database".into()),
    }
}

/// A relative, `/`-separated path of plain components, short enough for a ustar header.
fn check_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.contains('\\')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && Path::new(name).components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!("unsafe or overlong entry name {name:?}"))
    }
}

/// Every regular file under `dir` (sorted), as (name relative to `root`, path).
fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf)>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), BackupError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            collect_files(root, &path, out, skipped)?;
        } else if kind.is_file() {
            let name = path
                .strip_prefix(root)
                .ok()
                .and_then(Path::to_str)
                .map(|n| n.replace(std::path::MAIN_SEPARATOR, "/"))
                .ok_or_else(|| BackupError::Unsupported(format!("{}: the name is not UTF-8", path.display())))?;
            check_name(&name).map_err(|e| BackupError::Unsupported(format!("{}: {e}", path.display())))?;
            out.push((name, path));
        } else {
            skipped.push(path);
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A new private directory beside `path`, named after it.
fn tempdir_beside(path: &Path) -> Result<PathBuf, BackupError> {
    let parent = parent_of(path);
    let random = aip_aat::ids::Jti::random()
        .map_err(|_| BackupError::Unsupported("no randomness for a temporary name".into()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("aip");
    let staging = parent.join(format!(".{name}.partial-{random}"));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&staging).map_err(io_error(&staging))?;
    Ok(staging)
}

/// Creates the directories from `root` down to `dir`, mode 0700.
fn private_dirs(root: &Path, dir: &Path) -> Result<(), BackupError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if dir.starts_with(root) {
        builder.create(dir).map_err(io_error(dir))
    } else {
        Err(BackupError::Unsupported(format!(
            "{}: outside the restore",
            dir.display()
        )))
    }
}

/// A new file, readable and writable by its owner only (0600).
fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io_error(path))
}

/// Flushes a directory's entries (a rename or link in it) to disk; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut hashing = HashingReader::new(BufReader::new(file));
    io::copy(&mut hashing, &mut io::sink()).map_err(io_error(path))?;
    let size = hashing.count;
    Ok((size, hashing.finish()))
}

/// Counts and hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes one regular-file entry: its ustar header, `size` bytes of `data`, the padding.
fn write_entry(
    out: &mut impl Write,
    name: &str,
    data: &mut impl Read,
    size: u64,
    mtime: i64,
    path: &Path,
) -> Result<(), BackupError> {
    if size > MAX_ENTRY_BYTES {
        return Err(BackupError::Unsupported(format!(
            "{name}: larger than a backup entry can hold (8 GiB)"
        )));
    }
    out.write_all(&header(name, size, mtime)?).map_err(io_error(path))?;
    let copied = io::copy(data, out).map_err(io_error(path))?;
    if copied != size {
        return Err(BackupError::Unsupported(format!(
            "{name} changed while it was backed up; run the backup again"
        )));
    }
    out.write_all(&[0; BLOCK][..padding(size)]).map_err(io_error(path))
}

fn padding(size: u64) -> usize {
    // The remainder is below 512.
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// The ustar header of a regular file `name` (mode 0600, owner 0).
fn header(name: &str, size: u64, mtime: i64) -> Result<[u8; BLOCK], BackupError> {
    check_name(name).map_err(BackupError::Unsupported)?;
    let mut block = [0u8; BLOCK];
    block[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |block: &mut [u8; BLOCK], at: usize, width: usize, value: u64| {
        let text = format!("{value:0w$o}", w = width - 1);
        block[at..at + width - 1].copy_from_slice(text.as_bytes());
    };
    octal(&mut block, 100, 8, 0o600);
    octal(&mut block, 108, 8, 0);
    octal(&mut block, 116, 8, 0);
    octal(&mut block, 124, 12, size);
    octal(
        &mut block,
        136,
        12,
        u64::try_from(mtime).unwrap_or(0).min(0o77_777_777_777),
    );
    block[156] = b'0';
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    Ok(block)
}

/// Reads the next header: `Some((name, size))`, or `None` at the end of the archive (two
/// zero blocks, then nothing but zeros).
fn read_header(reader: &mut impl Read, path: &Path) -> Result<Option<(String, u64)>, BackupError> {
    let damaged = |reason: &str| BackupError::Damaged {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut block = [0u8; BLOCK];
    read_block(reader, &mut block, path)?;
    if block.iter().all(|&b| b == 0) {
        read_block(reader, &mut block, path)?;
        if block.iter().any(|&b| b != 0) {
            return Err(damaged("data after the end-of-archive marker"));
        }
        let mut rest = Vec::new();
        reader.take(1 << 20).read_to_end(&mut rest).map_err(io_error(path))?;
        if rest.iter().any(|&b| b != 0) {
            return Err(damaged("data after the end of the archive"));
        }
        return Ok(None);
    }
    if &block[257..263] != b"ustar\0" {
        return Err(damaged("not a ustar archive"));
    }
    let stored = parse_octal(&block[148..156]).ok_or_else(|| damaged("a header checksum does not parse"))?;
    let mut copy = block;
    copy[148..156].copy_from_slice(b"        ");
    let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
    if sum != stored {
        return Err(damaged("a header checksum does not match"));
    }
    if !matches!(block[156], b'0' | 0) || block[345] != 0 {
        return Err(damaged("an entry that is not a plain file"));
    }
    let end = block[..MAX_NAME_BYTES]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(MAX_NAME_BYTES);
    let name = std::str::from_utf8(&block[..end]).map_err(|_| damaged("an entry name that is not UTF-8"))?;
    let size = parse_octal(&block[124..136]).ok_or_else(|| damaged("an entry size does not parse"))?;
    Ok(Some((name.to_owned(), size)))
}

fn read_block(reader: &mut impl Read, block: &mut [u8; BLOCK], path: &Path) -> Result<(), BackupError> {
    reader.read_exact(block).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            BackupError::Damaged {
                path: path.to_owned(),
                reason: "the archive is truncated".into(),
            }
        } else {
            BackupError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    })
}

fn read_exact_data(reader: &mut impl Read, size: u64, out: &mut Vec<u8>, path: &Path) -> Result<(), BackupError> {
    let read = reader.take(size).read_to_end(out).map_err(io_error(path))?;
    if read as u64 != size {
        return Err(BackupError::Damaged {
            path: path.to_owned(),
            reason: "the archive is truncated".into(),
        });
    }
    skip_padding(reader, size, path)
}

fn skip_padding(reader: &mut impl Read, size: u64, path: &Path) -> Result<(), BackupError> {
    let mut pad = [0u8; BLOCK];
    let pad = &mut pad[..padding(size)];
    reader.read_exact(pad).map_err(|_| BackupError::Damaged {
        path: path.to_owned(),
        reason: "the archive is truncated".into(),
    })?;
    if pad.iter().any(|&b| b != 0) {
        return Err(BackupError::Damaged {
            path: path.to_owned(),
            reason: "data in an entry's padding".into(),
        });
    }
    Ok(())
}

/// An octal field: digits, then NULs or spaces.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_start_matches(' ').trim_end_matches(['\0', ' ']);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(files: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            backend: Backend::Postgres,
            created_at: 1_800_000_000,
            database: None,
            files: files
                .iter()
                .map(|(name, data)| ManifestFile {
                    path: (*name).to_owned(),
                    size: data.len() as u64,
                    sha256: hex::encode(Sha256::digest(data)),
                })
                .collect(),
        }
    }

    fn archive(manifest: &Manifest, files: &[(&str, &[u8])]) -> Vec<u8> {
        let json = serde_json::to_vec(manifest).unwrap();
        let mut out = Vec::new();
        let path = Path::new("test.tar");
        write_entry(&mut out, MANIFEST_NAME, &mut &json[..], json.len() as u64, 0, path).unwrap();
        for (name, data) in files {
            write_entry(&mut out, name, &mut &data[..], data.len() as u64, 0, path).unwrap();
        }
        out.extend_from_slice(&[0; 2 * BLOCK]);
        out
    }

    const FILES: &[(&str, &[u8])] = &[
        ("aip.toml", b"version = 1\n"),
        ("keys/registry.key", b"secret key file"),
    ];

    #[test]
    fn an_archive_round_trips_and_tar_reads_it() {
        let manifest = manifest_for(FILES);
        let bytes = archive(&manifest, FILES);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&bytes[..], Path::new("t"), dir.path()).unwrap(), manifest);
        assert_eq!(
            std::fs::read(dir.path().join("keys/registry.key")).unwrap(),
            b"secret key file"
        );
        // The system's tar lists the same entries.
        let file = dir.path().join("a.tar");
        std::fs::write(&file, &bytes).unwrap();
        if let Ok(listing) = std::process::Command::new("tar").arg("-tf").arg(&file).output() {
            assert_eq!(
                String::from_utf8(listing.stdout).unwrap(),
                "aip-backup.json\naip.toml\nkeys/registry.key\n"
            );
        }
    }

    #[test]
    fn damaged_archives_are_refused() {
        let manifest = manifest_for(FILES);
        let good = archive(&manifest, FILES);
        let refuse = |bytes: &[u8], why: &str| {
            let dir = tempfile::tempdir().unwrap();
            match unpack(bytes, Path::new("t"), dir.path()) {
                Err(BackupError::Damaged { reason, .. }) => assert!(reason.contains(why), "{reason} / {why}"),
                other => panic!("{why}: {other:?}"),
            }
        };
        // Cut anywhere: refused.
        for cut in [0, 100, 512, 1024, good.len() - 2 * BLOCK - 1, good.len() - 1] {
            refuse(&good[..cut], "truncated");
        }
        // A flipped byte in a file's contents.
        let mut flipped = good.clone();
        let at = flipped.windows(6).position(|w| w == b"secret").unwrap();
        flipped[at] ^= 1;
        refuse(&flipped, "SHA-256");
        // A flipped byte in a file's padding.
        let mut padded = good.clone();
        let end = padded.len() - 2 * BLOCK - 1;
        padded[end] ^= 1;
        refuse(&padded, "padding");
        // A flipped byte in a header.
        let mut header = good.clone();
        header[3] ^= 1;
        refuse(&header, "checksum");
        // An entry the manifest does not list.
        let extra: &[(&str, &[u8])] = &[FILES[0], FILES[1], ("extra", b"x")];
        refuse(&archive(&manifest, extra), "does not list");
        // Names that leave the directory.
        for name in ["../evil", "/etc/passwd", "a/../../b", "a//b", ""] {
            let files: &[(&str, &[u8])] = &[FILES[0], (name, b"x")];
            let manifest = manifest_for(files);
            let json = serde_json::to_vec(&manifest).unwrap();
            let mut bytes = Vec::new();
            write_entry(
                &mut bytes,
                MANIFEST_NAME,
                &mut &json[..],
                json.len() as u64,
                0,
                Path::new("t"),
            )
            .unwrap();
            bytes.extend_from_slice(&[0; 2 * BLOCK]);
            refuse(&bytes, "entry name");
        }
        // A manifest from a later format.
        let mut later = manifest_for(FILES);
        later.format = 2;
        refuse(&archive(&later, FILES), "format 2");
    }

    #[test]
    fn no_changed_byte_changes_what_is_restored() {
        let manifest = manifest_for(FILES);
        let good = archive(&manifest, FILES);
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 0x01;
            let dir = tempfile::tempdir().unwrap();
            // Either refused, or (a byte of the manifest's layout, its time, a header's mtime
            // or owner) the same files come out.
            if unpack(&bytes[..], Path::new("t"), dir.path()).is_ok() {
                for (name, data) in FILES {
                    assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), *data, "byte {at}");
                }
            }
        }
    }

    #[test]
    fn octal_fields_parse_strictly() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b" 12 \0"), Some(0o12));
        assert_eq!(parse_octal(b"0000008\0"), None);
        assert_eq!(parse_octal(b"\0\0\0"), None);
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
