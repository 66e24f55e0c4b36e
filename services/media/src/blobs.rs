//! Blob bytes: uploads and mp3s, content-addressed (their SHA-256), written first to a temp
//! file under `$DATA_DIR/media/tmp` so that memory does not grow with a file's size, then
//! kept either as files under `$DATA_DIR/media/blobs` (written to a temp file, fsynced, renamed:
//! never a half file) or in PostgreSQL in 1 MiB chunks (like GridFS), for several machines.
//! The reference counts live with the videos in the [`Store`](crate::store::Store); this
//! module only moves bytes.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};
use tempfile::TempPath;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::domain::SNIFF_BYTES;

/// Bytes per chunk of a blob kept in PostgreSQL.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Bytes per piece of a download read from a file.
const READ_BYTES: usize = 64 * 1024;

/// Where blob bytes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPlace {
    /// Files under this directory (`agora up`, one machine).
    Files(PathBuf),
    /// Chunks in the service's PostgreSQL database (several machines).
    Database,
}

/// Blob I/O failures.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A file could not be written, read, synced or renamed.
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("blob storage (database): {0}")]
    Database(#[from] sqlx::Error),
    /// A blob the records name is not there.
    #[error("blob {0} is missing from the blob store")]
    Missing(String),
}

/// A file being received into the temp directory, hashed as it is written.
pub struct TempWriter {
    file: tokio::fs::File,
    path: TempPath,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

/// A fully received temp file: deleted when dropped unless kept in the blob store.
pub struct Received {
    /// Where it is.
    pub path: TempPath,
    /// Its SHA-256, hex: its blob id.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl TempWriter {
    /// A new, empty temp file in `tmp_dir`.
    pub async fn create(tmp_dir: &Path) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(tmp_dir).await?;
        let dir = tmp_dir.to_path_buf();
        let named = tokio::task::spawn_blocking(move || tempfile::Builder::new().prefix("part-").tempfile_in(dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let (file, path) = named.into_parts();
        Ok(Self { file: tokio::fs::File::from_std(file), path, hasher: Sha256::new(), size: 0, head: Vec::new() })
    }

    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file.write_all(bytes).await?;
        Ok(())
    }

    /// The first bytes written (up to [`SNIFF_BYTES`]).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and fsyncs the file: it is complete on disk.
    pub async fn finish(mut self) -> Result<Received, BlobError> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        drop(self.file);
        let digest = self.hasher.finalize();
        Ok(Received { path: self.path, sha256: hex(&digest), size: self.size })
    }
}

/// Hashes an existing temp file (an mp3 ffmpeg wrote) into a [`Received`].
pub async fn receive_file(path: TempPath) -> Result<Received, BlobError> {
    let mut file = tokio::fs::File::open(&path).await?;
    file.sync_all().await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_BYTES];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Received { path, sha256: hex(&hasher.finalize()), size })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file of blob `id` under `dir` (`ab/abcdef…`, so no directory grows too large).
pub fn file_of(dir: &Path, id: &str) -> PathBuf {
    let fan = id.get(..2).unwrap_or("00");
    dir.join(fan).join(id)
}

/// Moves a received file into place as blob `id` unless a file is there already (the same
/// bytes, being content-addressed), then fsyncs the directory so that the rename is durable.
pub async fn place_file(dir: &Path, id: &str, received: Received) -> Result<(), BlobError> {
    let target = file_of(dir, id);
    if tokio::fs::try_exists(&target).await? {
        return Ok(());
    }
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
    tokio::fs::create_dir_all(&parent).await?;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        received.path.persist(&target).map_err(|e| e.error)?;
        std::fs::File::open(&parent)?.sync_all()
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(())
}

/// Moves blob `id`'s file aside (to be deleted once the release is committed, or put back if
/// it is not); `None` if there was no file.
pub async fn set_aside(dir: &Path, id: &str) -> Result<Option<(PathBuf, PathBuf)>, BlobError> {
    let file = file_of(dir, id);
    let aside = file.with_extension(format!("deleting-{}", uuid::Uuid::new_v4().simple()));
    match tokio::fs::rename(&file, &aside).await {
        Ok(()) => Ok(Some((file, aside))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads `len` bytes of `file` from `start`, a piece at a time.
pub async fn file_stream(
    path: PathBuf,
    start: u64,
    len: u64,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, BlobError> {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BlobError::Missing(path.display().to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    file.seek(SeekFrom::Start(start)).await?;
    Ok(futures::stream::try_unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; READ_BYTES.min(usize::try_from(left).unwrap_or(READ_BYTES))];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than recorded",
            ));
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, left - n as u64))))
    }))
}

/// Reads a [`Received`] file in [`CHUNK_BYTES`] pieces, for the database backend.
pub async fn read_chunks(path: &Path) -> Result<ChunkReader, BlobError> {
    Ok(ChunkReader { file: tokio::fs::File::open(path).await? })
}

/// The pieces of a file, in order.
pub struct ChunkReader {
    file: tokio::fs::File,
}

impl ChunkReader {
    /// The next chunk (full except the last), `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, BlobError> {
        let mut chunk = vec![0u8; CHUNK_BYTES];
        let mut filled = 0;
        while filled < CHUNK_BYTES {
            let n = self.file.read(&mut chunk[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(None);
        }
        chunk.truncate(filled);
        Ok(Some(chunk))
    }
}
