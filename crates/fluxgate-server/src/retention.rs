//! Audit retention: events older than `audit.retention_days` are written to an archive file,
//! then pruned, leaving a checkpoint the chain verifies from (see [`fluxgate_core::trail::Prune`]).
//! Also forgets successful webhook deliveries past `webhooks.delivered_log_days`.
//!
//! The archive is written (to a temporary name, flushed, renamed) before the pruning commits;
//! if another replica pruned first, this one's file is removed again. Archive files hold the
//! events as JSON lines, as ExportAuditEvents has them, named `audit-{first}-{last}.jsonl`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::trail::{self, Prune};
use fluxgate_core::webhooks;
use fluxgate_store::audit;
use sha2::{Digest, Sha256};

use crate::audit_json::json_line;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const DAY_MICROS: i64 = 86_400_000_000;

/// Runs the job once now, then every `every`, until the server stops.
pub async fn run(
    state: Arc<AppState>,
    every: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = once(&state).await {
            tracing::warn!(error = %e, "audit retention pass failed");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
    }
}

/// One pass: archive and prune what is past retention; forget old successful deliveries.
/// Answers the events pruned.
pub async fn once(state: &Arc<AppState>) -> ApiResult<i64> {
    let now = fluxgate_store::now_micros();
    let log_days = i64::from(state.config.webhooks.delivered_log_days);
    state
        .db
        .write_quietly(move |tx| Ok(webhooks::forget_delivered(tx, now - log_days * DAY_MICROS)?))
        .await?;
    let (days, Some(dir)) = (
        state.config.audit.retention_days,
        state.config.audit.archive_dir.clone(),
    ) else {
        return Ok(0);
    };
    if days == 0 {
        return Ok(0);
    }
    let before = now - i64::from(days) * DAY_MICROS;
    let Some((first, cut)) = state
        .db
        .read(move |c| Ok(trail::prunable(c, before)?))
        .await?
    else {
        return Ok(0);
    };
    let (last, hash) = (cut.seq, cut.hash.clone());
    let db = state.db.clone();
    let (path, sha) = tokio::task::spawn_blocking(move || {
        db.store()
            .read(|c| archive(c, &dir, first, last))
            .map_err(|e: ApiError| e)
    })
    .await??;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmd = Prune {
        cut_seq: last,
        cut_hash: hash,
        archive: name,
        archive_sha256: sha,
        retention_days: days,
    };
    let pruned = state
        .execute_from(fluxgate_core::Origin::default(), None, cmd)
        .await?
        .value;
    if pruned == 0 {
        let _ = std::fs::remove_file(&path);
    } else {
        tracing::info!(first, last, pruned, archive = %path.display(), "audit trail pruned");
    }
    Ok(pruned)
}

/// Writes events `first..=last` to `dir/audit-{first}-{last}.jsonl`; answers its path and hex
/// SHA-256.
fn archive(
    conn: &mut fluxgate_store::DbConnection,
    dir: &Path,
    first: i64,
    last: i64,
) -> ApiResult<(PathBuf, String)> {
    let io = |e: std::io::Error| ApiError::Internal(format!("writing the audit archive: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(format!("audit-{first:012}-{last:012}.jsonl"));
    let tmp = dir.join(format!(".audit-{first:012}-{last:012}.jsonl.partial"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    let mut sha = Sha256::new();
    let mut after = first - 1;
    let mut line = Vec::with_capacity(1 << 16);
    while after < last {
        let batch = audit::list(conn, after, 1000)?;
        if batch.is_empty() {
            break;
        }
        for e in batch.iter().filter(|e| e.seq <= last) {
            line.clear();
            json_line(e, &mut line);
            sha.update(&line);
            file.write_all(&line).map_err(io)?;
            after = e.seq;
        }
        if batch.last().is_some_and(|e| e.seq > last) {
            break;
        }
    }
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((path, hex))
}
