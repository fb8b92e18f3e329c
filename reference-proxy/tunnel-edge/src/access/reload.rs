//! Reloading the token file on SIGHUP and when it changes on disk.
//!
//! Why both: operators expect SIGHUP, tests and container setups rewrite a mounted file and
//! expect it to be picked up. Why polling the modification time (with the length) rather than
//! inotify: one `stat` per second on a tiny file costs nothing, works on every filesystem, and
//! needs no extra dependency. A file that fails to load leaves the previous token set in force,
//! so a half-written file never locks everyone out; the error is logged once per change.

use super::AccessControl;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often the token file's modification time is checked.
pub const TOKEN_FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file on disk (`None`: it cannot be stat'ed).
type FileStamp = Option<(SystemTime, u64)>;

/// Why a reload is attempted (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Hangup,
    Changed,
}

impl AccessControl {
    /// Loads `path` and puts it in force; on error the current set stays.
    pub fn reload_from(&self, path: &Path) -> Result<(), crate::TokenFileError> {
        let set = super::TokenSet::load(path)?;
        tracing::info!(
            path = %path.display(),
            policy = ?set.policy(),
            tokens = ?set.token_ids(),
            "service tokens loaded"
        );
        self.replace(set);
        Ok(())
    }

    /// Spawns a task that reloads `path` on SIGHUP and whenever its modification time (or
    /// length) changes, checked every [`TOKEN_FILE_POLL_INTERVAL`]. Abort the handle to stop.
    /// Must be called inside a Tokio runtime.
    /// The SIGHUP handler is installed before this returns, so a SIGHUP sent afterwards never
    /// hits the default action (terminating the process).
    pub fn watch_file(self: &Arc<Self>, path: PathBuf) -> JoinHandle<()> {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot watch SIGHUP; the token file is reloaded on change only"
                );
                None
            }
        };
        tokio::spawn(watch_loop(Arc::clone(self), path, hangup))
    }
}

async fn watch_loop(access: Arc<AccessControl>, path: PathBuf, mut hangup: Option<Signal>) {
    let mut last = stamp(&path);
    let mut poll = tokio::time::interval(TOKEN_FILE_POLL_INTERVAL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            _ = poll.tick() => Trigger::Changed,
            () = next_hangup(&mut hangup) => Trigger::Hangup,
        };
        let now = stamp(&path);
        if trigger == Trigger::Changed && now == last {
            continue;
        }
        last = now;
        if let Err(error) = access.reload_from(&path) {
            tracing::error!(
                ?trigger,
                %error,
                "token file not reloaded; the previous tokens stay in force"
            );
        }
    }
}

/// Waits for the next SIGHUP (forever when signals are unavailable).
async fn next_hangup(hangup: &mut Option<Signal>) {
    if let Some(stream) = hangup {
        if stream.recv().await.is_some() {
            return;
        }
        *hangup = None;
    }
    std::future::pending().await
}

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}
