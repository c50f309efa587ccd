//! The PostgreSQL sink against a real server.
//!
//! The server is `TAPEDECK_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Without one the tests print why and skip; under `CI=true` a missing server fails them. Each
//! test works in its own schema, so they run in parallel. The restart tests start their own
//! throwaway cluster with initdb + pg_ctl.
#![cfg(feature = "postgres")]

mod common;
#[path = "common/pg_cluster.rs"]
mod pg_cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use tapedeck::error::Error;
use tapedeck::sink::{self, Sink};

use common::batch;

/// A blocking client for checking what the sink wrote.
struct Db {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Db {
    fn connect(url: &str) -> Result<Db, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
            let connect = config.connect(tokio_postgres::NoTls);
            let (client, conn) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| format!("{e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(client)
        })?;
        Ok(Db { rt, client })
    }

    fn exec(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0].get(0)
    }
}

/// The test server, or `None` (with the reason printed) when there is none outside CI.
fn server(test: &str) -> Option<(String, Db)> {
    let url = std::env::var("TAPEDECK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    match Db::connect(&url) {
        Ok(db) => Some((url, db)),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but no PostgreSQL at {url}: {e}");
            }
            eprintln!(
                "skipping {test}: no PostgreSQL at {url} ({e}); set TAPEDECK_TEST_POSTGRES_URL"
            );
            None
        }
    }
}

/// A fresh schema named after the test.
fn schema(db: &Db, test: &str) -> String {
    let name = format!("td_{test}_{}", std::process::id());
    db.exec(&format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
    ));
    name
}

fn uri(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z in µs

fn typed_batch(first: i64, n: usize) -> arrow_array::RecordBatch {
    let ids: Vec<i64> = (first..first + n as i64).collect();
    batch(vec![
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from(
                    ids.iter().map(|i| T0 + i * 100).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "Mass_Flow",
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| 10.0 + (*i % 1000) as f64 * 0.01)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "ok",
            Arc::new(BooleanArray::from(
                ids.iter().map(|i| i % 2 == 0).collect::<Vec<_>>(),
            )),
        ),
        (
            "device",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| if i % 3 == 0 { None } else { Some("fuel") })
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "raw",
            Arc::new(BinaryArray::from(
                ids.iter()
                    .map(|_| Some(&b"\x00\xff"[..]))
                    .collect::<Vec<_>>(),
            )),
        ),
    ])
}

#[test]
fn binary_copy_round_trips_typed_values_into_a_created_table() {
    for use_copy in [true, false] {
        let test = if use_copy {
            "roundtrip_copy"
        } else {
            "roundtrip_insert"
        };
        let Some((url, db)) = server(test) else {
            return;
        };
        let s = schema(&db, test);
        let mut sink = sink::open(&uri(
            &url,
            &format!("schema={s}&table=samples&create_table=true&use_copy={use_copy}"),
        ))
        .unwrap();
        assert!(
            sink.name().ends_with(&format!("/test.{s}.samples")),
            "{}",
            sink.name()
        );
        sink.write(&typed_batch(0, 1000)).unwrap();
        sink.flush().unwrap();
        // A later batch with a narrower integer type and a missing column still fits the lock.
        sink.write(&batch(vec![
            (
                "id",
                Arc::new(Int32Array::from(vec![1000, 1001])) as ArrayRef,
            ),
            (
                "t",
                Arc::new(TimestampNanosecondArray::from(vec![
                    T0 * 1000,
                    T0 * 1000 + 1500,
                ])),
            ),
        ]))
        .unwrap();
        sink.close().unwrap();
        assert_eq!(sink.stats().rows, 1002);
        assert_eq!(sink.stats().pending, 0);

        let types: Vec<(String, String)> = db
            .query(&format!(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = '{s}' AND table_name = 'samples' ORDER BY ordinal_position"
            ))
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let expect = [
            ("id", "bigint"),
            ("t", "timestamp with time zone"),
            ("Mass_Flow", "double precision"),
            ("ok", "boolean"),
            ("device", "text"),
            ("raw", "bytea"),
        ];
        assert_eq!(
            types,
            expect.map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
        );
        let rows = db.query(&format!(
            "SELECT id, (extract(epoch from t) * 1000000)::bigint, \"Mass_Flow\", ok, device, raw \
             FROM {s}.samples ORDER BY id"
        ));
        assert_eq!(rows.len(), 1002);
        for (i, r) in rows.iter().enumerate().take(1000) {
            let i = i as i64;
            assert_eq!(r.get::<_, i64>(0), i);
            assert_eq!(r.get::<_, i64>(1), T0 + i * 100);
            assert_eq!(r.get::<_, f64>(2), 10.0 + (i % 1000) as f64 * 0.01);
            assert_eq!(r.get::<_, bool>(3), i % 2 == 0);
            assert_eq!(
                r.get::<_, Option<String>>(4).as_deref(),
                (i % 3 != 0).then_some("fuel")
            );
            assert_eq!(r.get::<_, Vec<u8>>(5), b"\x00\xff");
        }
        assert_eq!(rows[1001].get::<_, i64>(1), T0 + 1);
        assert_eq!(rows[1001].get::<_, Option<f64>>(2), None);
        let progress = db.count(&format!(
            "SELECT flushes FROM {s}.tapedeck_cursor WHERE target_table = '{s}.samples'"
        ));
        assert_eq!(
            progress, 2,
            "{test}: one committed transaction per flush with rows"
        );
        db.exec(&format!("DROP SCHEMA {s} CASCADE"));
    }
}

#[test]
fn an_existing_table_locks_the_schema_and_keeps_its_defaults() {
    let Some((url, db)) = server("existing") else {
        return;
    };
    let s = schema(&db, "existing");
    db.exec(&format!(
        "CREATE TABLE {s}.flow (
            row_id bigserial PRIMARY KEY,
            id integer NOT NULL,
            t timestamp without time zone,
            \"Mass_Flow\" real,
            note jsonb,
            doubled bigint GENERATED ALWAYS AS (id * 2) STORED,
            loaded_at timestamptz NOT NULL DEFAULT now()
        )"
    ));
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=flow"))).unwrap();
    sink.write(&batch(vec![
        ("id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
        (
            "t",
            Arc::new(TimestampMicrosecondArray::from(vec![T0, T0 + 1]).with_timezone("UTC")),
        ),
        ("Mass_Flow", Arc::new(Float64Array::from(vec![1.5, 2.25]))),
        (
            "note",
            Arc::new(StringArray::from(vec![r#"{"a": 1}"#, "[]"])),
        ),
        ("unknown", Arc::new(StringArray::from(vec!["x", "y"]))),
    ]))
    .unwrap();
    sink.close().unwrap();
    let rows = db.query(&format!(
        "SELECT row_id, id, t = '2026-01-01 00:00:00', \"Mass_Flow\", note->>'a', doubled, loaded_at IS NOT NULL FROM {s}.flow ORDER BY id"
    ));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i64>(0), 1, "bigserial default applied");
    assert_eq!(rows[0].get::<_, i32>(1), 7);
    assert!(rows[0].get::<_, bool>(2));
    assert_eq!(rows[1].get::<_, f32>(3), 2.25);
    assert_eq!(rows[0].get::<_, Option<String>>(4).as_deref(), Some("1"));
    assert_eq!(rows[1].get::<_, i64>(5), 16);
    assert!(rows[1].get::<_, bool>(6));
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn bad_tables_and_values_are_typed_errors_naming_schema_table_and_column() {
    let Some((url, db)) = server("bad_tables") else {
        return;
    };
    let s = schema(&db, "bad_tables");

    // Missing table under create_table=false.
    let mut sink = sink::open(&uri(
        &url,
        &format!("schema={s}&table=nothere&create_table=false"),
    ))
    .unwrap();
    let e = sink.write(&typed_batch(0, 3)).unwrap_err();
    assert!(matches!(e, Error::MissingTable { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("{s}.nothere")), "{e}");
    sink.close().unwrap();

    // A column type tapedeck cannot write.
    db.exec(&format!(
        "CREATE TABLE {s}.money (id bigint, amount numeric)"
    ));
    let e = sink::open(&uri(&url, &format!("schema={s}&table=money")))
        .err()
        .unwrap();
    match &e {
        Error::ColumnType {
            table,
            column,
            column_type,
            ..
        } => {
            assert_eq!(table, &format!("{s}.money"));
            assert_eq!(column, "amount");
            assert_eq!(column_type, "numeric");
        }
        other => panic!("{other:?}"),
    }

    // A value that does not fit: nothing of the flush is written.
    db.exec(&format!(
        "CREATE TABLE {s}.small (id smallint, v double precision)"
    ));
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=small"))).unwrap();
    sink.write(&batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 70_000])) as ArrayRef,
        ),
        ("v", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
    ]))
    .unwrap();
    let e = sink.flush().unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("`id`") && text.contains("70000") && text.contains(&s),
        "{text}"
    );
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.small")), 0);
    let _ = sink.close();

    // A type conflict with the locked table.
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=small"))).unwrap();
    let e = sink
        .write(&batch(vec![(
            "v",
            Arc::new(StringArray::from(vec!["high"])) as ArrayRef,
        )]))
        .unwrap_err();
    assert!(
        matches!(e, Error::SchemaConflict { ref column, .. } if column == "v"),
        "{e:?}"
    );
    sink.close().unwrap();

    // A server-side failure (NOT NULL) is rolled back and names the table.
    db.exec(&format!(
        "CREATE TABLE {s}.strict_t (id bigint NOT NULL, v double precision)"
    ));
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=strict_t"))).unwrap();
    sink.write(&batch(vec![(
        "v",
        Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
    )]))
    .unwrap();
    let e = sink.flush().unwrap_err();
    assert!(matches!(e, Error::Database { .. }), "{e:?}");
    assert!(
        e.to_string().contains("strict_t") && e.to_string().contains("rolled back"),
        "{e}"
    );
    let _ = sink.close();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.strict_t")), 0);
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn hostile_column_names_are_quoted_and_values_bound() {
    let Some((url, db)) = server("hostile") else {
        return;
    };
    let s = schema(&db, "hostile");
    let evil = r#"x"); DROP TABLE victim; --"#;
    db.exec(&format!("CREATE TABLE {s}.victim (id int)"));
    let mut sink =
        sink::open(&uri(&url, &format!("schema={s}&table=t&create_table=true"))).unwrap();
    sink.write(&batch(vec![
        (
            evil,
            Arc::new(StringArray::from(vec!["'); DROP TABLE victim; --"])) as ArrayRef,
        ),
        ("Unit", Arc::new(Int64Array::from(vec![1]))),
    ]))
    .unwrap();
    sink.close().unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.victim")), 0);
    let rows = db.query(&format!(
        "SELECT \"{}\" FROM {s}.t",
        evil.replace('"', "\"\"")
    ));
    assert_eq!(rows[0].get::<_, String>(0), "'); DROP TABLE victim; --");
    let e = sink::parse(&uri(&url, "table=t;drop")).unwrap_err();
    assert!(e.to_string().contains("^[A-Za-z_]"), "{e}");
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn an_unreachable_server_fails_within_the_connect_timeout_without_the_password() {
    // A port nobody listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let e = sink::open(&format!(
        "postgres://lab:hunter2@127.0.0.1:{port}/db?connect_timeout=2s"
    ))
    .err()
    .unwrap();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}/db")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // An address that never answers: the connect timeout ends the wait.
    let started = Instant::now();
    let e = sink::open("postgres://lab:hunter2@10.255.255.1:5432/db?connect_timeout=1s")
        .err()
        .unwrap();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("hunter2"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn blocks_go_to_the_blocks_table() {
    let Some((url, db)) = server("blocks") else {
        return;
    };
    let s = schema(&db, "blocks");
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&create_table=true"))).unwrap();
    let mut sim = tapedeck::source::sim_daq::DaqSim::new(2, 1000.0, 50);
    for i in 0..3 {
        sink.write_block(&sim.make_block(i, T0 + i as i64 * 50_000))
            .unwrap();
    }
    sink.write(&typed_batch(0, 5)).unwrap();
    sink.close().unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.blocks")), 3);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.readings")), 5);
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

/// Writes `batches` batches of `rows` rows with increasing ids, flushing each, while `chaos`
/// runs once mid-way; then checks every id arrived exactly once.
fn write_through(
    sink: &mut Box<dyn Sink>,
    batches: i64,
    rows: usize,
    mut chaos: impl FnMut(i64),
) -> i64 {
    for b in 0..batches {
        chaos(b);
        sink.write(&typed_batch(b * rows as i64, rows)).unwrap();
        sink.flush().unwrap();
        // Paced like a live source, so reconnects happen mid-run.
        std::thread::sleep(Duration::from_millis(2));
    }
    sink.close().unwrap();
    batches * rows as i64
}

fn assert_exactly_once(db: &Db, table: &str, n: i64) {
    let rows = db.query(&format!(
        "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {table}"
    ));
    let r = &rows[0];
    assert_eq!(
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, Option<i64>>(2),
            r.get::<_, Option<i64>>(3)
        ),
        (n, n, Some(0), Some(n - 1)),
        "{table}: rows, distinct ids, min, max"
    );
}

#[test]
fn killed_connections_are_retried_exactly_once() {
    let Some((url, db)) = server("killed") else {
        return;
    };
    let s = schema(&db, "killed");
    let app = format!("tapedeck_killed_{}", std::process::id());
    let mut sink = sink::open(&uri(
        &url,
        &format!("schema={s}&table=t&create_table=true&application_name={app}&retry_for=60s"),
    ))
    .unwrap();
    let killer = Db::connect(&url).unwrap();
    let mut kills = 0;
    let n = write_through(&mut sink, 400, 50, |b| {
        if b % 40 == 20 {
            let killed = killer.query(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"
            ));
            kills += killed[0].get::<_, i64>(0);
        }
    });
    assert!(kills >= 5, "only {kills} connections were terminated");
    assert_exactly_once(&db, &format!("{s}.t"), n);
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn a_server_restart_mid_run_loses_nothing_and_duplicates_nothing() {
    let Some(cluster) = pg_cluster::Cluster::start("server_restart") else {
        return;
    };
    let url = cluster.url();
    let db = Db::connect(&url).unwrap();
    let ((n, behind_seen, rows), events) = common::capture_events(|| {
        let mut sink = sink::open(&uri(
            &url,
            "table=t&create_table=true&retry_for=60s&connect_timeout=2s",
        ))
        .unwrap();
        let mut behind_seen = 0;
        let mut n = 0i64;
        for b in 0..300i64 {
            if b == 100 {
                cluster.stop("fast");
            }
            if b == 200 {
                // A crash this time: the asynchronous commits since the last synchronous one
                // are gone from the server, and the sink writes them again.
                cluster.stop("immediate");
                cluster.start_again();
            }
            sink.write(&typed_batch(n, 40)).unwrap();
            n += 40;
            sink.flush().unwrap();
            if sink.stats().pending > 0 {
                behind_seen += 1;
            }
            if b == 149 {
                assert!(
                    sink.stats().pending >= 40 * 49,
                    "rows are held while the server is down"
                );
                cluster.start_again();
            }
        }
        sink.close().unwrap();
        (n, behind_seen, sink.stats().rows)
    });
    assert!(
        behind_seen >= 40,
        "the sink reported being behind only {behind_seen} times"
    );
    assert_eq!(rows, n as u64);
    assert!(
        events
            .iter()
            .any(|e| e.contains("writing those rows again")),
        "the crash did not make the sink write lost commits again: {events:#?}"
    );
    drop(db);
    let db = Db::connect(&url).unwrap();
    assert_exactly_once(&db, "public.t", n);
}

#[test]
fn a_plain_uri_creates_the_table_and_create_table_false_insists_on_one() {
    let Some((url, db)) = server("plain_uri") else {
        return;
    };
    let s = schema(&db, "plain_uri");
    // No create_table in the URI: the missing table is created, as SQLite does.
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=fresh"))).unwrap();
    sink.write(&typed_batch(0, 5)).unwrap();
    sink.close().unwrap();
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.fresh")), 5);
    // create_table=false insists on an existing table.
    let mut sink = sink::open(&uri(
        &url,
        &format!("schema={s}&table=absent&create_table=false"),
    ))
    .unwrap();
    let e = sink.write(&typed_batch(0, 1)).unwrap_err();
    assert!(matches!(e, Error::MissingTable { .. }), "{e:?}");
    sink.close().unwrap();
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn a_run_that_fails_before_writing_leaves_no_cursor_row() {
    let Some((url, db)) = server("no_cursor_row") else {
        return;
    };
    let s = schema(&db, "no_cursor_row");
    let rows = |db: &Db| db.count(&format!("SELECT count(*) FROM {s}.tapedeck_cursor"));
    // The first batch is refused (no table under create_table=false).
    let mut sink = sink::open(&uri(
        &url,
        &format!("schema={s}&table=absent&create_table=false"),
    ))
    .unwrap();
    sink.write(&typed_batch(0, 3)).unwrap_err();
    sink.close().unwrap();
    assert_eq!(
        rows(&db),
        0,
        "a run refused at its first batch left its row"
    );
    // The first flush is refused by the server's types (rolled back).
    db.exec(&format!("CREATE TABLE {s}.small (id smallint)"));
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=small"))).unwrap();
    sink.write(&batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![1_000_000])) as ArrayRef,
    )]))
    .unwrap();
    sink.flush().unwrap_err();
    let _ = sink.close();
    assert_eq!(rows(&db), 0, "a run whose first flush failed left its row");
    // A sink dropped without writing (the next sink failed to open).
    drop(sink::open(&uri(&url, &format!("schema={s}&table=small"))).unwrap());
    assert_eq!(rows(&db), 0);
    // A run that commits keeps its row.
    let mut sink = sink::open(&uri(&url, &format!("schema={s}&table=small"))).unwrap();
    sink.write(&batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![7])) as ArrayRef,
    )]))
    .unwrap();
    sink.close().unwrap();
    assert_eq!(rows(&db), 1);
    assert_eq!(
        db.count(&format!(
            "SELECT flushes FROM {s}.tapedeck_cursor WHERE target_table = '{s}.small'"
        )),
        1
    );
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

/// A tape in `dir` holding `n` rows `id` (from `from`); returns it and its end.
fn tape(dir: &std::path::Path, from: i64, n: i64) -> (tapedeck::deliver::TapeRef, u64) {
    let w = tapedeck::tape::TapeWriter::open(
        dir,
        tapedeck::tape::TapeOptions {
            fsync: tapedeck::tape::FsyncPolicy::Never,
            ..tapedeck::tape::TapeOptions::default()
        },
    )
    .unwrap();
    w.append(&batch(vec![(
        "id",
        Arc::new(Int64Array::from_iter_values(from..from + n)) as ArrayRef,
    )]))
    .unwrap();
    let tape = tapedeck::deliver::TapeRef {
        dir: dir.to_path_buf(),
        id: w.id().to_string(),
    };
    let end = w.next_seq();
    w.close().unwrap();
    (tape, end)
}

fn start_delivery(
    tape: &tapedeck::deliver::TapeRef,
    end: u64,
    uri: &str,
) -> tapedeck::deliver::Delivery {
    let spec = sink::parse_unchecked(uri).unwrap();
    tapedeck::deliver::Delivery::start(
        tape.clone(),
        vec![(uri.to_string(), spec)],
        tapedeck::deliver::TapeEnd::Fixed(end),
        &tapedeck::deliver::DeliveryOptions::default(),
    )
    .unwrap()
}

#[test]
fn a_delivery_that_fails_before_committing_leaves_no_cursor_row() {
    let Some((url, db)) = server("delivery_no_row") else {
        return;
    };
    let s = schema(&db, "delivery_no_row");
    let dir = tempfile::tempdir().unwrap();
    let (t, end) = tape(&dir.path().join("tape"), 0, 40);
    let refused = uri(&url, &format!("schema={s}&table=t&create_table=false"));
    let st = start_delivery(&t, end, &refused).finish(end).pop().unwrap();
    assert_eq!(st.state, "failed", "{st:?}");
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM {s}.tapedeck_cursor")),
        0,
        "the failed delivery left its cursor row"
    );
    let st = start_delivery(&t, end, &uri(&url, &format!("schema={s}&table=t")))
        .finish(end)
        .pop()
        .unwrap();
    assert_eq!((st.state.as_str(), st.cursor), ("done", Some(40)), "{st:?}");
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.t")), 40);
    assert_eq!(
        db.count(&format!(
            "SELECT tape_seq FROM {s}.tapedeck_cursor WHERE sink LIKE 'tape:%'"
        )),
        40
    );
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn two_tapes_delivering_into_one_new_table_at_once_cannot_both_get_in() {
    let Some((url, db)) = server("two_tapes_race") else {
        return;
    };
    for round in 0..3 {
        let s = schema(&db, "two_tapes_race");
        let target = uri(&url, &format!("schema={s}&table=t"));
        let dir = tempfile::tempdir().unwrap();
        let (a, end_a) = tape(&dir.path().join("a"), 0, 300);
        let (b, end_b) = tape(&dir.path().join("b"), 1000, 200);
        // Both open before either commits: each sees a table no tape holds yet.
        let da = start_delivery(&a, end_a, &target);
        let db_ = start_delivery(&b, end_b, &target);
        let sa = da.finish(end_a).pop().unwrap();
        let sb = db_.finish(end_b).pop().unwrap();
        let states = [sa.state.as_str(), sb.state.as_str()];
        assert!(
            states == ["done", "failed"] || states == ["failed", "done"],
            "round {round}: {sa:?} {sb:?}"
        );
        let (winner, loser) = if sa.state == "done" {
            (&sa, &sb)
        } else {
            (&sb, &sa)
        };
        let e = loser.error.clone().unwrap_or_default();
        assert!(e.contains("already holds rows delivered from tape"), "{e}");
        let n = db.count(&format!("SELECT count(*) FROM {s}.t"));
        assert_eq!(Some(n as u64), winner.cursor, "round {round}");
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {s}.tapedeck_cursor")),
            1,
            "round {round}"
        );
        db.exec(&format!("DROP SCHEMA {s} CASCADE"));
    }
}

/// Waits (up to 20 s) until a backend of `app` waits on a lock other than `not` (a pid);
/// returns its pid.
fn opener_waiting_on_lock(db: &Db, app: &str, not: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = db.query(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{app}' \
             AND wait_event_type = 'Lock' AND pid <> {not}"
        ));
        if let Some(row) = rows.first() {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the sink's open never waited on the table's lock (application_name {app})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A table whose columns the sink's open cannot read while another session holds an ACCESS
/// EXCLUSIVE lock on it (reading a column default locks the table).
fn lockable_table(db: &Db, s: &str) {
    db.exec(&format!(
        "CREATE TABLE {s}.t (id bigint, at timestamptz DEFAULT now())"
    ));
}

#[test]
fn a_connection_lost_while_the_sink_opens_is_a_connect_error_a_delivery_retries() {
    let Some((url, db)) = server("lost_at_open") else {
        return;
    };
    let s = schema(&db, "lost_at_open");
    lockable_table(&db, &s);
    let app = format!("tapedeck_lost_at_open_{}", std::process::id());
    let target = uri(
        &url,
        &format!("schema={s}&table=t&application_name={app}&connect_timeout=2s"),
    );
    let password = url.parse::<tokio_postgres::Config>().ok().and_then(|c| {
        c.get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    });
    let locker = Db::connect(&url).unwrap();
    let killer = Db::connect(&url).unwrap();

    // A plain open, its backend terminated while it reads the table's columns.
    locker.exec(&format!("BEGIN; LOCK TABLE {s}.t IN ACCESS EXCLUSIVE MODE"));
    let opening = {
        let target = target.clone();
        std::thread::spawn(move || sink::open(&target).err())
    };
    let pid = opener_waiting_on_lock(&killer, &app, 0);
    killer.exec(&format!("SELECT pg_terminate_backend({pid})"));
    let e = opening
        .join()
        .unwrap()
        .expect("the open succeeded although its connection was terminated");
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(
        text.contains("57P01") && text.contains(&format!("{s}.t")),
        "{text}"
    );
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        assert!(!text.contains(&p), "the password shows: {text}");
    }
    locker.exec("ROLLBACK");

    // A delivery: the open is terminated the same way, retried, blocks again, and succeeds
    // once the lock is released.
    let dir = tempfile::tempdir().unwrap();
    let (t, end) = tape(&dir.path().join("tape"), 0, 40);
    locker.exec(&format!("BEGIN; LOCK TABLE {s}.t IN ACCESS EXCLUSIVE MODE"));
    let spec = sink::parse_unchecked(&target).unwrap();
    let delivery = tapedeck::deliver::Delivery::start(
        t.clone(),
        vec![(target.clone(), spec)],
        tapedeck::deliver::TapeEnd::Fixed(end),
        &tapedeck::deliver::DeliveryOptions {
            open_retry_for: Duration::from_secs(30),
            ..tapedeck::deliver::DeliveryOptions::default()
        },
    )
    .unwrap();
    let first = opener_waiting_on_lock(&killer, &app, 0);
    killer.exec(&format!("SELECT pg_terminate_backend({first})"));
    // The retry opens a new connection and waits on the lock again.
    opener_waiting_on_lock(&killer, &app, first);
    let status = delivery.statuses().pop().unwrap();
    assert_eq!(status.state, "reconnecting", "{status:?}");
    locker.exec("COMMIT");
    let st = delivery.finish(end).pop().unwrap();
    assert_eq!((st.state.as_str(), st.cursor), ("done", Some(40)), "{st:?}");
    assert_eq!(
        db.count(&format!("SELECT count(DISTINCT id) FROM {s}.t")),
        40
    );
    assert_eq!(db.count(&format!("SELECT count(*) FROM {s}.t")), 40);
    db.exec(&format!("DROP SCHEMA {s} CASCADE"));
}

#[test]
fn a_server_stopped_while_a_delivery_opens_its_sink_is_retried_until_it_is_back() {
    let Some(cluster) = pg_cluster::Cluster::start("stopped_at_open") else {
        return;
    };
    let url = cluster.url();
    let db = Db::connect(&url).unwrap();
    lockable_table(&db, "public");
    let app = "tapedeck_stopped_at_open";
    let target = uri(
        &url,
        &format!("table=t&application_name={app}&connect_timeout=2s"),
    );
    // The delivery's open blocks reading the table's columns; the server is stopped (`pg_ctl
    // -m fast`: every backend gets 57P01) and started again.
    db.exec("BEGIN; LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE");
    let dir = tempfile::tempdir().unwrap();
    let (t, end) = tape(&dir.path().join("tape"), 0, 25);
    let delivery = start_delivery(&t, end, &target);
    let watcher = Db::connect(&url).unwrap();
    opener_waiting_on_lock(&watcher, app, 0);
    cluster.stop("fast");
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_again();
    let st = delivery.finish(end).pop().unwrap();
    assert_eq!((st.state.as_str(), st.cursor), ("done", Some(25)), "{st:?}");
    let db = Db::connect(&url).unwrap();
    assert_eq!(db.count("SELECT count(DISTINCT id) FROM public.t"), 25);
    assert_eq!(db.count("SELECT count(*) FROM public.t"), 25);
}
