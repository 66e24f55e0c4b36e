//! ffprobe and ffmpeg as subprocesses (Debian's `ffmpeg` package, with libmp3lame): whether
//! they are there, what an input holds, and the conversion itself with its `-progress`
//! output. A conversion's process is killed when it is stopped (cancel, lease lost, shutdown)
//! or runs out of time, and, on Linux, when the converter process itself dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, Probe, ProgressLine, Unconvertible};

/// The command that installs what conversion needs, shown wherever it is missing.
pub const INSTALL_HINT: &str = "apt-get install -y --no-install-recommends ffmpeg";

/// ffmpeg's arguments between the input and the output: the first audio track, no video, as
/// a VBR mp3 (`bench/media.sh` runs ffmpeg alone with the same ones).
pub const MP3_ARGS: &[&str] = &["-vn", "-map", "0:a:0", "-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"];

/// How long ffprobe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The programs, by path or by name on `PATH`.
#[derive(Debug, Clone)]
pub struct Tools {
    /// ffmpeg (`MEDIA_FFMPEG`, default `ffmpeg`).
    pub ffmpeg: PathBuf,
    /// ffprobe (`MEDIA_FFPROBE`, default `ffprobe`).
    pub ffprobe: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Self { ffmpeg: "ffmpeg".into(), ffprobe: "ffprobe".into() }
    }
}

/// Why a conversion did not produce an mp3.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input can never be converted.
    #[error(transparent)]
    Unconvertible(#[from] Unconvertible),
    /// It was stopped from outside (the process was killed).
    #[error("the conversion was stopped")]
    Stopped,
    /// It ran longer than its time limit (the process was killed).
    #[error("the conversion took longer than its limit of {0} s")]
    TimedOut(u64),
    /// ffmpeg failed (its last words).
    #[error("ffmpeg failed: {0}")]
    Failed(String),
    /// The process could not be started or read.
    #[error("cannot run {program}: {reason}")]
    Spawn {
        /// Which program.
        program: String,
        /// What the system said.
        reason: String,
    },
}

/// A command that dies with the process that started it (Linux), reads nothing from stdin and
/// is killed if its handle is dropped.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches nothing but the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn spawn_error(program: &Path, err: std::io::Error) -> ConvertError {
    let reason = if err.kind() == std::io::ErrorKind::NotFound {
        format!("it is not installed ({INSTALL_HINT})")
    } else {
        err.to_string()
    };
    ConvertError::Spawn { program: program.display().to_string(), reason }
}

/// The last few lines of a process's error output, for a failure's reason.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" / ");
    if joined.is_empty() {
        "no error output".to_string()
    } else {
        joined.chars().take(500).collect()
    }
}

impl Tools {
    /// Whether both programs run and ffmpeg has the mp3 encoder: `Ok` with their version, or
    /// the reason conversion is unavailable (with the install command).
    pub async fn check(&self) -> Result<String, String> {
        let version = async |program: &Path| -> Result<String, String> {
            let out = command(program)
                .arg("-version")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .await
                .map_err(|e| spawn_error(program, e).to_string())?;
            if !out.status.success() {
                return Err(format!("{} -version failed ({INSTALL_HINT})", program.display()));
            }
            Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
        };
        let ffmpeg = version(&self.ffmpeg).await?;
        version(&self.ffprobe).await?;
        let encoders = command(&self.ffmpeg)
            .args(["-hide_banner", "-encoders"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error(&self.ffmpeg, e).to_string())?;
        if !String::from_utf8_lossy(&encoders.stdout).contains("libmp3lame") {
            return Err(format!("{} has no mp3 encoder (libmp3lame); install Debian's: {INSTALL_HINT}", ffmpeg));
        }
        Ok(ffmpeg)
    }

    /// What `input` holds: a video with sound (its duration), or why it cannot be converted.
    pub async fn probe(&self, input: &Path) -> Result<Probe, ConvertError> {
        let mut cmd = command(&self.ffprobe);
        cmd.args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
            .arg(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
            Ok(out) => out.map_err(|e| spawn_error(&self.ffprobe, e))?,
            Err(_) => return Err(ConvertError::TimedOut(PROBE_TIMEOUT.as_secs())),
        };
        if !out.status.success() {
            return Err(Unconvertible::NotMedia(tail(&out.stderr)).into());
        }
        Ok(domain::read_probe(&String::from_utf8_lossy(&out.stdout))?)
    }

    /// Converts `input`'s first audio track to an mp3 at `output`, calling `on_progress` with
    /// each position ffmpeg reports (microseconds); kills ffmpeg when `stop` trips or after `limit`.
    pub async fn convert<F, Fut>(
        &self,
        input: &Path,
        output: &Path,
        limit: Duration,
        stop: &CancellationToken,
        mut on_progress: F,
    ) -> Result<(), ConvertError>
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut cmd = command(&self.ffmpeg);
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-y", "-i"])
            .arg(input)
            .args(MP3_ARGS)
            .args(["-progress", "pipe:1"])
            .arg(output)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| spawn_error(&self.ffmpeg, e))?;
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ConvertError::Spawn { program: "ffmpeg".into(), reason: "no pipes".into() });
        };
        // Read beside the progress, so that a chatty ffmpeg never blocks on a full pipe.
        let errors = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            buf
        });
        let mut lines = BufReader::new(stdout).lines();
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let ended = loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let ProgressLine::At(us) = domain::read_progress_line(&line) {
                            on_progress(us).await;
                        }
                    }
                    // Its output closed: it is finishing.
                    Ok(None) | Err(_) => break None,
                },
                _ = stop.cancelled() => break Some(ConvertError::Stopped),
                _ = &mut deadline => break Some(ConvertError::TimedOut(limit.as_secs())),
            }
        };
        if let Some(err) = ended {
            let _ = child.kill().await;
            errors.abort();
            return Err(err);
        }
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| spawn_error(&self.ffmpeg, e))?,
            _ = stop.cancelled() => {
                let _ = child.kill().await;
                return Err(ConvertError::Stopped);
            }
        };
        let stderr = errors.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(ConvertError::Failed(format!("{status}: {}", tail(&stderr))))
        }
    }
}
