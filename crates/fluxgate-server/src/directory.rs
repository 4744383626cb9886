//! The in-memory directory: principals (users and service accounts) with their role and state,
//! the catalog, groups and grants compiled into the engine's [`Snapshot`], live sessions, API
//! keys, and the settings in force. Requests are authenticated and authorised against it
//! without touching the database.
//!
//! It is kept current by tailing the store's change log: after every local write (before the
//! RPC answers, so a client reads its own writes) and every `directory_poll_ms` in the
//! background (so other replicas' writes arrive within that bound).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fluxgate_authz::{
    ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, Snapshot,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, KeyId, PortfolioId, PrincipalId,
    ServiceAccountId, SessionId, UserId, ValuePermissions,
};
use fluxgate_store::changes::{self, Change, EntityKind};
use fluxgate_store::{
    DbConnection, StoreError, catalog, groups, now_micros, service_accounts, sessions, settings,
    sign_in, users,
};
use tokio::sync::Mutex;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// An authenticated caller as the directory sees it now.
pub use fluxgate_core::Actor as Principal;

#[derive(Debug, Clone, Copy)]
struct SessionFacts {
    user_id: UserId,
    expires_at: i64,
}

#[derive(Debug, Clone)]
struct KeyFacts {
    account: ServiceAccountId,
    hash: String,
    expires_at: Option<i64>,
    revoked: bool,
}

#[derive(Debug)]
struct Inner {
    revision: i64,
    /// The change-log entry at `revision`: a log whose entry there differs is another log.
    last: Option<Change>,
    facts: Facts,
    names: HashMap<PrincipalId, String>,
    usernames: HashMap<String, UserId>,
    snapshot: Arc<Snapshot>,
    sessions: HashMap<SessionId, SessionFacts>,
    keys: HashMap<KeyId, KeyFacts>,
    settings: Arc<settings::Stored>,
}

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {v:?}"))
}

fn parse<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, StoreError> {
    v.parse().map_err(|_| corrupt(what, v))
}

fn user_facts(u: &users::User, overdue: bool) -> PrincipalFacts {
    PrincipalFacts {
        role: u.role,
        active: u.active,
        must_change_password: u.must_change_password,
        second_factor_overdue: overdue,
        portfolio: None,
        audit_writer: false,
        provisioner: false,
        acts_for: BTreeSet::new(),
    }
}

/// A service account's facts; `keys` are its keys, whose creators it acts for while they are live.
fn sa_facts(
    sa: &service_accounts::ServiceAccount,
    keys: &[&service_accounts::Key],
    now: i64,
) -> Result<PrincipalFacts, StoreError> {
    let live = keys
        .iter()
        .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now));
    let acts_for = sa
        .created_by
        .iter()
        .chain(live.filter_map(|k| k.created_by.as_ref()))
        .map(|c| parse::<PrincipalId>("service_accounts.created_by", c))
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(PrincipalFacts {
        role: sa.role,
        active: sa.active,
        must_change_password: false,
        second_factor_overdue: false,
        portfolio: sa
            .portfolio_id
            .as_deref()
            .map(|p| parse("service_accounts.portfolio_id", p))
            .transpose()?,
        audit_writer: sa.audit_writer,
        provisioner: sa.provisioner,
        acts_for,
    })
}

fn key_facts(k: &service_accounts::Key) -> Result<(KeyId, KeyFacts), StoreError> {
    Ok((
        parse("service_account_keys.id", &k.id)?,
        KeyFacts {
            account: parse(
                "service_account_keys.service_account_id",
                &k.service_account_id,
            )?,
            hash: k.secret_hash.clone(),
            expires_at: k.expires_at,
            revoked: k.revoked_at.is_some(),
        },
    ))
}

fn member_id(kind: &str, id: &str) -> Result<PrincipalId, StoreError> {
    PrincipalId::from_parts(kind, id).map_err(|_| corrupt("group_members", id))
}

fn group_facts(conn: &mut DbConnection, g: &groups::Group) -> Result<GroupFacts, StoreError> {
    let grants = groups::grants(conn, &g.id)?;
    let members = groups::members(conn, &g.id, None, i64::MAX)?;
    Ok(GroupFacts {
        portfolio: parse("portfolio_groups.portfolio_id", &g.portfolio_id)?,
        administrators: g.administrators,
        application_grants: grants
            .applications
            .iter()
            .map(|(a, p)| {
                Ok((
                    parse::<ApplicationId>("application_grants", a)?,
                    parse::<FeaturePermission>("application_grants", p)?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?,
        environment_grants: grants
            .environments
            .iter()
            .map(|(e, bits)| {
                Ok((
                    parse::<EnvironmentId>("environment_grants", e)?,
                    ValuePermissions::from_bits(*bits as u8),
                ))
            })
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?,
        members: members
            .iter()
            .map(|(k, id)| member_id(k, id))
            .collect::<Result<BTreeSet<_>, _>>()?,
    })
}

/// The users among `rows` whose second factor is overdue (a row is kept by its user's id
/// as text; one that does not parse names no one).
fn overdue_users(rows: Vec<sign_in::SignIn>) -> std::collections::HashSet<UserId> {
    rows.into_iter()
        .filter(|s| s.second_factor_overdue)
        .filter_map(|s| uuid::Uuid::try_parse(&s.user_id).ok().map(UserId))
        .collect()
}

fn load_all(conn: &mut DbConnection) -> Result<Inner, StoreError> {
    let revision = changes::current(conn)?;
    let last = changes::at(conn, revision)?;
    let now = now_micros();
    let mut facts = Facts::default();
    let mut names = HashMap::new();
    let mut usernames = HashMap::new();
    let overdue = overdue_users(sign_in::all(conn)?);
    for u in users::all(conn)? {
        let id = PrincipalId::User(u.id);
        let late = overdue.contains(&u.id);
        facts.principals.insert(id, user_facts(&u, late));
        names.insert(id, u.username.clone());
        usernames.insert(u.username.clone(), u.id);
    }
    let all_keys = service_accounts::all_keys(conn)?;
    let mut keys_of: HashMap<&str, Vec<&service_accounts::Key>> = HashMap::new();
    for k in &all_keys {
        keys_of.entry(&k.service_account_id).or_default().push(k);
    }
    for sa in service_accounts::all(conn)? {
        let id = PrincipalId::ServiceAccount(parse("service_accounts.id", &sa.id)?);
        let keys = keys_of.get(sa.id.as_str()).map_or(&[][..], Vec::as_slice);
        facts.principals.insert(id, sa_facts(&sa, keys, now)?);
        names.insert(id, sa.display_name.clone());
    }
    for p in catalog::portfolio_ids(conn)? {
        facts.portfolios.insert(parse("portfolios.id", &p)?);
    }
    for (a, p) in catalog::application_parents(conn, None)? {
        facts.applications.insert(
            parse("applications.id", &a)?,
            ApplicationFacts {
                portfolio: parse("applications.portfolio_id", &p)?,
            },
        );
    }
    for (e, a) in catalog::environment_parents(conn, None)? {
        facts.environments.insert(
            parse("environments.id", &e)?,
            EnvironmentFacts {
                application: parse("environments.application_id", &a)?,
            },
        );
    }
    for g in groups::all(conn)? {
        facts.groups.insert(
            parse("portfolio_groups.id", &g.id)?,
            GroupFacts {
                portfolio: parse("portfolio_groups.portfolio_id", &g.portfolio_id)?,
                administrators: g.administrators,
                application_grants: BTreeMap::new(),
                environment_grants: BTreeMap::new(),
                members: BTreeSet::new(),
            },
        );
    }
    for (g, a, p) in groups::all_application_grants(conn)? {
        if let Some(gf) = facts
            .groups
            .get_mut(&parse::<GroupId>("application_grants", &g)?)
        {
            gf.application_grants.insert(
                parse("application_grants", &a)?,
                parse("application_grants", &p)?,
            );
        }
    }
    for (g, e, bits) in groups::all_environment_grants(conn)? {
        if let Some(gf) = facts
            .groups
            .get_mut(&parse::<GroupId>("environment_grants", &g)?)
        {
            gf.environment_grants.insert(
                parse("environment_grants", &e)?,
                ValuePermissions::from_bits(bits as u8),
            );
        }
    }
    for (g, kind, id) in groups::all_members(conn)? {
        if let Some(gf) = facts
            .groups
            .get_mut(&parse::<GroupId>("group_members", &g)?)
        {
            gf.members.insert(member_id(&kind, &id)?);
        }
    }
    let keys = all_keys
        .iter()
        .map(key_facts)
        .collect::<Result<HashMap<_, _>, _>>()?;
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
    let snapshot = Arc::new(Snapshot::compile(&facts, revision));
    Ok(Inner {
        revision,
        last,
        facts,
        names,
        usernames,
        snapshot,
        sessions,
        keys,
        settings: Arc::new(settings),
    })
}

/// The state of one changed entity, read from the database.
enum Loaded {
    /// A user, whether their second factor is overdue, and their live sessions.
    User(UserId, Option<(users::User, bool)>, Vec<sessions::Session>),
    Session(SessionId, Option<sessions::Session>),
    Settings(Option<settings::Stored>),
    Portfolio(PortfolioId, bool),
    Application(ApplicationId, Option<PortfolioId>),
    Environment(EnvironmentId, Option<ApplicationId>),
    Group(GroupId, Option<GroupFacts>),
    ServiceAccount(
        ServiceAccountId,
        Option<(PrincipalFacts, String)>,
        Vec<(KeyId, KeyFacts)>,
    ),
    /// Not cached: only announced to the clients watching it.
    ChangeRequest(String),
}

enum Update {
    Full(Box<Inner>),
    Delta(Option<Change>, Vec<Loaded>),
}

fn load_entity(
    conn: &mut DbConnection,
    c: &Change,
    now: i64,
) -> Result<Option<Loaded>, StoreError> {
    if c.kind == EntityKind::Unknown {
        return Ok(None);
    }
    let Ok(uuid) = uuid::Uuid::try_parse(&c.id) else {
        return Ok(match c.kind {
            EntityKind::Settings => Some(Loaded::Settings(settings::load(conn)?)),
            _ => None,
        });
    };
    Ok(Some(match c.kind {
        // A batch's users are read together, by `UserBatch`.
        EntityKind::User => return Ok(None),
        EntityKind::Session => {
            let id = SessionId(uuid);
            Loaded::Session(id, sessions::find(conn, id)?.filter(|s| s.is_live(now)))
        }
        EntityKind::Settings => Loaded::Settings(settings::load(conn)?),
        EntityKind::Portfolio => Loaded::Portfolio(
            PortfolioId(uuid),
            catalog::find(conn, catalog::Kind::Portfolio, &c.id)?.is_some(),
        ),
        EntityKind::Application => Loaded::Application(
            ApplicationId(uuid),
            catalog::find(conn, catalog::Kind::Application, &c.id)?
                .and_then(|i| i.parent_id)
                .map(|p| parse("applications.portfolio_id", &p))
                .transpose()?,
        ),
        EntityKind::Environment => Loaded::Environment(
            EnvironmentId(uuid),
            catalog::find(conn, catalog::Kind::Environment, &c.id)?
                .and_then(|i| i.parent_id)
                .map(|p| parse("environments.application_id", &p))
                .transpose()?,
        ),
        EntityKind::Group => {
            let g = groups::find(conn, &c.id)?;
            Loaded::Group(GroupId(uuid), g.map(|g| group_facts(conn, &g)).transpose()?)
        }
        EntityKind::ServiceAccount => {
            let sa = service_accounts::find(conn, &c.id)?;
            let rows = service_accounts::keys(conn, &c.id)?;
            let keys = rows.iter().map(key_facts).collect::<Result<Vec<_>, _>>()?;
            let live: Vec<_> = rows.iter().collect();
            let facts = sa
                .map(|sa| {
                    Ok::<_, StoreError>((sa_facts(&sa, &live, now)?, sa.display_name.clone()))
                })
                .transpose()?;
            Loaded::ServiceAccount(ServiceAccountId(uuid), facts, keys)
        }
        EntityKind::ChangeRequest => Loaded::ChangeRequest(c.id.clone()),
        EntityKind::Unknown => return Ok(None),
    }))
}

/// The changes after `seen` (the entry at the server's revision `from`), read with that entry
/// itself: when the log no longer has it as it was (a database restored from a backup, a
/// standby promoted without the last changes), this is another log, and all is reloaded.
fn read_delta(
    conn: &mut DbConnection,
    from: i64,
    seen: Option<Change>,
) -> Result<Update, StoreError> {
    let mut batch: Vec<Change> = changes::since(conn, (from - 1).max(0), 10_001)?;
    if from > 0 {
        match batch.first() {
            Some(first) if seen.as_ref() == Some(first) => {
                batch.remove(0);
            }
            _ => return Ok(Update::Full(Box::new(load_all(conn)?))),
        }
    }
    let Some(last) = batch.last().cloned() else {
        return Ok(Update::Delta(seen, Vec::new()));
    };
    // A gap (entries pruned before this server saw them) or a huge backlog: reload it all.
    if batch[0].revision != from + 1 || batch.len() >= 10_000 {
        return Ok(Update::Full(Box::new(load_all(conn)?)));
    }
    let now = now_micros();
    let mut users = UserBatch::read(conn, &batch, now)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for c in &batch {
        if !seen.insert((c.kind, c.id.clone())) {
            continue;
        }
        let loaded = match users.take(c) {
            Some(l) => Some(l),
            None => load_entity(conn, c, now)?,
        };
        out.extend(loaded);
    }
    Ok(Update::Delta(Some(last), out))
}

/// The users a batch of changes names, read with three statements for the lot (a bulk
/// creation changes a thousand at once; one by one, that was three round trips each).
#[derive(Default)]
struct UserBatch {
    users: HashMap<UserId, users::User>,
    overdue: std::collections::HashSet<UserId>,
    sessions: HashMap<UserId, Vec<sessions::Session>>,
}

impl UserBatch {
    fn read(conn: &mut DbConnection, batch: &[Change], now: i64) -> Result<Self, StoreError> {
        let mut ids: Vec<UserId> = batch
            .iter()
            .filter(|c| c.kind == EntityKind::User)
            .filter_map(|c| uuid::Uuid::try_parse(&c.id).ok().map(UserId))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Self::default());
        }
        let mut sessions: HashMap<UserId, Vec<sessions::Session>> = HashMap::new();
        for s in sessions::live_of(conn, &ids, now)? {
            sessions.entry(s.user_id).or_default().push(s);
        }
        Ok(Self {
            users: users::find_many(conn, &ids)?
                .into_iter()
                .map(|u| (u.id, u))
                .collect(),
            overdue: overdue_users(sign_in::get_many(conn, &ids)?),
            sessions,
        })
    }

    /// The user change `c` names; `None` for other changes (and for a user id that does not
    /// parse, which names no one).
    fn take(&mut self, c: &Change) -> Option<Loaded> {
        if c.kind != EntityKind::User {
            return None;
        }
        let id = UserId(uuid::Uuid::try_parse(&c.id).ok()?);
        let user = self.users.remove(&id).map(|u| {
            let overdue = self.overdue.contains(&id);
            (u, overdue)
        });
        Some(Loaded::User(
            id,
            user,
            self.sessions.remove(&id).unwrap_or_default(),
        ))
    }
}

/// Removes a principal from every group's members; the groups it left are `touched`.
fn remove_member_everywhere(facts: &mut Facts, p: PrincipalId, touched: &mut Touched) {
    for (id, g) in facts.groups.iter_mut() {
        if g.members.remove(&p) {
            touched.groups.push(*id);
        }
    }
}

/// What applying changes touched among the engine's facts.
#[derive(Debug, Default)]
struct Touched {
    /// Portfolios, applications or environments: the snapshot is compiled afresh.
    catalog: bool,
    principals: Vec<PrincipalId>,
    groups: Vec<GroupId>,
}

impl Touched {
    fn any(&self) -> bool {
        self.catalog || !self.principals.is_empty() || !self.groups.is_empty()
    }
}

impl Inner {
    /// Applies loaded entities; what they touched among the engine's facts.
    fn apply(&mut self, loaded: Vec<Loaded>) -> Touched {
        let mut touched = Touched::default();
        for l in loaded {
            match l {
                Loaded::User(id, user, live) => {
                    let pid = PrincipalId::User(id);
                    touched.principals.push(pid);
                    self.sessions.retain(|_, s| s.user_id != id);
                    match user {
                        Some((u, overdue)) => {
                            self.facts.principals.insert(pid, user_facts(&u, overdue));
                            self.names.insert(pid, u.username.clone());
                            self.usernames.insert(u.username.clone(), u.id);
                            for s in live {
                                self.sessions.insert(
                                    s.id,
                                    SessionFacts {
                                        user_id: s.user_id,
                                        expires_at: s.expires_at,
                                    },
                                );
                            }
                        }
                        None => {
                            self.facts.principals.remove(&pid);
                            if let Some(name) = self.names.remove(&pid) {
                                self.usernames.remove(&name);
                            }
                            remove_member_everywhere(&mut self.facts, pid, &mut touched);
                        }
                    }
                }
                Loaded::Session(id, s) => match s {
                    Some(s) => {
                        self.sessions.insert(
                            id,
                            SessionFacts {
                                user_id: s.user_id,
                                expires_at: s.expires_at,
                            },
                        );
                    }
                    None => {
                        self.sessions.remove(&id);
                    }
                },
                Loaded::Settings(s) => {
                    if let Some(s) = s {
                        self.settings = Arc::new(s);
                    }
                }
                Loaded::Portfolio(id, exists) => {
                    touched.catalog = true;
                    if exists {
                        self.facts.portfolios.insert(id);
                    } else {
                        self.facts.portfolios.remove(&id);
                    }
                }
                Loaded::Application(id, parent) => {
                    touched.catalog = true;
                    match parent {
                        Some(portfolio) => {
                            self.facts
                                .applications
                                .insert(id, ApplicationFacts { portfolio });
                        }
                        None => {
                            self.facts.applications.remove(&id);
                        }
                    }
                }
                Loaded::Environment(id, parent) => {
                    touched.catalog = true;
                    match parent {
                        Some(application) => {
                            self.facts
                                .environments
                                .insert(id, EnvironmentFacts { application });
                        }
                        None => {
                            self.facts.environments.remove(&id);
                        }
                    }
                }
                Loaded::Group(id, g) => {
                    touched.groups.push(id);
                    match g {
                        Some(g) => {
                            self.facts.groups.insert(id, g);
                        }
                        None => {
                            self.facts.groups.remove(&id);
                        }
                    }
                }
                Loaded::ChangeRequest(_) => {}
                Loaded::ServiceAccount(id, sa, keys) => {
                    let pid = PrincipalId::ServiceAccount(id);
                    touched.principals.push(pid);
                    self.keys.retain(|_, k| k.account != id);
                    match sa {
                        Some((facts, name)) => {
                            self.facts.principals.insert(pid, facts);
                            self.names.insert(pid, name);
                            self.keys.extend(keys);
                        }
                        None => {
                            self.facts.principals.remove(&pid);
                            self.names.remove(&pid);
                            remove_member_everywhere(&mut self.facts, pid, &mut touched);
                        }
                    }
                }
            }
        }
        touched
    }

    fn principal(&self, id: PrincipalId) -> Option<Principal> {
        let f = self.facts.principals.get(&id)?;
        Some(Principal {
            id,
            session_id: None,
            key_id: None,
            name: self.names.get(&id).cloned().unwrap_or_default(),
            role: f.role,
            active: f.active,
            must_change_password: f.must_change_password,
        })
    }
}

#[derive(Debug)]
pub struct Directory {
    db: Db,
    inner: RwLock<Inner>,
    /// Held while syncing; holds when the newest sync started.
    sync_lock: Mutex<std::time::Instant>,
    /// Ids of change requests that changed (`*`: possibly any), for their watchers.
    requests: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Syncs still to fail on purpose (fault injection for tests; zero in service).
    failing_syncs: std::sync::atomic::AtomicUsize,
}

/// What [`Directory::watch_requests`] announces when it cannot say which requests changed.
pub const ANY_REQUEST: &str = "*";

impl Directory {
    /// Loads the whole directory.
    pub async fn load(db: Db) -> ApiResult<Arc<Directory>> {
        let inner = db.read(|conn| Ok(load_all(conn)?)).await?;
        Ok(Arc::new(Directory {
            db,
            inner: RwLock::new(inner),
            sync_lock: Mutex::new(std::time::Instant::now()),
            requests: tokio::sync::broadcast::channel(1024).0,
            failing_syncs: std::sync::atomic::AtomicUsize::new(0),
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

    /// The engine snapshot in force and the revision the directory is at, read together.
    pub fn snapshot_at(&self) -> (Arc<Snapshot>, i64) {
        let inner = self.read();
        (inner.snapshot.clone(), inner.revision)
    }

    /// The engine snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.read().snapshot.clone()
    }

    /// The caller behind a verified access token, if its session is live and its user exists.
    pub fn session_principal(&self, user_id: UserId, session_id: SessionId) -> Option<Principal> {
        let inner = self.read();
        let s = inner.sessions.get(&session_id)?;
        if s.user_id != user_id || s.expires_at <= now_micros() {
            return None;
        }
        let mut p = inner.principal(PrincipalId::User(user_id))?;
        p.session_id = Some(session_id);
        Some(p)
    }

    /// The service account behind an API key, if the key is live and its secret hashes to
    /// `secret_hash` (compared in constant time).
    pub fn key_principal(&self, key_id: KeyId, secret_hash: &str) -> Option<Principal> {
        use subtle::ConstantTimeEq;
        let inner = self.read();
        let k = inner.keys.get(&key_id)?;
        let matches: bool = k.hash.as_bytes().ct_eq(secret_hash.as_bytes()).into();
        if !matches || k.revoked || k.expires_at.is_some_and(|e| e <= now_micros()) {
            return None;
        }
        let mut p = inner.principal(PrincipalId::ServiceAccount(k.account))?;
        p.key_id = Some(key_id);
        Some(p)
    }

    /// Whether the directory knows an API key of this id (valid or not).
    pub fn knows_key(&self, key_id: KeyId) -> bool {
        self.read().keys.contains_key(&key_id)
    }

    /// The id of a user by username.
    pub fn user_by_name(&self, username: &str) -> Option<UserId> {
        self.read().usernames.get(username).copied()
    }

    /// A principal as the directory knows it now.
    pub fn principal(&self, id: PrincipalId) -> Option<Principal> {
        self.read().principal(id)
    }

    /// After a committed write: brings the directory up to date so the caller reads its own
    /// write. The one policy for a sync that fails then: the write is durable, so the call
    /// still succeeds (answering an error would make the client retry a write that happened);
    /// the failure is logged, and the poll loop catches up within `directory_poll_ms`.
    pub async fn settle(&self) {
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %e, "directory sync after a committed write failed; the poll loop will catch up");
        }
    }

    /// Makes the next `n` syncs fail, as a database outage between a commit and its sync would
    /// (for the tests of [`Directory::settle`]).
    #[doc(hidden)]
    pub fn fail_next_syncs(&self, n: usize) {
        self.failing_syncs
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Brings the directory up to the newest revision in the database.
    pub async fn sync(&self) -> ApiResult<i64> {
        use std::sync::atomic::Ordering;
        if self
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ApiError::Unavailable(
                "the database is unavailable; retry later".into(),
            ));
        }
        let mut started = self.sync_lock.lock().await;
        *started = std::time::Instant::now();
        let (from, seen) = {
            let inner = self.read();
            (inner.revision, inner.last.clone())
        };
        let update = self
            .db
            .read(move |conn| Ok(read_delta(conn, from, seen)?))
            .await?;
        let mut inner = self.write();
        match update {
            Update::Full(new) => {
                *inner = *new;
                let _ = self.requests.send(ANY_REQUEST.into());
            }
            Update::Delta(last, mut loaded) => {
                let revision = last.as_ref().map_or(0, |c| c.revision);
                loaded.retain(|l| match l {
                    Loaded::ChangeRequest(id) => {
                        // No receivers is fine: nobody is watching.
                        let _ = self.requests.send(id.as_str().into());
                        false
                    }
                    _ => true,
                });
                let touched = inner.apply(loaded);
                inner.revision = revision;
                inner.last = last;
                // Changes that do not touch the engine's facts (sessions, settings) keep the
                // snapshot: it still reflects every authorisation fact up to `revision`.
                // Principals and groups update it at the cost of what changed; the catalog
                // (rarely changed) compiles it afresh.
                if touched.catalog {
                    inner.snapshot = Arc::new(Snapshot::compile(&inner.facts, revision));
                } else if touched.any() {
                    inner.snapshot = Arc::new(inner.snapshot.update(
                        &inner.facts,
                        &touched.principals,
                        &touched.groups,
                        revision,
                    ));
                }
            }
        }
        Ok(inner.revision)
    }

    /// Makes sure the directory reflects every write committed before `since`: syncs unless a
    /// sync started after it. A credential another replica issued a moment ago (a login, a new
    /// key) is not known here until the next poll; this is how a miss finds it at once.
    /// Concurrent misses share one sync, so they cost at most one sync at a time.
    pub async fn catch_up(&self, since: std::time::Instant) -> ApiResult<()> {
        if *self.sync_lock.lock().await > since {
            return Ok(());
        }
        self.sync().await.map(|_| ())
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
                "min_revision",
                format!("revision {revision} does not exist yet (newest is {now})"),
            ));
        }
        Ok(())
    }

    /// Announces the ids of change requests as the directory sees them change (locally or
    /// through another replica); [`ANY_REQUEST`] when it cannot tell which.
    pub fn watch_requests(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.requests.subscribe()
    }

    /// Drops sessions that have expired (they are refused anyway; this bounds memory).
    pub fn evict_expired(&self) {
        let now = now_micros();
        self.write().sessions.retain(|_, s| s.expires_at > now);
    }
}
