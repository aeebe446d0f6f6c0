use super::*;
use crate::config::FsyncPolicy;
use crate::store::{CsvSink, Mark, encode_mark};

fn key() -> ChainKey {
    ChainKey::new([7; 32])
}

fn mark(name: &str, roll: &str) -> Vec<u8> {
    encode_mark(&Mark::present(
        attendance_protocol::StudentId::from_parts("CN", "D1", name, roll).expect("id"),
        "2026-11-23T09:00:00.000Z".parse().expect("ts"),
        "2026-11-23T10:00:00.000Z".parse().expect("ts"),
        None,
    ))
}

/// A file of four rows written by the sink with [`key`], checkpointed.
async fn written(dir: &Path) -> PathBuf {
    let path = dir.join("a.csv");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Never)
        .await
        .expect("open")
        .with_key(key());
    sink.append(&[mark("Ann", "1"), mark("Bob", "2")])
        .await
        .expect("append");
    sink.append(&[mark("Cat", "3"), mark("Dan", "4")])
        .await
        .expect("append");
    sink.checkpoint(CheckpointReason::SessionClose)
        .await
        .expect("checkpoint");
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

fn broken(path: &Path) -> Broken {
    verify(path, &key()).expect("readable").expect_err("broken")
}

#[tokio::test]
async fn a_written_file_verifies_with_its_count_and_head() {
    let dir = tempfile::tempdir().expect("dir");
    let path = written(dir.path()).await;
    let v = verify(&path, &key()).expect("readable").expect("sound");
    assert_eq!(v.rows, 4);
    assert_eq!(v.checkpoint.as_ref().map(|c| c.rows), Some(4));
    let last = lines(&path).pop().expect("a row");
    assert!(last.ends_with(&hex(&v.head)), "{last}");
    // Another key does not verify it.
    let other = verify(&path, &ChainKey::new([8; 32])).expect("readable");
    assert_eq!(other.expect_err("wrong key").line, 2);
}

#[tokio::test]
async fn an_edited_cell_breaks_the_chain_at_its_row() {
    let dir = tempfile::tempdir().expect("dir");
    let path = written(dir.path()).await;
    let mut l = lines(&path);
    l[3] = l[3].replace(",Present,", ",Late,");
    write(&path, &l);
    let b = broken(&path);
    assert_eq!(b.line, 4, "{b:?}");
    assert!(b.what.contains("edited"), "{b:?}");
}

#[tokio::test]
async fn a_deleted_row_two_swapped_rows_and_a_row_added_by_hand_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let path = written(dir.path()).await;
    let good = lines(&path);
    let mut deleted = good.clone();
    deleted.remove(2);
    write(&path, &deleted);
    assert_eq!(broken(&path).line, 3, "the row after the deleted one");
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    write(&path, &swapped);
    assert_eq!(broken(&path).line, 3);
    let mut added = good.clone();
    added.push("CN,D1,Eve,5,Present,2026-11-23T10:00:00.000Z,,,0,60,,".to_owned());
    write(&path, &added);
    let b = broken(&path);
    assert_eq!(b.line, 6, "{b:?}");
    assert!(b.what.contains("by hand"), "{b:?}");
}

#[tokio::test]
async fn deleting_the_last_rows_is_caught_by_the_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let path = written(dir.path()).await;
    let mut l = lines(&path);
    l.pop();
    write(&path, &l);
    let b = broken(&path);
    assert!(b.what.contains("1 row(s) missing at the end"), "{b:?}");
    // Without the checkpoints the shorter chain is valid: that is what they are for.
    std::fs::remove_file(checkpoints_path(&path)).expect("rm");
    assert_eq!(
        verify(&path, &key())
            .expect("readable")
            .expect("valid")
            .rows,
        3
    );
}

#[test]
fn a_v1_file_is_migrated_keeping_the_original_and_its_values() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("old.csv");
    std::fs::write(
        &path,
        "course,division,name,roll,status,marked_at,joined_at,client_addr\n\
         CN,D1,Ann,1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,10.0.0.1\n\
         CN,D1,\"Bob, Jr\",2,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,\n",
    )
    .expect("write");
    let e = verify(&path, &key()).expect_err("v1 is not verified");
    assert!(e.to_string().contains("attendanced migrate"), "{e}");
    assert_eq!(migrate(&path, &key()).expect("migrated"), 2);
    let v = verify(&path, &key()).expect("readable").expect("sound");
    assert_eq!(v.rows, 2);
    let l = lines(&path);
    assert!(l[1].starts_with(
        "CN,D1,Ann,1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,10.0.0.1,,,,"
    ));
    assert!(l[2].contains("\"Bob, Jr\""));
    let mut backup = path.as_os_str().to_owned();
    backup.push(".v1");
    assert!(
        std::fs::read_to_string(PathBuf::from(&backup))
            .expect("kept")
            .contains("Bob, Jr")
    );
    // A second migrate refuses: the file is of this version now.
    assert!(migrate(&path, &key()).is_err());
}
