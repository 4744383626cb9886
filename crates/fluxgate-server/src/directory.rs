//! The in-memory directory: who exists, their role and state, which sessions are live, and the
//! settings in force. Requests are authenticated against it without touching the database.
//!
//! It is kept current by tailing the store's change log: after every local write (before the
//! RPC answers, so a client reads its own writes) and every `directory_poll_ms` in the
//! background (so other replicas' writes arrive within that bound).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fluxgate_authz::Subject;
use fluxgate_domain::{Role, SessionId, UserId};
use fluxgate_store::changes::{self, Change, EntityKind};
use fluxgate_store::{DbConnection, StoreError, now_micros, sessions, settings, users};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// What the directory keeps of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    pub username: String,
    pub role: Role,
    pub active: bool,
    pub must_change_password: bool,
}

impl From<&users::User> for UserFacts {
    fn from(u: &users::User) -> Self {
        Self {
            username: u.username.clone(),
            role: u.role,
            active: u.active,
            must_change_password: u.must_change_password,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SessionFacts {
    user_id: UserId,
    expires_at: i64,
}

#[derive(Debug)]
struct Inner {
    revision: i64,
    users: HashMap<UserId, UserFacts>,
    sessions: HashMap<SessionId, SessionFacts>,
    settings: Arc<settings::Stored>,
}

/// An authenticated caller as the directory sees it now.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub facts: UserFacts,
}

impl Principal {
    pub fn subject(&self) -> Subject {
        Subject {
            user_id: self.user_id,
            role: self.facts.role,
            active: self.facts.active,
            must_change_password: self.facts.must_change_password,
        }
    }
}

#[derive(Debug)]
pub struct Directory {
    db: Db,
    inner: RwLock<Inner>,
    sync_lock: Mutex<()>,
}

/// What a sync read from the database, to apply under the lock.
enum Update {
    Full(Box<Inner>),
    Delta {
        revision: i64,
        users: Vec<(UserId, Option<UserFacts>, Vec<sessions::Session>)>,
        sessions: Vec<(SessionId, Option<sessions::Session>)>,
        settings: Option<settings::Stored>,
    },
}

fn load_all(conn: &mut DbConnection) -> Result<Inner, StoreError> {
    let revision = changes::current(conn)?;
    let now = now_micros();
    let users = users::all(conn)?
        .iter()
        .map(|u| (u.id, UserFacts::from(u)))
        .collect();
    let sessions = sessions::live(conn, None, now)?
        .into_iter()
        .map(|s| {
            (
                s.id,
                SessionFacts {
                    user_id: s.user_id,
                    expires_at: s.expires_at,
                },
            )
        })
        .collect();
    let settings = settings::load(conn)?.ok_or_else(|| {
        StoreError::Corrupt("no settings row: was the server bootstrapped?".into())
    })?;
    Ok(Inner {
        revision,
        users,
        sessions,
        settings: Arc::new(settings),
    })
}

fn read_delta(conn: &mut DbConnection, from: i64) -> Result<Update, StoreError> {
    let batch: Vec<Change> = changes::since(conn, from, 10_000)?;
    let Some(last) = batch.last() else {
        return Ok(Update::Delta {
            revision: from,
            users: vec![],
            sessions: vec![],
            settings: None,
        });
    };
    // A gap (entries pruned before this server saw them) or a huge backlog: reload it all.
    if batch[0].revision != from + 1 || batch.len() >= 10_000 {
        return Ok(Update::Full(Box::new(load_all(conn)?)));
    }
    let revision = last.revision;
    let now = now_micros();
    let mut user_ids: Vec<UserId> = Vec::new();
    let mut session_ids: Vec<SessionId> = Vec::new();
    let mut reload_settings = false;
    for c in &batch {
        match c.kind {
            EntityKind::User => {
                if let Ok(id) = c.id.parse()
                    && !user_ids.contains(&id)
                {
                    user_ids.push(id);
                }
            }
            EntityKind::Session => {
                if let Ok(id) = c.id.parse()
                    && !session_ids.contains(&id)
                {
                    session_ids.push(id);
                }
            }
            EntityKind::Settings => reload_settings = true,
        }
    }
    let mut users_out = Vec::with_capacity(user_ids.len());
    for id in user_ids {
        let user = users::find(conn, id)?;
        let live = sessions::live(conn, Some(id), now)?;
        users_out.push((id, user.as_ref().map(UserFacts::from), live));
    }
    let mut sessions_out = Vec::with_capacity(session_ids.len());
    for id in session_ids {
        let s = sessions::find(conn, id)?.filter(|s| s.is_live(now));
        sessions_out.push((id, s));
    }
    let settings = if reload_settings {
        settings::load(conn)?
    } else {
        None
    };
    Ok(Update::Delta {
        revision,
        users: users_out,
        sessions: sessions_out,
        settings,
    })
}

impl Directory {
    /// Loads the whole directory.
    pub async fn load(db: Db) -> ApiResult<Arc<Directory>> {
        let inner = db.read(|conn| Ok(load_all(conn)?)).await?;
        Ok(Arc::new(Directory {
            db,
            inner: RwLock::new(inner),
            sync_lock: Mutex::new(()),
        }))
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The change-log revision the directory reflects.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<settings::Stored> {
        self.read().settings.clone()
    }

    /// The caller of a verified access token, if its session is live and its user exists.
    pub fn principal(&self, user_id: UserId, session_id: SessionId) -> Option<Principal> {
        let inner = self.read();
        let s = inner.sessions.get(&session_id)?;
        if s.user_id != user_id || s.expires_at <= now_micros() {
            return None;
        }
        let facts = inner.users.get(&user_id)?.clone();
        Some(Principal {
            user_id,
            session_id,
            facts,
        })
    }

    pub fn user(&self, id: UserId) -> Option<UserFacts> {
        self.read().users.get(&id).cloned()
    }

    /// Brings the directory up to the newest revision in the database.
    pub async fn sync(&self) -> ApiResult<i64> {
        let _guard = self.sync_lock.lock().await;
        let from = self.revision();
        let update = self
            .db
            .read(move |conn| Ok(read_delta(conn, from)?))
            .await?;
        let mut inner = self.write();
        match update {
            Update::Full(new) => *inner = *new,
            Update::Delta {
                revision,
                users,
                sessions,
                settings,
            } => {
                for (id, facts, live) in users {
                    inner.sessions.retain(|_, s| s.user_id != id);
                    match facts {
                        Some(f) => {
                            inner.users.insert(id, f);
                            for s in live {
                                inner.sessions.insert(
                                    s.id,
                                    SessionFacts {
                                        user_id: s.user_id,
                                        expires_at: s.expires_at,
                                    },
                                );
                            }
                        }
                        None => {
                            inner.users.remove(&id);
                        }
                    }
                }
                for (id, s) in sessions {
                    match s {
                        Some(s) => {
                            inner.sessions.insert(
                                id,
                                SessionFacts {
                                    user_id: s.user_id,
                                    expires_at: s.expires_at,
                                },
                            );
                        }
                        None => {
                            inner.sessions.remove(&id);
                        }
                    }
                }
                if let Some(s) = settings {
                    inner.settings = Arc::new(s);
                }
                inner.revision = revision;
            }
        }
        Ok(inner.revision)
    }

    /// Makes sure the directory reflects at least `revision` (a client's read-your-writes
    /// request after writing through another replica).
    pub async fn ensure(&self, revision: i64) -> ApiResult<()> {
        if self.revision() >= revision {
            return Ok(());
        }
        let now = self.sync().await?;
        if now < revision {
            return Err(ApiError::invalid(
                "x-fluxgate-min-revision",
                format!("revision {revision} does not exist yet (newest is {now})"),
            ));
        }
        Ok(())
    }

    /// Drops sessions that have expired (they are refused anyway; this bounds memory).
    pub fn evict_expired(&self) {
        let now = now_micros();
        self.write().sessions.retain(|_, s| s.expires_at > now);
    }
}
