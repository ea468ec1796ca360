//! The database file: opening it with the store's settings, and the schema with its migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version` (0 for a new file). [`MIGRATIONS`] lists
//! every step in order; opening a file applies the steps above its version, each in its own
//! transaction together with the new version number, so a crash leaves the file at a whole
//! version. To change the schema, append a step (`to: 2`) and never edit a released one. A file
//! whose version is above the last step was written by a newer parity and is refused, as is a
//! file with tables but no version (not a parity store).
//!
//! Settings: WAL journal (readers never block the writer), `synchronous = NORMAL` (a power cut
//! may lose the last transactions, never corrupt the file), and `auto_vacuum = INCREMENTAL`, set
//! before the first table exists, so retention can give space back with `incremental_vacuum`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::StoreError;

/// One schema step.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// The version the step produces.
    pub to: i64,
    /// The statements of the step.
    pub sql: &'static str,
}

/// Every schema step, in order.
pub const MIGRATIONS: &[Migration] = &[Migration { to: 1, sql: V1 }];

/// The version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Version 1.
///
/// - `runs`: one row per `replay` or `run` that wrote to the store, with its latest summary
///   report (JSON) and whether it stored masked values.
/// - `records`: one row per stored pair: times (`ts_ns` capture time of the comparison,
///   `stored_ns` wall clock at writing, used by retention), the pair, the endpoint label, the
///   masked correlation id, whether it diverged (`0` for a matched pair kept for contrast), the
///   request line and statuses for listing, and both exchanges as JSON (`ExchangeView`).
/// - `differences`: every difference of a record, in verdict order: exact masked path, the path
///   with indexes collapsed (`pattern`, for counting fields), kind and both masked values.
const V1: &str = "
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    command TEXT NOT NULL,
    label TEXT NOT NULL,
    masked INTEGER NOT NULL,
    summary TEXT,
    summary_ns INTEGER
);
CREATE TABLE records (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    pair TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    diverged INTEGER NOT NULL,
    difference_count INTEGER NOT NULL,
    kinds TEXT NOT NULL,
    truncated INTEGER NOT NULL,
    body_comparison TEXT NOT NULL,
    method TEXT,
    uri TEXT,
    primary_status INTEGER,
    mirror_status INTEGER,
    primary_latency_ns INTEGER,
    mirror_latency_ns INTEGER,
    primary_exchange TEXT NOT NULL,
    mirror_exchange TEXT NOT NULL
);
CREATE INDEX records_ts ON records(ts_ns);
CREATE INDEX records_stored ON records(stored_ns);
CREATE INDEX records_endpoint ON records(pair, endpoint, id);
CREATE TABLE differences (
    record_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    pattern TEXT NOT NULL,
    kind TEXT NOT NULL,
    primary_value TEXT,
    mirror_value TEXT,
    PRIMARY KEY (record_id, seq)
) WITHOUT ROWID;
";

/// How long a connection waits for another one's lock before giving up with `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Open (creating when absent) the database at `path` for writing and bring it to the latest
/// version of `migrations`. A new file gets mode 0600 and incremental auto-vacuum.
pub fn open_writable(
    path: &Path,
    migrations: &[Migration],
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let existed = path.exists();
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        // Masked records still describe traffic: readable by the agent's user only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        })?;
    }
    let sql = |source| StoreError::Sql {
        path: path.to_path_buf(),
        source,
    };
    conn.busy_timeout(busy_timeout).map_err(sql)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(open_err)?;
    if tables == 0 {
        // Only takes effect before the first table is created.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(sql)?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            "diff store {}: journal mode is {mode}, not WAL (is the file on a network file system?); readers will block the writer",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// Open an existing database for reading: migrated when it is older than this build (which
/// needs write access once), then `query_only`.
pub fn open_readable(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let sql = |source| StoreError::Sql {
        path: path.to_path_buf(),
        source,
    };
    let rw = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    );
    let mut conn = match rw {
        Ok(c) => c,
        Err(_) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?,
    };
    conn.busy_timeout(busy_timeout).map_err(sql)?;
    let version = user_version(&conn).map_err(open_err)?;
    if version != SCHEMA_VERSION {
        migrate(&mut conn, path, MIGRATIONS)?;
    }
    conn.pragma_update(None, "query_only", true).map_err(sql)?;
    Ok(conn)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Apply the steps of `migrations` above the file's version. Returns the final version.
pub fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<i64, StoreError> {
    let latest = migrations.last().map_or(0, |m| m.to);
    let current = user_version(conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if current > latest {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known: latest,
        });
    }
    if current == 0 {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        if tables > 0 {
            return Err(StoreError::NotParity {
                path: path.to_path_buf(),
            });
        }
    }
    for m in migrations.iter().filter(|m| m.to > current) {
        let step = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            to: m.to,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(step)?;
        tx.execute_batch(m.sql).map_err(step)?;
        tx.pragma_update(None, "user_version", m.to).map_err(step)?;
        tx.commit().map_err(step)?;
        if current > 0 {
            tracing::info!(
                "diff store {}: migrated from schema version {current} to {}",
                path.display(),
                m.to
            );
        }
    }
    Ok(latest.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_FOR_TEST: &str = "ALTER TABLE records ADD COLUMN note TEXT NOT NULL DEFAULT '';
        CREATE TABLE annotations (record_id INTEGER PRIMARY KEY, text TEXT NOT NULL);";

    fn version(c: &Connection) -> i64 {
        user_version(c).unwrap()
    }

    #[test]
    fn a_new_file_gets_the_latest_schema_wal_and_incremental_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/parity.db");
        let c = open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(version(&c), SCHEMA_VERSION);
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 2, "2 is INCREMENTAL");
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        drop(c);
        // Reopening is a no-op.
        let c = open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(version(&c), SCHEMA_VERSION);
    }

    #[test]
    fn opening_a_v1_file_with_a_v2_step_migrates_it_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("parity.db");
        let c = open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap();
        c.execute(
            "INSERT INTO records (run_id, ts_ns, stored_ns, pair, endpoint, correlation_id, diverged,
             difference_count, kinds, truncated, body_comparison, primary_exchange, mirror_exchange)
             VALUES (1, 5, 6, 'p', 'GET /a', 'id-1', 1, 0, '', 0, 'json', '{}', '{}')",
            [],
        )
        .unwrap();
        drop(c);
        let steps = [
            MIGRATIONS[0],
            Migration {
                to: 2,
                sql: V2_FOR_TEST,
            },
        ];
        let c = open_writable(&p, &steps, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(version(&c), 2);
        let (id, note): (String, String) = c
            .query_row("SELECT correlation_id, note FROM records", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id.as_str(), note.as_str()), ("id-1", ""));
        c.execute("INSERT INTO annotations VALUES (1, 'x')", [])
            .unwrap();
        drop(c);
        // This build (v1) refuses the v2 file instead of misreading it.
        match open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT) {
            Err(StoreError::TooNew {
                found: 2, known: 1, ..
            }) => {}
            other => panic!("expected TooNew, got {:?}", other.map(|_| ())),
        }
        assert!(matches!(
            open_readable(&p, DEFAULT_BUSY_TIMEOUT),
            Err(StoreError::TooNew { .. })
        ));
    }

    #[test]
    fn a_failed_step_leaves_the_file_at_its_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("parity.db");
        drop(open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap());
        let steps = [
            MIGRATIONS[0],
            Migration {
                to: 2,
                sql: "CREATE TABLE half (x INTEGER); ALTER TABLE nonexistent ADD COLUMN y;",
            },
        ];
        assert!(matches!(
            open_writable(&p, &steps, DEFAULT_BUSY_TIMEOUT),
            Err(StoreError::Migrate { to: 2, .. })
        ));
        let c = open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap();
        assert_eq!(version(&c), 1);
        let half: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'half'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(half, 0, "the failed step was rolled back whole");
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("other.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        drop(c);
        assert!(matches!(
            open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT),
            Err(StoreError::NotParity { .. })
        ));
        assert!(matches!(
            open_readable(&dir.path().join("absent.db"), DEFAULT_BUSY_TIMEOUT),
            Err(StoreError::Missing { .. })
        ));
    }

    #[test]
    fn a_readable_connection_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("parity.db");
        drop(open_writable(&p, MIGRATIONS, DEFAULT_BUSY_TIMEOUT).unwrap());
        let c = open_readable(&p, DEFAULT_BUSY_TIMEOUT).unwrap();
        let e = c
            .execute("DELETE FROM records", [])
            .expect_err("query_only refuses writes");
        assert_eq!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly));
    }
}
