//! The journal: rollback, torn tails, damage, the writer lock, snapshots and rotation, group
//! commit, and crashes at random points of the simulated disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use tapedeck::Error;
use tapedeck::journal::{Journal, JournalFollower, JournalFormat, JournalOptions};
use tapedeck::storage::{MemStorage, Storage};
use tapedeck::tape::FsyncPolicy;

type Map = BTreeMap<String, i64>;

fn always() -> JournalOptions {
    JournalOptions {
        fsync: FsyncPolicy::Always,
        ..JournalOptions::default()
    }
}

fn open_mem(storage: &MemStorage, options: JournalOptions) -> tapedeck::Result<Journal<Map>> {
    Journal::open_storage(Arc::new(storage.clone()), "j", options, Map::new)
}

/// The state after `k` transactions `set key{i} = i` (i < k).
fn prefix(k: usize) -> Map {
    (0..k).map(|i| (format!("key{i}"), i as i64)).collect()
}

#[test]
fn an_error_or_a_panic_rolls_back_state_and_file() {
    let storage = MemStorage::new();
    let j = open_mem(&storage, always()).unwrap();
    j.transaction("one", |s| {
        s.insert("a".into(), 1);
        Ok::<_, String>(())
    })
    .unwrap();
    let bytes = storage.bytes("j").unwrap();
    let e = j
        .transaction("fails", |s| {
            s.insert("b".into(), 2);
            Err::<(), _>("the device did not answer")
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::JournalRolledBack { .. }) && e.to_string().contains("did not answer"),
        "{e}"
    );
    let e = j
        .transaction("panics", |s| -> Result<(), String> {
            s.insert("c".into(), 3);
            panic!("a bug in the closure")
        })
        .unwrap_err();
    assert!(e.to_string().contains("a bug in the closure"), "{e}");
    assert_eq!(storage.bytes("j").unwrap(), bytes, "the file changed");
    assert_eq!(j.state().unwrap(), BTreeMap::from([("a".to_string(), 1)]));
    // A change that does not apply (no parent) rolls back too.
    assert!(j.set("deep", "/no/such/parent", &1).is_err());
    assert_eq!(storage.bytes("j").unwrap(), bytes);
}

const FORMATS: [JournalFormat; 2] = [JournalFormat::JsonLines, JournalFormat::MessagePack];

/// A journal in `storage` (file `j`) with `n` sets, and the file's length after each record
/// (the first: after the opening snapshot).
fn written(storage: &MemStorage, format: JournalFormat, n: usize) -> Vec<usize> {
    let j = open_mem(storage, JournalOptions { format, ..always() }).unwrap();
    let mut ends = vec![storage.bytes("j").unwrap().len()];
    for i in 0..n {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
        ends.push(storage.bytes("j").unwrap().len());
    }
    ends
}

#[test]
fn every_truncation_opens_with_the_torn_tail_cut_and_a_prefix_of_the_state() {
    for format in FORMATS {
        let storage = MemStorage::new();
        let ends = written(&storage, format, 6);
        let full = storage.bytes("j").unwrap();
        // Record boundaries: a cut there is a clean file, anywhere else a torn tail.
        for cut in ends[0]..=full.len() {
            let s = MemStorage::new();
            s.create_new("j").unwrap();
            s.append("j", &full[..cut]).unwrap();
            s.sync("j").unwrap();
            let j =
                open_mem(&s, always()).unwrap_or_else(|e| panic!("{format:?} cut at {cut}: {e}"));
            let whole = ends.iter().filter(|e| **e <= cut).count();
            assert_eq!(
                j.state().unwrap(),
                prefix(whole - 1),
                "{format:?} cut at {cut}"
            );
            let torn = j.recovery().torn_tail;
            if ends.contains(&cut) {
                assert_eq!(torn, None, "{format:?} cut at {cut}");
            } else {
                let start = ends[whole - 1] as u64;
                assert_eq!(
                    torn,
                    Some((start, cut as u64 - start)),
                    "{format:?} cut at {cut}"
                );
                assert_eq!(s.bytes("j").unwrap().len() as u64, start, "not cut back");
            }
            // And it goes on from there, in its own format.
            j.set("again", "/again", &1).unwrap();
            drop(j);
            assert_eq!(open_mem(&s, always()).unwrap().state().unwrap()["again"], 1);
            let head = s.bytes("j").unwrap();
            assert_eq!(
                head.starts_with(b"TDJ\x00MP1\n"),
                format == JournalFormat::MessagePack,
                "{format:?}"
            );
        }
    }
}

#[test]
fn damage_in_the_middle_is_named_and_read_only_reads_up_to_it() {
    for format in FORMATS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.journal");
        let storage = MemStorage::new();
        let ends = written(&storage, format, 5);
        let mut bytes = storage.bytes("j").unwrap();
        // Record 3 (the third set) gets a flipped bit inside it, past its header.
        let at = ends[2] + 20;
        bytes[at] ^= 0x04;
        std::fs::write(&path, &bytes).unwrap();
        let e = Journal::<Map>::open(&path, always()).unwrap_err();
        match &e {
            Error::JournalDamaged { record, offset, .. } => {
                assert_eq!((*record, *offset), (3, ends[2] as u64), "{format:?}: {e}");
            }
            other => panic!("expected JournalDamaged, got {other}"),
        }
        assert!(e.to_string().contains("CRC"), "{e}");
        // Nothing was cut: the file is as it was.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let ro = Journal::<Map>::open_read_only(&path).unwrap();
        assert_eq!(ro.state().unwrap(), prefix(2));
        // The whole history read is an error naming the record, not a short history.
        let e = ro.all_records().unwrap_err();
        assert!(
            matches!(e, Error::JournalDamaged { offset, .. } if offset == ends[2] as u64),
            "{e}"
        );
    }
}

#[test]
fn a_message_pack_journal_keeps_its_format_and_a_json_one_its_own() {
    let storage = MemStorage::new();
    let mp = JournalOptions {
        format: JournalFormat::MessagePack,
        ..always()
    };
    let j = open_mem(
        &storage,
        JournalOptions {
            snapshot_every: Some(3),
            ..mp.clone()
        },
    )
    .unwrap();
    for i in 0..10 {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
    }
    drop(j);
    // Rotated files and the live one are all MessagePack; reopened without saying so, too.
    for name in storage.list().unwrap() {
        assert!(
            storage.bytes(&name).unwrap().starts_with(b"TDJ\x00MP1\n"),
            "{name}"
        );
    }
    let j = open_mem(&storage, always()).unwrap();
    assert_eq!(j.state().unwrap(), prefix(10));
    assert_eq!(j.all_records().unwrap().len() as u64, j.next_seq());
    // A JSON-lines journal opened with the MessagePack option stays JSON lines.
    let json = MemStorage::new();
    written(&json, JournalFormat::JsonLines, 2);
    let j = open_mem(&json, mp).unwrap();
    j.set("set", "/key2", &2).unwrap();
    drop(j);
    let text = String::from_utf8(json.bytes("j").unwrap()).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn snapshots_by_bytes_keep_the_live_file_small() {
    let storage = MemStorage::new();
    let options = JournalOptions {
        snapshot_bytes: Some(4096),
        ..always()
    };
    let j = open_mem(&storage, options).unwrap();
    for i in 0..500 {
        j.set("set", &format!("/key{}", i % 20), &(i as i64))
            .unwrap();
        let live = storage.bytes("j").unwrap().len();
        // The live file: a snapshot of at most 20 keys and records up to the limit, plus one.
        assert!(live <= 4096 + 1024, "{live} bytes after {i}");
    }
    assert!(storage.list().unwrap().len() > 5);
    let all = j.all_records().unwrap();
    assert_eq!(all.len() as u64, j.next_seq());
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

#[test]
fn a_follower_sees_every_record_once_in_order_across_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.journal");
    let options = JournalOptions {
        snapshot_every: Some(7),
        ..always()
    };
    let j: Journal<Map> = Journal::open(&path, options).unwrap();
    let mut follower = JournalFollower::new(&path, 0).unwrap();
    // Another polls after every record (its next record is often a new file's snapshot).
    let mut eager = JournalFollower::new(&path, 0).unwrap();
    let (mut seen, mut seen_eagerly) = (Vec::new(), Vec::new());
    for i in 0..60 {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
        if i % 5 == 0 {
            seen.extend(follower.poll(1000).unwrap());
        }
        seen_eagerly.extend(eager.poll(1000).unwrap());
    }
    seen.extend(follower.poll(1000).unwrap());
    let seqs: Vec<u64> = seen.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..j.next_seq()).collect::<Vec<_>>());
    assert_eq!(seen_eagerly, seen);
    assert!(follower.poll(1000).unwrap().is_empty());
    // A record being appended (a torn tail, as a reader sees one mid-write) is not returned
    // and is no error; the records after it are, once written.
    drop(j);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"0123abcd\t{\"seq\":").unwrap();
    drop(f);
    assert!(follower.poll(1000).unwrap().is_empty());
    let j: Journal<Map> = Journal::open(&path, always()).unwrap();
    j.set("set", "/after", &1).unwrap();
    let after = follower.poll(1000).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].seq, j.next_seq() - 1);
}

#[test]
fn history_read_one_record_at_a_time_survives_deleted_rotated_files() {
    let storage = MemStorage::new();
    let options = JournalOptions {
        snapshot_every: Some(5),
        ..always()
    };
    let j = open_mem(&storage, options).unwrap();
    for i in 0..23 {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
    }
    let all: Vec<_> = j.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len() as u64, j.next_seq());
    // Someone deletes the oldest history file: the history starts at the next snapshot, and
    // the state as of any later record is still right.
    let oldest = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("j."))
        .min()
        .unwrap();
    storage.remove(&oldest).unwrap();
    let rest: Vec<_> = j.records().collect::<Result<_, _>>().unwrap();
    assert!(
        rest[0].snapshot.is_some() && rest[0].seq > 0,
        "{:?}",
        rest[0]
    );
    assert_eq!(rest.last(), all.last());
    let last = all.last().unwrap().seq;
    assert_eq!(
        j.value_at(last).unwrap().unwrap(),
        serde_json::to_value(prefix(23)).unwrap()
    );
}

#[test]
fn a_second_writer_is_told_the_holders_pid_and_readers_are_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.journal");
    let j: Journal<Map> = Journal::open(&path, always()).unwrap();
    j.set("set", "/a", &1).unwrap();
    let e = Journal::<Map>::open(&path, always()).unwrap_err();
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
    let ro = Journal::<Map>::open_read_only(&path).unwrap();
    assert_eq!(ro.state().unwrap()["a"], 1);
    assert!(
        ro.set("nope", "/b", &2).is_err(),
        "a read-only journal wrote"
    );
}

#[test]
fn snapshots_start_a_new_file_and_keep_the_history_readable() {
    let storage = MemStorage::new();
    let options = JournalOptions {
        snapshot_every: Some(10),
        ..always()
    };
    let j = open_mem(&storage, options.clone()).unwrap();
    for i in 0..25 {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
    }
    assert_eq!(
        j.next_seq(),
        28,
        "25 sets, the first snapshot and two later ones"
    );
    drop(j);
    let names = storage.list().unwrap();
    let rotated: Vec<&String> = names.iter().filter(|n| n.starts_with("j.")).collect();
    assert_eq!(rotated.len(), 2, "{names:?}");
    let j = open_mem(&storage, options).unwrap();
    assert_eq!(j.state().unwrap(), prefix(25));
    // Opening replays only the live file: a snapshot and what came after it.
    let history = j.history().unwrap();
    assert_eq!(history[0].action, "snapshot");
    assert!(history.len() <= 11, "{}", history.len());
    // A switch interrupted after the old file was renamed is finished by the next open.
    drop(j);
    let live = storage.bytes("j").unwrap();
    storage.rename("j", "j.next").unwrap();
    let j = open_mem(&storage, always()).unwrap();
    assert!(j.recovery().switch_repaired);
    assert_eq!(storage.bytes("j").unwrap(), live);
    assert_eq!(j.state().unwrap(), prefix(25));
}

#[test]
fn threads_committing_at_once_share_fsyncs() {
    let storage = MemStorage::new();
    let j = Arc::new(open_mem(&storage, always()).unwrap());
    let before = storage.syncs();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    j.set("set", &format!("/t{t}_{i}"), &(i as i64)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = storage.syncs() - before;
    assert_eq!(j.state().unwrap().len(), 1600);
    assert!(syncs <= 1600, "{syncs} fsyncs for 1600 transactions");
    drop(j);
    assert_eq!(
        open_mem(&storage, always()).unwrap().state().unwrap().len(),
        1600
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// After a power loss at any point, the journal opens to the state after some prefix of
    /// the transactions, and that prefix holds every transaction made durable (`sync`, as a
    /// commit under `fsync=always` is).
    #[test]
    fn a_power_loss_keeps_a_prefix_with_every_durable_transaction(
        n in 1usize..30,
        synced_upto in 0usize..30,
        snapshot_every in prop_oneof![Just(None), (2u64..8).prop_map(Some)],
        message_pack in any::<bool>(),
        seed in any::<u32>(),
        zeroed in any::<bool>(),
    ) {
        let storage = MemStorage::new();
        // No fsync of its own: only `sync` makes records durable, so the rest can be torn.
        let options = JournalOptions {
            fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
            snapshot_every,
            format: if message_pack { JournalFormat::MessagePack } else { JournalFormat::JsonLines },
            ..JournalOptions::default()
        };
        let j = open_mem(&storage, options.clone()).unwrap();
        let mut durable = 0;
        for i in 0..n {
            j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
            if i < synced_upto {
                j.sync().unwrap();
                durable = i + 1;
            }
        }
        // No fsync on drop: the machine loses power here.
        std::mem::forget(j);
        let mut rng = seed.max(1);
        let choose = move |k: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            if k == 0 { 0 } else { rng as usize % (k + 1) }
        };
        if zeroed { storage.crash_zeroed(choose) } else { storage.crash(choose) }
        let j = open_mem(&storage, options).unwrap();
        let state = j.state().unwrap();
        let k = state.len();
        prop_assert!(k >= durable, "{k} transactions survived, {durable} were durable");
        prop_assert!(k <= n);
        prop_assert_eq!(state, prefix(k));
    }
}

#[test]
fn a_record_that_cannot_be_written_leaves_the_state_as_it_was() {
    use tapedeck::storage::{Fault, Op};
    for fault in [Fault::NoSpace, Fault::Eio, Fault::ShortWrite] {
        let storage = MemStorage::new();
        let j: Journal<serde_json::Value> = Journal::open_storage(
            Arc::new(storage.clone()),
            "j",
            always(),
            || serde_json::json!({"a": 1, "list": [1, 2]}),
        )
        .unwrap();
        storage.fail_nth(Op::Append, 0, fault);
        assert!(j.set("replace", "/a", &2).is_err(), "{fault:?}");
        assert_eq!(
            j.value(),
            serde_json::json!({"a": 1, "list": [1, 2]}),
            "{fault:?}"
        );
        // The writer stops after a failed write; what was committed is kept.
        assert!(j.set("later", "/b", &3).is_err());
        drop(j);
        storage.clear_faults();
        let j: Journal<serde_json::Value> =
            Journal::open_storage(Arc::new(storage.clone()), "j", always(), || {
                serde_json::Value::Null
            })
            .unwrap();
        assert_eq!(
            j.value(),
            serde_json::json!({"a": 1, "list": [1, 2]}),
            "{fault:?}"
        );
        // An insert into an array is undone by removing it, not by writing the old element back.
        storage.fail_nth(Op::Append, 0, fault);
        assert!(j.set("insert", "/list/0", &0).is_err());
        assert_eq!(
            j.value(),
            serde_json::json!({"a": 1, "list": [1, 2]}),
            "{fault:?}"
        );
    }
}

#[test]
fn the_state_as_of_any_record_or_time_across_rotated_files() {
    let storage = MemStorage::new();
    let options = JournalOptions {
        snapshot_every: Some(4),
        ..always()
    };
    let j = open_mem(&storage, options).unwrap();
    let mut times = Vec::new();
    for i in 0..10 {
        j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
        times.push(j.history().unwrap().last().unwrap().time);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let all = j.all_records().unwrap();
    let sets: Vec<u64> = all
        .iter()
        .filter(|r| r.action == "set")
        .map(|r| r.seq)
        .collect();
    assert_eq!(sets.len(), 10, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    for (i, seq) in sets.iter().enumerate() {
        let v = j.value_at(*seq).unwrap().unwrap();
        let want = serde_json::to_value(prefix(i + 1)).unwrap();
        assert_eq!(v, want, "after record {seq}");
        let t = j.value_as_of(times[i]).unwrap().unwrap();
        assert_eq!(t, want, "as of the time of set {i}");
    }
    assert_eq!(j.value_as_of(all[0].time - 1).unwrap(), None);
    assert_eq!(j.value_at(j.next_seq()).unwrap(), None);
}

#[test]
fn migrations_run_once_in_order_as_records_and_a_failing_one_changes_nothing() {
    use tapedeck::journal::Migration;
    fn nest(v: &mut serde_json::Value) -> Result<(), String> {
        let gain = v.get("gain").cloned().ok_or("no gain")?;
        *v = serde_json::json!({"gains": {"ai0": gain}});
        Ok(())
    }
    fn add_unit(v: &mut serde_json::Value) -> Result<(), String> {
        v["unit"] = serde_json::json!("V");
        Ok(())
    }
    fn refuse(_: &mut serde_json::Value) -> Result<(), String> {
        Err("cannot convert".into())
    }
    let storage = MemStorage::new();
    let open = |migrations: Vec<Migration>| {
        Journal::<serde_json::Value>::open_storage(
            Arc::new(storage.clone()),
            "j",
            JournalOptions {
                migrations,
                ..always()
            },
            || serde_json::json!({}),
        )
    };
    let j = open(Vec::new()).unwrap();
    j.set("set", "/gain", &2.5).unwrap();
    assert_eq!(j.version(), 0);
    drop(j);
    let migrations = vec![
        Migration {
            version: 2,
            name: "add unit",
            apply: add_unit,
        },
        Migration {
            version: 1,
            name: "nest gains",
            apply: nest,
        },
    ];
    let j = open(migrations.clone()).unwrap();
    assert_eq!(j.version(), 2);
    assert_eq!(
        j.value(),
        serde_json::json!({"gains": {"ai0": 2.5}, "unit": "V"})
    );
    let actions: Vec<String> = j.history().unwrap().into_iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        ["open", "set", "migrate nest gains", "migrate add unit"]
    );
    drop(j);
    // Opened again: nothing to run.
    let j = open(migrations.clone()).unwrap();
    assert_eq!(j.history().unwrap().len(), 4);
    drop(j);
    // A failing migration stops the opening and writes nothing.
    let before = storage.bytes("j").unwrap();
    let mut more = migrations;
    more.push(Migration {
        version: 3,
        name: "refuse",
        apply: refuse,
    });
    let e = open(more).unwrap_err().to_string();
    assert!(e.contains("refuse") && e.contains("cannot convert"), "{e}");
    assert_eq!(storage.bytes("j").unwrap(), before);
    // A new journal starts at the newest version: nothing runs.
    let fresh = MemStorage::new();
    let j = Journal::<serde_json::Value>::open_storage(
        Arc::new(fresh),
        "j",
        JournalOptions {
            migrations: vec![Migration {
                version: 1,
                name: "nest gains",
                apply: nest,
            }],
            ..always()
        },
        || serde_json::json!({"gains": {}}),
    )
    .unwrap();
    assert_eq!((j.version(), j.history().unwrap().len()), (1, 1));
}

#[test]
fn a_crash_while_the_journal_was_created_starts_it_anew() {
    for format in FORMATS {
        let storage = MemStorage::new();
        drop(open_mem(&storage, JournalOptions { format, ..always() }).unwrap());
        let whole = storage.bytes("j").unwrap();
        // The creation writes `j.new`, fsyncs it, then renames it: a crash before the rename
        // leaves `j.new` (any prefix of it) and no `j`; an older version's in-place creation
        // could leave an empty `j`.
        for cut in 0..=whole.len() {
            let s = MemStorage::new();
            s.put("j.new", whole[..cut].to_vec());
            if cut == 0 {
                s.put("j", Vec::new());
            }
            let j = open_mem(&s, always()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(j.state().unwrap(), Map::new(), "cut at {cut}");
            assert!(s.bytes("j.new").is_none(), "left over");
            j.set("set", "/a", &1).unwrap();
            drop(j);
            assert_eq!(open_mem(&s, always()).unwrap().state().unwrap()["a"], 1);
        }
    }
    // An older version created `j` in place: a crash left its first line unfinished (no
    // newline, no history). That is an unfinished creation too.
    let storage = MemStorage::new();
    drop(open_mem(&storage, always()).unwrap());
    let whole = storage.bytes("j").unwrap();
    for cut in 1..whole.len() {
        let s = MemStorage::new();
        s.put("j", whole[..cut].to_vec());
        let j = open_mem(&s, always()).unwrap_or_else(|e| panic!("in place, cut at {cut}: {e}"));
        assert_eq!(j.state().unwrap(), Map::new());
        assert_eq!(
            j.recovery().torn_tail,
            Some((0, cut as u64)),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_damaged_first_snapshot_is_an_error_and_the_file_is_left_alone() {
    for format in FORMATS {
        let storage = MemStorage::new();
        let j = open_mem(
            &storage,
            JournalOptions {
                format,
                snapshot_every: Some(2),
                ..always()
            },
        )
        .unwrap();
        for i in 0..3 {
            j.set("set", &format!("/key{i}"), &(i as i64)).unwrap();
        }
        drop(j);
        // The live file now holds a snapshot and one record; flip a bit in the snapshot.
        let live = storage.bytes("j").unwrap();
        let at = if format == JournalFormat::MessagePack {
            8 + 20
        } else {
            20
        };
        storage.flip_bit("j", at, 1);
        let e = open_mem(&storage, always()).unwrap_err();
        assert!(matches!(e, Error::JournalDamaged { .. }), "{format:?}: {e}");
        let mut flipped = live.clone();
        flipped[at] ^= 1 << 1;
        assert_eq!(
            storage.bytes("j").unwrap(),
            flipped,
            "{format:?}: the file changed"
        );
        // A live file with nothing but a damaged snapshot is damage too, never started over.
        let one = storage.bytes("j").unwrap();
        let s = MemStorage::new();
        s.put("j", one[..first_record_end(&live, format)].to_vec());
        assert!(
            matches!(open_mem(&s, always()), Err(Error::JournalDamaged { .. })),
            "{format:?}"
        );
    }
}

/// Where the first record of a journal file ends.
fn first_record_end(bytes: &[u8], format: JournalFormat) -> usize {
    match format {
        JournalFormat::MessagePack => {
            let n = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
            8 + 12 + n
        }
        _ => bytes.iter().position(|b| *b == b'\n').unwrap() + 1,
    }
}

#[test]
fn after_a_failed_fsync_nothing_more_is_acknowledged() {
    use tapedeck::storage::{Fault, Op};
    let storage = MemStorage::new();
    let j = open_mem(&storage, always()).unwrap();
    j.set("set", "/a", &1).unwrap();
    storage.fail_nth(Op::Sync, 0, Fault::Eio);
    assert!(j.set("set", "/b", &2).is_err());
    // The fault is gone, but an fsync succeeding now would prove nothing: refused.
    storage.clear_faults();
    assert!(j.set("set", "/c", &3).is_err());
    assert!(j.sync().is_err());
    assert!(j.snapshot().is_err());
}

#[test]
fn an_append_at_the_end_of_an_array_is_undone_when_its_record_cannot_be_written() {
    use tapedeck::storage::{Fault, Op};
    let storage = MemStorage::new();
    let j: Journal<serde_json::Value> = Journal::open_storage(
        Arc::new(storage.clone()),
        "j",
        always(),
        || serde_json::json!({"list": [1, 2]}),
    )
    .unwrap();
    j.set("push", "/list/-", &3).unwrap();
    assert_eq!(j.value(), serde_json::json!({"list": [1, 2, 3]}));
    storage.fail_nth(Op::Append, 0, Fault::NoSpace);
    assert!(j.set("push", "/list/-", &4).is_err());
    assert_eq!(j.value(), serde_json::json!({"list": [1, 2, 3]}));
}
