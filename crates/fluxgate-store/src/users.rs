//! Users.

use diesel::prelude::*;
use fluxgate_domain::{Role, UserId};

use crate::schema::users;
use crate::{CHUNK, DbConnection, StoreError, StoreResult};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub active: bool,
    pub must_change_password: bool,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub version: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct Row {
    id: String,
    username: String,
    email: String,
    display_name: String,
    role: String,
    active: bool,
    must_change_password: bool,
    password_hash: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_login_at: Option<i64>,
    last_seen_at: Option<i64>,
    version: i64,
}

impl TryFrom<Row> for User {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<User> {
        Ok(User {
            id: r
                .id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("users.id {:?}", r.id)))?,
            role: r
                .role
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("users.role {:?}", r.role)))?,
            username: r.username,
            email: r.email,
            display_name: r.display_name,
            active: r.active,
            must_change_password: r.must_change_password,
            password_hash: r.password_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_login_at: r.last_login_at,
            last_seen_at: r.last_seen_at,
            version: r.version,
        })
    }
}

fn search_text(username: &str, email: &str, display_name: &str) -> String {
    format!("{username}\n{email}\n{}", display_name.to_lowercase())
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub must_change_password: bool,
    pub password_hash: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
struct InsertRow<'a> {
    id: String,
    username: &'a str,
    email: &'a str,
    display_name: &'a str,
    role: &'a str,
    active: bool,
    must_change_password: bool,
    password_hash: Option<&'a str>,
    search_text: String,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

pub fn insert(conn: &mut DbConnection, u: &NewUser<'_>, now: i64) -> StoreResult<()> {
    diesel::insert_into(users::table)
        .values(insert_row(u, now))
        .execute(conn)?;
    Ok(())
}

fn insert_row<'a>(u: &NewUser<'a>, now: i64) -> InsertRow<'a> {
    InsertRow {
        id: u.id.to_string(),
        username: u.username,
        email: u.email,
        display_name: u.display_name,
        role: u.role.as_str(),
        active: true,
        must_change_password: u.must_change_password,
        password_hash: u.password_hash,
        search_text: search_text(u.username, u.email, u.display_name),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// Of `names`, the usernames taken already.
pub fn taken_usernames(conn: &mut DbConnection, names: &[&str]) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for chunk in names.chunks(CHUNK) {
        out.extend(
            users::table
                .filter(users::username.eq_any(chunk))
                .select(users::username)
                .load::<String>(conn)?,
        );
    }
    Ok(out)
}

/// Of `emails`, the addresses taken already.
pub fn taken_emails(conn: &mut DbConnection, emails: &[&str]) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for chunk in emails.chunks(CHUNK) {
        out.extend(
            users::table
                .filter(users::email.eq_any(chunk))
                .select(users::email)
                .load::<String>(conn)?,
        );
    }
    Ok(out)
}

/// Inserts many users with multi-row statements; the users as stored.
pub fn insert_many(
    conn: &mut DbConnection,
    new: &[NewUser<'_>],
    now: i64,
) -> StoreResult<Vec<User>> {
    for chunk in new.chunks(CHUNK) {
        let rows: Vec<InsertRow<'_>> = chunk.iter().map(|u| insert_row(u, now)).collect();
        insert_rows!(conn, users::table, &rows);
    }
    Ok(new
        .iter()
        .map(|u| User {
            id: u.id,
            username: u.username.to_owned(),
            email: u.email.to_owned(),
            display_name: u.display_name.to_owned(),
            role: u.role,
            active: true,
            must_change_password: u.must_change_password,
            password_hash: u.password_hash.map(str::to_owned),
            created_at: now,
            updated_at: now,
            last_login_at: None,
            last_seen_at: None,
            version: 1,
        })
        .collect())
}

fn load_one(
    conn: &mut DbConnection,
    q: users::BoxedQuery<'_, crate::connection::MultiBackend>,
) -> StoreResult<Option<User>> {
    q.select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(User::try_from)
        .transpose()
}

pub fn find(conn: &mut DbConnection, id: UserId) -> StoreResult<Option<User>> {
    load_one(
        conn,
        users::table
            .filter(users::id.eq(id.to_string()))
            .into_boxed(),
    )
}

pub fn find_by_username(conn: &mut DbConnection, username: &str) -> StoreResult<Option<User>> {
    load_one(
        conn,
        users::table
            .filter(users::username.eq(username.to_lowercase()))
            .into_boxed(),
    )
}

pub fn find_by_email(conn: &mut DbConnection, email: &str) -> StoreResult<Option<User>> {
    load_one(
        conn,
        users::table
            .filter(users::email.eq(email.to_lowercase()))
            .into_boxed(),
    )
}

/// Finds the user a login name refers to: an email when it contains `@`, else a username.
pub fn find_by_login(conn: &mut DbConnection, login: &str) -> StoreResult<Option<User>> {
    if login.contains('@') {
        find_by_email(conn, login)
    } else {
        find_by_username(conn, login)
    }
}

/// The users of `ids` that exist, in no particular order: one statement per
/// [`CHUNK`](crate::CHUNK) ids (the directory reads a batch's users this way).
pub fn find_many(conn: &mut DbConnection, ids: &[UserId]) -> StoreResult<Vec<User>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(crate::CHUNK) {
        let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        for row in users::table
            .filter(users::id.eq_any(keys))
            .select(Row::as_select())
            .load::<Row>(conn)?
        {
            out.push(User::try_from(row)?);
        }
    }
    Ok(out)
}

/// Every user (for loading the in-memory directory).
pub fn all(conn: &mut DbConnection) -> StoreResult<Vec<User>> {
    users::table
        .select(Row::as_select())
        .load::<Row>(conn)?
        .into_iter()
        .map(User::try_from)
        .collect()
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub role: Option<Role>,
    pub active: Option<bool>,
    /// Lower-case substring of username, email or display name.
    pub query: Option<String>,
    /// Only users whose last sign-in is before this time (micros), or who never signed in.
    pub signed_in_before: Option<i64>,
    /// Only users who never (true) or who at some time (false) signed in.
    pub never_signed_in: Option<bool>,
    /// Order by last sign-in, least recent first (never first), then username; else by username.
    pub by_last_sign_in: bool,
}

/// Where a page of [`list`] resumes: after this username, or (ordered by last sign-in) after this
/// (last sign-in, -1 for never; username).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Username(String),
    SignIn(i64, String),
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// How far [`list`] scans in list order for a text query before it asks the trigram index: a
/// common term fills its page within this many rows; a rare one is looked up.
const SEARCH_WINDOW: i64 = 500;

/// The ordering key of [`list`] (last sign-in, -1 for never).
const SIGNED_IN: &str = "COALESCE(last_login_at, -1)";

/// How [`page`] narrows the text query.
enum Narrow<'a> {
    /// No text query.
    None,
    /// Scan: each row's search text is matched.
    Scan(&'a str),
    /// Scan only up to and including this row (in list order).
    ScanUpTo(&'a str, &'a After),
    /// Ask the trigram index for the candidates first (then match each).
    Index(&'a str),
}

/// One page of users ordered by username (or by last sign-in), starting after `after` (keyset
/// pagination).
///
/// A text query is a substring match. Its cost follows the matches, not the directory: the
/// first [`SEARCH_WINDOW`] rows in list order are scanned (a common term fills its page there),
/// and when they do not fill it, the candidates come from a trigram index (FTS5 on SQLite,
/// `pg_trgm` on PostgreSQL, where the extension could be created; without it, and for terms
/// under three characters, the rest is scanned).
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    after: Option<&After>,
    limit: i64,
) -> StoreResult<Vec<User>> {
    let Some(text) = filter.query.as_deref() else {
        return page(conn, filter, after, limit, Narrow::None);
    };
    let text = text.to_lowercase();
    let Some(end) = nth(conn, filter, after, SEARCH_WINDOW)? else {
        // The rest of the list is shorter than the window: one scan answers.
        return page(conn, filter, after, limit, Narrow::Scan(&text));
    };
    let found = page(conn, filter, after, limit, Narrow::ScanUpTo(&text, &end))?;
    if found.len() as i64 >= limit {
        return Ok(found);
    }
    if matches!(conn, DbConnection::Sqlite(_)) {
        return page(conn, filter, after, limit, Narrow::Index(&text));
    }
    // A prepared statement's generic plan (PostgreSQL's choice after five runs) does not know
    // the pattern is rare, and walks the username index to the end: this one is planned for
    // the value it has, each time.
    conn.transaction(|c| {
        diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan").execute(c)?;
        page(c, filter, after, limit, Narrow::Index(&text))
    })
}

/// The list's filters (all but the text query) and the keyset position after `after`.
fn filtered<'a>(
    filter: &Filter,
    after: Option<&After>,
) -> users::BoxedQuery<'a, crate::connection::MultiBackend> {
    use diesel::dsl::sql;
    use diesel::sql_types::Bool;
    let mut q = users::table.into_boxed();
    if let Some(role) = filter.role {
        q = q.filter(users::role.eq(role.as_str()));
    }
    if let Some(active) = filter.active {
        q = q.filter(users::active.eq(active));
    }
    if let Some(t) = filter.signed_in_before {
        q = q.filter(
            users::last_login_at
                .is_null()
                .or(users::last_login_at.lt(t)),
        );
    }
    match filter.never_signed_in {
        Some(true) => q = q.filter(users::last_login_at.is_null()),
        Some(false) => q = q.filter(users::last_login_at.is_not_null()),
        None => {}
    }
    match after {
        Some(After::Username(u)) => q = q.filter(users::username.gt(u.clone())),
        Some(After::SignIn(at, u)) => {
            // The numbers come from this service's own page token (parsed as i64), never text.
            q = q.filter(sql::<Bool>(&format!("{SIGNED_IN} > {at}")).or(
                sql::<Bool>(&format!("{SIGNED_IN} = {at}")).and(users::username.gt(u.clone())),
            ));
        }
        None => {}
    }
    q
}

fn ordered<'a>(
    q: users::BoxedQuery<'a, crate::connection::MultiBackend>,
    filter: &Filter,
) -> users::BoxedQuery<'a, crate::connection::MultiBackend> {
    use diesel::dsl::sql;
    use diesel::sql_types::BigInt;
    if filter.by_last_sign_in {
        q.order((sql::<BigInt>(SIGNED_IN).asc(), users::username.asc()))
    } else {
        q.order(users::username.asc())
    }
}

/// The `n`th row after `after` in list order (without the text query), as a keyset position;
/// `None` when fewer rows remain.
fn nth(
    conn: &mut DbConnection,
    filter: &Filter,
    after: Option<&After>,
    n: i64,
) -> StoreResult<Option<After>> {
    let row: Option<(String, Option<i64>)> = ordered(filtered(filter, after), filter)
        .offset(n - 1)
        .limit(1)
        .select((users::username, users::last_login_at))
        .first(conn)
        .optional()?;
    Ok(row.map(|(username, at)| {
        if filter.by_last_sign_in {
            After::SignIn(at.unwrap_or(-1), username)
        } else {
            After::Username(username)
        }
    }))
}

fn page(
    conn: &mut DbConnection,
    filter: &Filter,
    after: Option<&After>,
    limit: i64,
    narrow: Narrow<'_>,
) -> StoreResult<Vec<User>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Text};
    let mut q = filtered(filter, after);
    let text = match narrow {
        Narrow::None => None,
        Narrow::Scan(t) => Some(t),
        Narrow::ScanUpTo(t, end) => {
            q = match end {
                After::Username(u) => q.filter(users::username.le(u.clone())),
                After::SignIn(at, u) => q.filter(sql::<Bool>(&format!("{SIGNED_IN} < {at}")).or(
                    sql::<Bool>(&format!("{SIGNED_IN} = {at}")).and(users::username.le(u.clone())),
                )),
            };
            Some(t)
        }
        Narrow::Index(t) => {
            // Trigrams need three characters; SQLite's index is its own table (PostgreSQL's
            // GIN index serves the LIKE below directly, where it exists).
            if matches!(conn, DbConnection::Sqlite(_)) && t.chars().count() >= 3 {
                let phrase = format!("\"{}\"", t.replace('"', "\"\""));
                q = q.filter(
                    sql::<Bool>(
                        "users.id IN (SELECT k.user_id FROM user_search s \
                         JOIN user_search_keys k ON k.n = s.rowid WHERE user_search MATCH ",
                    )
                    .bind::<Text, _>(phrase)
                    .sql(")"),
                );
            }
            Some(t)
        }
    };
    if let Some(t) = text {
        // PostgreSQL's LIKE escapes with a backslash already, and an ESCAPE clause would come as
        // a parameter, which keeps the planner from the trigram index; SQLite needs the clause.
        q = if matches!(conn, DbConnection::Sqlite(_)) {
            q.filter(users::search_text.like(escape_like(t)).escape('\\'))
        } else {
            q.filter(users::search_text.like(escape_like(t)))
        };
    }
    ordered(q, filter)
        .limit(limit)
        .select(Row::as_select())
        .load::<Row>(conn)?
        .into_iter()
        .map(User::try_from)
        .collect()
}

/// Number of active Team Admins, not counting `except`.
pub fn count_active_admins(conn: &mut DbConnection, except: Option<UserId>) -> StoreResult<i64> {
    let mut q = users::table
        .filter(users::role.eq(Role::TeamAdmin.as_str()))
        .filter(users::active.eq(true))
        .into_boxed();
    if let Some(id) = except {
        q = q.filter(users::id.ne(id.to_string()));
    }
    Ok(q.count().get_result(conn)?)
}

pub fn count(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(users::table.count().get_result(conn)?)
}

/// Writes a user's editable fields back and bumps its version.
pub fn update(conn: &mut DbConnection, u: &User, now: i64) -> StoreResult<()> {
    let n = diesel::update(users::table.filter(users::id.eq(u.id.to_string())))
        .set((
            users::email.eq(&u.email),
            users::display_name.eq(&u.display_name),
            users::role.eq(u.role.as_str()),
            users::active.eq(u.active),
            users::must_change_password.eq(u.must_change_password),
            users::password_hash.eq(&u.password_hash),
            users::search_text.eq(search_text(&u.username, &u.email, &u.display_name)),
            users::updated_at.eq(now),
            users::version.eq(u.version + 1),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Replaces the stored password hash only (a rehash at new parameters): not an edit, so the
/// version (etag) stays.
pub fn set_password_hash(conn: &mut DbConnection, id: UserId, hash: &str) -> StoreResult<()> {
    diesel::update(users::table.filter(users::id.eq(id.to_string())))
        .set(users::password_hash.eq(hash))
        .execute(conn)?;
    Ok(())
}

/// Records a successful login (and, with it, activity).
pub fn touch_login(conn: &mut DbConnection, id: UserId, now: i64) -> StoreResult<()> {
    diesel::update(users::table.filter(users::id.eq(id.to_string())))
        .set((users::last_login_at.eq(now), users::last_seen_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Records activity (a session refresh).
pub fn touch_seen(conn: &mut DbConnection, id: UserId, now: i64) -> StoreResult<()> {
    diesel::update(users::table.filter(users::id.eq(id.to_string())))
        .set(users::last_seen_at.eq(now))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, id: UserId) -> StoreResult<()> {
    let n = diesel::delete(users::table.filter(users::id.eq(id.to_string()))).execute(conn)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
