//! The session file: the server and tokens of the last `fluxctl login`, readable by its owner
//! only (file 0600, directory 0700).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fluxgate_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// Refresh the access token when it expires within this margin.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// What `fluxctl login` keeps between invocations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The server the session belongs to.
    pub server: String,
    /// Who logged in (for messages only).
    pub username: String,
    /// The session's identifier.
    pub session_id: String,
    /// Sent as `authorization: Bearer …`.
    pub access_token: String,
    /// Unix seconds at which the access token stops working.
    pub access_token_expire_time: i64,
    /// Single use; exchanged by RefreshSession.
    pub refresh_token: String,
    /// Unix seconds at which the refresh token stops working.
    pub refresh_token_expire_time: i64,
}

impl Session {
    /// A session from the tokens a Login, RefreshSession or ChangePassword returned.
    pub fn from_tokens(server: &str, username: &str, tokens: &pb::SessionTokens) -> Self {
        let secs = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, |t| t.seconds);
        Self {
            server: server.to_owned(),
            username: username.to_owned(),
            session_id: tokens.session_id.clone(),
            access_token: tokens.access_token.clone(),
            access_token_expire_time: secs(&tokens.access_token_expire_time),
            refresh_token: tokens.refresh_token.clone(),
            refresh_token_expire_time: secs(&tokens.refresh_token_expire_time),
        }
    }

    /// Whether the access token has expired or expires within [`REFRESH_MARGIN`].
    pub fn access_token_due(&self) -> bool {
        now_secs() + REFRESH_MARGIN.as_secs() as i64 >= self.access_token_expire_time
    }

    /// Whether the refresh token has expired.
    pub fn refresh_token_expired(&self) -> bool {
        now_secs() >= self.refresh_token_expire_time
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The default session file: `$XDG_CONFIG_HOME/fluxctl/session.json`, else
/// `~/.config/fluxctl/session.json`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("fluxctl").join("session.json"))
}

/// Reads the session file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Session>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::other(format!(
                "session file {} is unreadable ({e}); run `fluxctl login` again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::other(format!(
            "cannot read session file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the session file atomically, with mode 0600 in a directory of mode 0700.
pub fn save(path: &Path, session: &Session) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map_or("session".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = private_file(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(session)?)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CliError::other(format!("cannot write session file {}: {e}", path.display()))
    })
}

/// Deletes the session file; absent is fine.
pub fn delete(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::other(format!(
            "cannot delete session file {}: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        Session {
            server: "http://127.0.0.1:1".into(),
            username: "admin".into(),
            session_id: "s".into(),
            access_token: "a".into(),
            access_token_expire_time: now_secs() + 3600,
            refresh_token: "r".into(),
            refresh_token_expire_time: now_secs() + 7200,
        }
    }

    #[test]
    fn round_trips_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/session.json");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        delete(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        delete(&path).unwrap();
    }

    #[test]
    fn due_within_the_margin() {
        let mut s = sample();
        assert!(!s.access_token_due());
        s.access_token_expire_time = now_secs() + 30;
        assert!(s.access_token_due());
    }
}
