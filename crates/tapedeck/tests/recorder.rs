//! The library's front door, `Recorder`: the same results as `tapedeck record`, from a program.

use tapedeck::pipe::PipeOptions;
use tapedeck::record::Row;
use tapedeck::recorder::Recorder;

fn rows(from: i64, n: i64) -> Vec<Row> {
    (from..from + n)
        .map(|i| Row::new().with("n", i).with("v", i as f64 * 0.5))
        .collect()
}

fn csv_ns(path: &std::path::Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn without_a_tape_rows_go_straight_to_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    let mut rec = Recorder::builder()
        .sink(&format!("csv:{}", csv.display()))
        .sink(&format!("jsonl:{}", dir.path().join("a.jsonl").display()))
        .open()
        .unwrap();
    rec.write_rows(rows(0, 50)).unwrap();
    rec.write_rows(rows(50, 50)).unwrap();
    assert_eq!(rec.acknowledged(), None);
    let s = rec.finish().unwrap();
    assert_eq!(s.rows, 100);
    assert!(s.tape.is_none() && s.deliveries.is_empty());
    assert_eq!(s.sinks.len(), 2);
    assert!(s.sinks.iter().all(|k| k.rows == 100 && k.error.is_none()));
    assert_eq!(csv_ns(&csv), (0..100).collect::<Vec<_>>());
}

#[test]
fn with_a_tape_every_sink_gets_every_row_once_across_two_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let csv = dir.path().join("a.csv");
    let db = dir.path().join("lab.db");
    for run in 0..2 {
        let mut rec = Recorder::builder()
            .tape(&tape)
            .sink(&format!("csv:{}", csv.display()))
            .sink(&format!("sqlite:{}?table=t", db.display()))
            .open()
            .unwrap();
        rec.write_rows(rows(run * 100, 100)).unwrap();
        let s = rec.finish().unwrap();
        let t = s.tape.unwrap();
        assert_eq!((t.first_seq, t.acknowledged), (run as u64 * 100, 100));
        assert!(
            s.deliveries
                .iter()
                .all(|d| d.state == "done" && d.cursor == Some((run as u64 + 1) * 100)),
            "{:?}",
            s.deliveries
        );
    }
    assert_eq!(csv_ns(&csv), (0..200).collect::<Vec<_>>());
    let c = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row("SELECT count(DISTINCT n) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 200);
}

#[test]
fn run_reads_a_source_through_the_pipe_and_finishes_the_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    let rec = Recorder::builder()
        .tape(dir.path().join("tape"))
        .sink(&format!("csv:{}", csv.display()))
        .open()
        .unwrap();
    let src = tapedeck::source::open("sim:alicat?n=2500").unwrap();
    let (report, summary) = rec.run(src, &PipeOptions::default(), &|| false);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.rows, 2500);
    assert_eq!(summary.tape.map(|t| t.acknowledged), Some(2500));
    assert_eq!(summary.deliveries[0].cursor, Some(2500));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 2501);
}

#[test]
fn a_bad_sink_uri_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let tape = dir.path().join("tape");
    let err = Recorder::builder()
        .tape(&tape)
        .sink(&format!("csv:{}", dir.path().join("a.csv").display()))
        .sink("nosuch:x")
        .open()
        .unwrap_err();
    assert!(err.is_usage(), "{err}");
    assert!(!tape.exists());
    assert!(!dir.path().join("a.csv").exists());
}
