//! PostgreSQL as the system of record.
//!
//! [`connect`] builds a small pool, applies the migrations shipped in the binary (under an
//! advisory lock, so nodes starting together apply them once) and loads the marks of today and
//! yesterday into the engine's dedupe index. [`PgSink`] is the writer's sink: one transaction
//! per batch, `INSERT … ON CONFLICT DO NOTHING RETURNING` for the rows that are new, and a read
//! of the original time for those another transaction (another node) holds. A key held by a
//! transaction not yet committed makes the insert wait for it; the read that follows (a fresh
//! snapshot under READ COMMITTED) then sees the committed row. Keys are taken in sorted order so
//! two nodes' batches cannot deadlock on each other; a deadlock or serialization failure all the
//! same is retried, a bounded number of times.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attendance_protocol::{StudentId, Timestamp};
use attendance_server::ops::health::Dependency;
use attendance_server::store::{Committed, ExternalSink, Held, Index, Pipeline, StorageError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use jiff::tz::TimeZone;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tracing::{info, warn};

/// The schema version this binary knows (the number of migrations).
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_marks.sql")];

/// The advisory lock held while migrating (any constant; "attn" in ASCII).
const MIGRATION_LOCK: i64 = 0x6174_746e;

/// How long one batch may take, connection included, before the marks get `ERR STORAGE`.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches committed at once, each on its own pooled connection: while one waits for its WAL
/// flush the next is sent, and PostgreSQL flushes the log once for both (its own group
/// commit). Two, measured (docs/performance.md): with commits of 3 ms (a real disk, a database
/// across the network) 1.3× the rate of one at a time; on a loopback database with a fast
/// flush within 5 % of it; three gained nothing more.
const DEPTH: usize = 2;

/// Attempts of one batch on a deadlock, a serialization failure or a row read back missing.
const ATTEMPTS: usize = 5;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is not a PostgreSQL connection string.
    #[error("store URL: {0}")]
    Url(String),
    /// The database refused or failed a statement, or the connection broke.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    #[error("postgres pool: {0}")]
    Pool(String),
    /// The database holds a schema newer than this binary.
    #[error(
        "the database's schema is version {found}, newer than this binary's {known}: upgrade attendanced"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// This binary's.
        known: i32,
    },
    /// A row the writer handed over is not a mark row.
    #[error("not a mark row: {0}")]
    Row(String),
    /// A commit took longer than its limit.
    #[error("no answer from postgres within {0:?}")]
    Timeout(Duration),
    /// A row read back was not there (retried; only seen when every attempt missed it).
    #[error("a held mark could not be read back")]
    Missing,
}

impl PgError {
    /// Whether the batch may succeed if tried again at once.
    fn retryable(&self) -> bool {
        match self {
            Self::Db(e) => e.code().is_some_and(|c| {
                *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
            }),
            Self::Missing => true,
            _ => false,
        }
    }

    /// Whether it is a problem of the configuration (the URL, the schema), not of the moment.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Url(_) | Self::SchemaTooNew { .. })
    }
}

/// The URL without its password, for logs and `check-config`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    // key=value parameters may carry one too.
    let host = host
        .split('&')
        .map(|p| match p.find("password=") {
            Some(at) if at == 0 || p[..at].ends_with('?') => format!("{}password=***", &p[..at]),
            _ => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match auth.map(|a| a.split_once(':').map_or(a, |(user, _)| user)) {
        Some(user) if auth.is_some_and(|a| a.contains(':')) => {
            format!("{scheme}://{user}:***@{host}")
        }
        Some(user) => format!("{scheme}://{user}@{host}"),
        None => format!("{scheme}://{host}"),
    }
}

/// A pool for `url`: a connection per batch in flight ([`DEPTH`]) and one for the probe, with bounded
/// connect and wait times and TCP keepalive, so a vanished database is noticed.
fn pool(url: &str) -> Result<Pool, PgError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(PgError::Url(format!(
            "{} is not a postgres:// or postgresql:// URL",
            redact(url)
        )));
    }
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(e.to_string()))?;
    config
        .application_name("attendanced")
        // Every commit waits for its WAL flush, whatever the server's default: an
        // acknowledged mark survives a crash of the database.
        .options("-c synchronous_commit=on")
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(10));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(DEPTH + 1)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
        other => PgError::Pool(other.to_string()),
    })
}

/// Applies the migrations this binary has and the database lacks; refuses a newer schema.
async fn migrate(pool: &Pool) -> Result<i32, PgError> {
    let mut client = client(pool).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(&mut client).await;
    // Released even when a migration failed (a session lock outlives a rolled-back transaction).
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn apply(client: &mut deadpool_postgres::Object) -> Result<i32, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS attendanced_schema (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let found = schema_version(client).await?;
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO attendanced_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        info!(version, "applied postgres migration");
    }
    Ok(SCHEMA_VERSION)
}

/// The schema version the database holds (its `attendanced_schema` table exists); refuses one
/// newer than this binary's.
async fn schema_version(client: &deadpool_postgres::Object) -> Result<i32, PgError> {
    let found: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM attendanced_schema",
            &[],
        )
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Opens the store at `url`: migrates it, and builds the dedupe index (days in `tz`) from its
/// marks of today and yesterday. `node` names this daemon in the rows it writes.
///
/// # Errors
/// [`PgError`] if the URL is bad, the database unreachable or its schema too new.
pub async fn connect(url: &str, tz: TimeZone, node: String) -> Result<(PgSink, Index), PgError> {
    let pool = pool(url)?;
    let started = Instant::now();
    migrate(&pool).await?;
    let index = Index::new(tz.clone());
    let yesterday = tz
        .to_datetime(jiff::Timestamp::now())
        .date()
        .yesterday()
        .map_err(|e| PgError::Row(e.to_string()))?
        .to_string();
    let client = client(&pool).await?;
    let rows = client
        .query(
            "SELECT course, division, name, roll, marked_at_text FROM attendance_marks
             WHERE day >= $1::text::date ORDER BY day, id",
            &[&yesterday],
        )
        .await?;
    for row in &rows {
        let (course, division, name, roll, at): (&str, &str, &str, &str, &str) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        match (
            StudentId::from_parts(course, division, name, roll),
            Timestamp::from_str(at),
        ) {
            (Ok(id), Ok(at)) => {
                index.insert(&id.class, &id.roll, at);
            }
            _ => warn!(
                course,
                division, roll, "a row in attendance_marks is not a valid mark; skipped"
            ),
        }
    }
    drop(client);
    let health = Arc::new(Dependency::new("postgres"));
    health.ok(started.elapsed());
    let (probe, stop) = tokio::sync::oneshot::channel();
    tokio::spawn(probe_loop(
        pool.clone(),
        Arc::clone(&health),
        redact(url),
        stop,
    ));
    Ok((
        PgSink {
            committer: Arc::new(Committer {
                pool,
                tz,
                node,
                describe: redact(url),
                health,
            }),
            last_sync: None,
            _probe: probe,
        },
        index,
    ))
}

/// One mark row, split into the table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    course: String,
    division: String,
    name: String,
    roll: String,
    status: String,
    marked_at: String,
    addr: String,
    late: String,
    attended: String,
    day: String,
    row: String,
}

/// The cells of one CSV row (the writer's own encoding, so quoting is the only subtlety).
/// `reader` is reused from row to row: building one (its DFA) costs more than reading a row.
fn cells(row: &[u8], reader: &mut csv_core::Reader) -> Result<Vec<String>, PgError> {
    let bad = |why: &str| PgError::Row(why.to_owned());
    reader.reset();
    let mut out = Vec::with_capacity(11);
    let mut field = vec![0u8; row.len() + 1];
    let mut len = 0;
    let mut input = row;
    // Each call consumes input or ends a field; bounded by the row's length plus the fields.
    for _ in 0..=2 * row.len() + 2 {
        let (result, read, written) = reader.read_field(input, &mut field[len..]);
        input = &input[read..];
        len += written;
        match result {
            csv_core::ReadFieldResult::InputEmpty => {}
            csv_core::ReadFieldResult::OutputFull => return Err(bad("a cell longer than its row")),
            csv_core::ReadFieldResult::Field { record_end } => {
                let cell = std::str::from_utf8(&field[..len]).map_err(|_| bad("not UTF-8"))?;
                out.push(cell.to_owned());
                len = 0;
                if record_end {
                    return Ok(out);
                }
            }
            csv_core::ReadFieldResult::End => return Ok(out),
        }
    }
    Err(bad("unterminated row"))
}

fn parse(row: &[u8], tz: &TimeZone, reader: &mut csv_core::Reader) -> Result<Parsed, PgError> {
    let text = std::str::from_utf8(row.strip_suffix(b"\n").unwrap_or(row))
        .map_err(|_| PgError::Row("not UTF-8".to_owned()))?;
    let c = cells(text.as_bytes(), reader)?;
    let [
        course,
        division,
        name,
        roll,
        status,
        marked_at,
        _joined,
        addr,
        late,
        attended,
        _start,
    ] = <[String; 11]>::try_from(c)
        .map_err(|c| PgError::Row(format!("{} cells, not 11", c.len())))?;
    let at = jiff::Timestamp::from_str(&marked_at).map_err(|e| PgError::Row(e.to_string()))?;
    let day = tz.to_datetime(at).date().to_string();
    Ok(Parsed {
        course,
        division,
        name,
        roll,
        status,
        marked_at,
        addr,
        late,
        attended,
        day,
        row: text.to_owned(),
    })
}

/// The writer's sink into PostgreSQL.
pub struct PgSink {
    committer: Arc<Committer>,
    last_sync: Option<Duration>,
    /// Dropped with the sink: ends the probe task.
    _probe: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for PgSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSink")
            .field("store", &self.committer.describe)
            .finish_non_exhaustive()
    }
}

/// What a commit needs, shared by the commits in flight ([`Pipeline`]).
struct Committer {
    pool: Pool,
    tz: TimeZone,
    node: String,
    describe: String,
    health: Arc<Dependency>,
}

const INSERT: &str = "INSERT INTO attendance_marks
      (course, division, day, roll, name, status, marked_at, marked_at_text,
       minutes_late, minutes_attended, client_addr, row_text, node)
    SELECT c, d, day::date, r, n, s, m::timestamptz, m, ml::integer, ma::integer,
           NULLIF(a, ''), rt, $12
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
         AS t(c, d, day, r, n, s, m, ml, ma, a, rt)
    ON CONFLICT (course, division, day, roll) DO NOTHING
    RETURNING course, division, day::text, roll";

const HELD: &str = "SELECT m.course, m.division, m.day::text, m.roll, m.marked_at_text
    FROM attendance_marks m
    JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(c, d, day, r)
      ON m.course = k.c AND m.division = k.d AND m.day = k.day::date AND m.roll = k.r";

type Key = (String, String, String, String);

impl Committer {
    /// Commits `rows` in one transaction, within [`COMMIT_TIMEOUT`], keeping `health` up to
    /// date; returns how long it took.
    async fn commit(&self, rows: &[Vec<u8>]) -> Committed {
        let started = Instant::now();
        let result = match tokio::time::timeout(COMMIT_TIMEOUT, self.commit_rows(rows)).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout(COMMIT_TIMEOUT)),
        };
        match result {
            Ok(held) => {
                let took = started.elapsed();
                if self.health.ok(took) {
                    info!(store = %self.describe, "postgres is back; marks are stored again");
                }
                Committed {
                    result: Ok(held),
                    took: Some(took),
                }
            }
            Err(e) => {
                if self.health.failed(e.to_string()) {
                    warn!(store = %self.describe, error = %e, "postgres failed; marks get ERR STORAGE until it is back");
                }
                Committed {
                    result: Err(StorageError::Database(e.to_string())),
                    took: None,
                }
            }
        }
    }

    async fn commit_rows(&self, rows: &[Vec<u8>]) -> Result<Held, PgError> {
        let mut reader = csv_core::Reader::new();
        let parsed: Vec<Parsed> = rows
            .iter()
            .map(|r| parse(r, &self.tz, &mut reader))
            .collect::<Result<_, _>>()?;
        // Sorted by key: two batches that share keys lock them in the same order.
        let mut order: Vec<usize> = (0..parsed.len()).collect();
        order.sort_by(|&a, &b| key_ref(&parsed[a]).cmp(&key_ref(&parsed[b])));
        let mut client = client(&self.pool).await?;
        let mut last = PgError::Missing;
        for _ in 0..ATTEMPTS {
            match self.attempt(&mut client, &parsed, &order).await {
                Ok(held) => return Ok(held),
                Err(e) if e.retryable() => last = e,
                Err(e) => {
                    // The connection may be broken or mid-transaction: never reuse it.
                    let _ = deadpool_postgres::Object::take(client);
                    return Err(e);
                }
            }
        }
        Err(last)
    }

    async fn attempt(
        &self,
        client: &mut deadpool_postgres::Object,
        parsed: &[Parsed],
        order: &[usize],
    ) -> Result<Held, PgError> {
        let column = |f: fn(&Parsed) -> &str| columns(parsed, order, f);
        let keys = key_columns(parsed, order);
        // One statement, committed on its own (autocommit): one round trip and one WAL flush
        // per batch, atomic all the same. `synchronous_commit = on` is the session's setting
        // (see [`pool`]), whatever the server's default.
        let insert = client.prepare_cached(INSERT).await?;
        let inserted = client
            .query(
                &insert,
                &[
                    &keys[0],
                    &keys[1],
                    &keys[2],
                    &keys[3],
                    &column(|p| &p.name),
                    &column(|p| &p.status),
                    &column(|p| &p.marked_at),
                    &column(|p| &p.late),
                    &column(|p| &p.attended),
                    &column(|p| &p.addr),
                    &column(|p| &p.row),
                    &self.node,
                ],
            )
            .await?;
        let mut held = Vec::new();
        if inserted.len() < parsed.len() {
            let new: std::collections::HashSet<Key> = inserted
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            let rest: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| !new.contains(&key(&parsed[i])))
                .collect();
            let keys = key_columns(parsed, &rest);
            // The rows held by others are committed: our insert waited for any transaction
            // that held one of the keys, and this statement's snapshot is newer.
            let select = client.prepare_cached(HELD).await?;
            let found = client
                .query(&select, &[&keys[0], &keys[1], &keys[2], &keys[3]])
                .await?;
            let times: HashMap<Key, String> = found
                .iter()
                .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3)), r.get(4)))
                .collect();
            for i in rest {
                let at = times.get(&key(&parsed[i])).ok_or(PgError::Missing)?;
                let at = Timestamp::from_str(at).map_err(|e| PgError::Row(e.to_string()))?;
                held.push((i, at));
            }
        }
        Ok(held)
    }
}

/// How often an idle store is probed, so `/healthz` tells of a database that went away before
/// the next mark finds out.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Probes the database (`SELECT 1`) every [`PROBE_EVERY`] until `stop` is dropped (with the
/// sink), updating `health` and logging each change once.
async fn probe_loop(
    pool: Pool,
    health: Arc<Dependency>,
    store: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => {}
        }
        let started = Instant::now();
        let probe = async {
            let c = client(&pool).await?;
            c.execute("SELECT 1", &[]).await?;
            Ok::<_, PgError>(())
        };
        let result = match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout(Duration::from_secs(5))),
        };
        match result {
            Ok(()) => {
                if health.ok(started.elapsed()) {
                    info!(%store, "postgres answers again");
                }
            }
            Err(e) => {
                if health.failed(e.to_string()) {
                    warn!(%store, error = %e, "postgres does not answer; marks will get ERR STORAGE");
                }
            }
        }
    }
}

/// One column of the rows at `order`, as the text array a statement takes.
fn columns<'a>(parsed: &'a [Parsed], order: &[usize], f: fn(&Parsed) -> &str) -> Vec<&'a str> {
    order.iter().map(|&i| f(&parsed[i])).collect()
}

/// The key's columns (course, division, day, roll) of the rows at `order`, in the order the
/// statements take them.
fn key_columns<'a>(parsed: &'a [Parsed], order: &[usize]) -> [Vec<&'a str>; 4] {
    [
        columns(parsed, order, |p| &p.course),
        columns(parsed, order, |p| &p.division),
        columns(parsed, order, |p| &p.day),
        columns(parsed, order, |p| &p.roll),
    ]
}

/// The key of `p`, borrowed (for sorting without copies).
fn key_ref(p: &Parsed) -> (&str, &str, &str, &str) {
    (&p.course, &p.division, &p.day, &p.roll)
}

fn key(p: &Parsed) -> Key {
    (
        p.course.clone(),
        p.division.clone(),
        p.day.clone(),
        p.roll.clone(),
    )
}

/// The writer's handle for commits in flight.
struct Shared(Arc<Committer>);

impl Pipeline<Vec<u8>> for Shared {
    fn depth(&self) -> usize {
        DEPTH
    }

    fn commit(&self, rows: Vec<Vec<u8>>) -> BoxFuture<'static, Committed> {
        let committer = Arc::clone(&self.0);
        Box::pin(async move { committer.commit(&rows).await })
    }
}

impl ExternalSink for PgSink {
    fn commit<'a>(&'a mut self, rows: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Held, StorageError>> {
        Box::pin(async move {
            let committed = self.committer.commit(rows).await;
            self.last_sync = committed.took;
            committed.result
        })
    }

    fn last_sync(&self) -> Option<Duration> {
        self.last_sync
    }

    fn describe(&self) -> String {
        self.committer.describe.clone()
    }

    fn health(&self) -> Option<Arc<Dependency>> {
        Some(Arc::clone(&self.committer.health))
    }

    fn pipeline(&self) -> Option<Arc<dyn Pipeline<Vec<u8>>>> {
        Some(Arc::new(Shared(Arc::clone(&self.committer))))
    }
}

/// The stored rows (each a mark's CSV row without its hash) of `day` (YYYY-MM-DD), of one
/// class (`COURSE_DIV`) or all, in the order they were stored, for `attendanced export`.
///
/// # Errors
/// [`PgError`] if the database cannot be read.
pub async fn export_rows(
    url: &str,
    day: &str,
    class: Option<(&str, &str)>,
) -> Result<Vec<String>, PgError> {
    let pool = pool(url)?;
    let client = client(&pool).await?;
    let rows =
        match class {
            Some((course, division)) => {
                client
                    .query(
                        "SELECT row_text FROM attendance_marks WHERE day = $1::text::date
                     AND course = $2 AND division = $3 ORDER BY id",
                        &[&day, &course, &division],
                    )
                    .await?
            }
            None => client
                .query(
                    "SELECT row_text FROM attendance_marks WHERE day = $1::text::date ORDER BY id",
                    &[&day],
                )
                .await?,
        };
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether `url` reaches a database, and its schema version (for `check-config`).
///
/// # Errors
/// [`PgError`] if it cannot be reached or its schema is too new.
pub async fn check(url: &str) -> Result<i32, PgError> {
    let pool = pool(url)?;
    let c = client(&pool).await?;
    let exists: bool = c
        .query_one("SELECT to_regclass('attendanced_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let found = schema_version(&c).await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_their_columns() {
        let row = b"CN,Div1,Jay,18BCP043,Present,2026-12-07T03:12:22.123Z,2026-12-07T02:12:22.000Z,127.0.0.1,0,60,2026-12-07T02:12:22.000Z\n";
        let p = parse(
            row,
            &TimeZone::get("Asia/Kolkata").expect("tz"),
            &mut csv_core::Reader::new(),
        )
        .expect("row");
        assert_eq!(p.course, "CN");
        assert_eq!(p.roll, "18BCP043");
        assert_eq!(p.day, "2026-12-07");
        assert_eq!(p.attended, "60");
        assert!(!p.row.ends_with('\n'));
        // The local day, not UTC's: 23:30 UTC is the next morning in Kolkata.
        let late = b"CN,Div1,Jay,1,Present,2026-12-06T23:30:00.000Z,2026-12-06T22:30:00.000Z,,0,60,2026-12-06T22:30:00.000Z\n";
        assert_eq!(
            parse(
                late,
                &TimeZone::get("Asia/Kolkata").expect("tz"),
                &mut csv_core::Reader::new()
            )
            .expect("row")
            .day,
            "2026-12-07"
        );
    }

    #[test]
    fn quoted_cells_are_unquoted() {
        let mut reader = csv_core::Reader::new();
        let c = cells(b"\"a,b\",\"say \"\"hi\"\"\",c\n", &mut reader).expect("cells");
        assert_eq!(c, ["a,b", "say \"hi\"", "c"]);
        // The same reader reads the next row from its start.
        assert_eq!(cells(b"x,y\n", &mut reader).expect("cells"), ["x", "y"]);
        assert!(parse(b"a,b,c\n", &TimeZone::UTC, &mut reader).is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?password=x&sslmode=disable"),
            "postgres://h/db?password=***&sslmode=disable"
        );
    }
}
