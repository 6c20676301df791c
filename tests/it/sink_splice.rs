//! Splicing: a commit that closes versions held in a large data file copies the file's column
//! chunks as they are and encodes only `_effective_to` and `_is_current` again. The table must
//! read exactly as after a full rewrite, by dqetl and by the Python `deltalake` package, and
//! the spliced files must carry the Delta statistics delta-rs computes for their rows.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use dqetl::config::layout::LakeLayout;
use dqetl::config::spec::{HardDeletes, TableSpec};
use dqetl::sink::Lake;

use crate::sink_scd2::{
    GROUP, TestLake, Version, assert_invariants, at, changes, delete, ends, insert, update,
    vehicles, versions,
};

/// Keys of the first batch: one file of three row groups (32,768 + 32,768 + 4,464 rows).
const KEYS: i64 = 70_000;

fn lake_with_splice_min_rows(rows: usize) -> TestLake {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = Lake::new(LakeLayout::local(dir.path()), HashMap::new()).with_splice_min_rows(rows);
    TestLake { dir, lake }
}

async fn commit(t: &TestLake, table: &TableSpec, rows: &[crate::sink_scd2::Change], offset: i64) {
    let now: DateTime<Utc> = at("2026-03-02T00:00:00Z");
    t.lake
        .commit_changes(
            table,
            &changes(table, rows),
            &ends(&[(0, offset)]),
            GROUP,
            now,
        )
        .await
        .expect("commit");
}

/// Batch 1 inserts every key. Batch 2 updates keys in the first row group, deletes keys in the
/// last one and inserts new keys: the middle row group holds nothing to close.
async fn first_two_batches(t: &TestLake, table: &TableSpec) {
    let inserts: Vec<_> = (1..=KEYS)
        .map(|id| insert(id, "ana", id as f64, "2026-03-01T09:00:00Z"))
        .collect();
    commit(t, table, &inserts, 1).await;
    let mut second: Vec<_> = (1..=50)
        .map(|id| update(id, "bo", id as f64 + 0.5, "2026-03-01T10:00:00Z"))
        .collect();
    second.extend((KEYS - 9..=KEYS).map(|id| delete(id, "2026-03-01T10:00:00Z")));
    second.extend((KEYS + 1..=KEYS + 10).map(|id| insert(id, "cy", 1.0, "2026-03-01T10:00:00Z")));
    commit(t, table, &second, 2).await;
}

/// Batch 3 closes versions in the middle row group of the large file and in the small file
/// batch 2 added.
async fn third_batch(t: &TestLake, table: &TableSpec) {
    let mut third: Vec<_> = (40_000..=40_020)
        .map(|id| update(id, "dee", 2.0, "2026-03-01T11:00:00Z"))
        .collect();
    third.push(update(1, "eve", 3.0, "2026-03-01T11:00:00Z"));
    third.push(delete(KEYS + 5, "2026-03-01T11:00:00Z"));
    commit(t, table, &third, 3).await;
}

pub async fn data_table(t: &TestLake) -> DeltaTable {
    dqetl::sink::open_table(
        "vehicles",
        &t.layout().data_table("vehicles"),
        &HashMap::new(),
    )
    .await
    .expect("open table")
    .expect("table exists")
}

/// The table's files: (path relative to the table, rows).
pub fn files(table: &DeltaTable) -> Vec<(String, usize)> {
    table
        .snapshot()
        .expect("snapshot")
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.num_records().expect("row count")))
        .collect()
}

fn parquet_metadata(path: &std::path::Path) -> ParquetMetaData {
    let file = File::open(path).expect("open data file");
    SerializedFileReader::new(file)
        .expect("parquet footer")
        .metadata()
        .clone()
}

/// The encoded bytes of one column chunk.
fn chunk_bytes(
    path: &std::path::Path,
    meta: &ParquetMetaData,
    group: usize,
    column: &str,
) -> Vec<u8> {
    let row_group = meta.row_group(group);
    let index = (0..row_group.num_columns())
        .find(|&i| row_group.column(i).column_path().string() == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    let (start, length) = row_group.column(index).byte_range();
    let mut file = File::open(path).expect("open data file");
    file.seek(SeekFrom::Start(start)).expect("seek");
    let mut bytes = vec![0; length as usize];
    file.read_exact(&mut bytes).expect("read chunk");
    bytes
}

#[tokio::test]
async fn a_spliced_rewrite_reads_as_a_full_rewrite_and_copies_the_chunks_it_does_not_change() {
    let table = vehicles(HardDeletes::Close, false);
    let spliced = lake_with_splice_min_rows(1);
    let decoded = lake_with_splice_min_rows(usize::MAX);

    first_two_batches(&spliced, &table).await;
    first_two_batches(&decoded, &table).await;
    let root = spliced.dir.path().join("vehicles");
    // The first batch's file, still on disk after the second batch removed it from the log.
    let log = std::fs::read_to_string(root.join("_delta_log/00000000000000000001.json"))
        .expect("first commit");
    let first_file = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|a| a["add"]["path"].as_str().map(str::to_string))
        .expect("the first commit adds a file");
    let after_second = files(&data_table(&spliced).await);
    assert_eq!(
        after_second.len(),
        2,
        "the large file spliced, the new versions apart: {after_second:?}"
    );
    let spliced_file = after_second
        .iter()
        .find(|(_, rows)| *rows == KEYS as usize)
        .map(|(path, _)| path.clone())
        .unwrap_or_else(|| panic!("a file of {KEYS} rows: {after_second:?}"));
    assert_ne!(spliced_file, first_file);
    assert_eq!(
        files(&data_table(&decoded).await).len(),
        1,
        "a full rewrite writes the new versions and the rewritten rows together"
    );

    let source = parquet_metadata(&root.join(&first_file));
    let copy = parquet_metadata(&root.join(&spliced_file));
    let groups = |m: &ParquetMetaData| {
        m.row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect::<Vec<_>>()
    };
    assert_eq!(groups(&source), vec![32_768, 32_768, 4_464]);
    assert_eq!(
        groups(&copy),
        groups(&source),
        "the same rows in the same row groups"
    );
    for column in [
        "id",
        "driver_name",
        "speed",
        "_effective_from",
        "_is_current",
        "_effective_to",
    ] {
        assert_eq!(
            chunk_bytes(&root.join(&first_file), &source, 1, column),
            chunk_bytes(&root.join(&spliced_file), &copy, 1, column),
            "row group 1 has nothing to close: `{column}` is copied"
        );
    }
    for (group, column) in [(0, "speed"), (0, "driver_name"), (2, "id")] {
        assert_eq!(
            chunk_bytes(&root.join(&first_file), &source, group, column),
            chunk_bytes(&root.join(&spliced_file), &copy, group, column),
            "`{column}` of row group {group} is copied"
        );
    }
    for group in [0, 2] {
        assert_ne!(
            chunk_bytes(&root.join(&first_file), &source, group, "_is_current"),
            chunk_bytes(&root.join(&spliced_file), &copy, group, "_is_current"),
            "row group {group} closes versions: `_is_current` is encoded again"
        );
    }

    third_batch(&spliced, &table).await;
    third_batch(&decoded, &table).await;
    let read = versions(&spliced).await;
    assert_invariants(&read);
    assert_eq!(
        read,
        versions(&decoded).await,
        "spliced and full rewrites agree"
    );
    let current = read.iter().filter(|v| v.current).count();
    assert_eq!(
        current,
        KEYS as usize + 10 - 10 - 1,
        "deleted keys have no current row"
    );
    assert_eq!(read.len(), KEYS as usize + 10 + 50 + 21 + 1);
    let closed: Vec<&Version> = read.iter().filter(|v| !v.current).collect();
    assert_eq!(closed.len(), 50 + 10 + 21 + 1 + 1);
    assert_eq!(
        files(&data_table(&spliced).await).len(),
        3,
        "both files spliced, new versions apart"
    );

    assert_python_reads(&spliced, &read);
    assert_statistics_match_delta_rs(&spliced).await;
}

/// The Python `deltalake` package reads the spliced table as dqetl does.
fn assert_python_reads(t: &TestLake, expected: &[Version]) {
    const READER: &str = r#"
import json, os, sys
import pyarrow as pa
from deltalake import DeltaTable

t = DeltaTable(sys.argv[1]).to_pyarrow_table()
ids = t.column("id").to_pylist()
start = t.column("_effective_from").cast(pa.int64()).to_pylist()
end = t.column("_effective_to").cast(pa.int64()).to_pylist()
current = t.column("_is_current").to_pylist()
print(json.dumps(sorted(zip(ids, start, end, current), key=lambda r: (r[0], r[1], r[2] or 2**62))))
sys.stdout.flush()
os._exit(0)
"#;
    let venv = std::env::var("DQETL_VENV").unwrap_or_else(|_| "/var/cache/dqetl/venv".into());
    let python = std::path::PathBuf::from(venv).join("bin").join("python");
    let out = std::process::Command::new(&python)
        .args(["-c", READER, &t.layout().data_table("vehicles")])
        .output()
        .unwrap_or_else(|e| panic!("running {} failed ({e})", python.display()));
    assert!(
        out.status.success(),
        "python reader failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<(i64, i64, Option<i64>, bool)> =
        serde_json::from_slice(&out.stdout).expect("reader prints JSON");
    let mut ours: Vec<_> = expected
        .iter()
        .map(|v| (v.id, v.from, v.to, v.current))
        .collect();
    ours.sort_by_key(|&(id, from, to, _)| (id, from, to.unwrap_or(1 << 62)));
    assert_eq!(seen.len(), ours.len());
    assert!(seen == ours, "the Python reader sees other versions");
}

/// Every file's Delta statistics equal those delta-rs writes for the same rows.
async fn assert_statistics_match_delta_rs(t: &TestLake) {
    let table = data_table(t).await;
    let root = t.dir.path().join("vehicles");
    let logged: Vec<(String, Option<String>)> = table
        .snapshot()
        .expect("snapshot")
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.stats()))
        .collect();
    for (path, stats) in logged {
        let file = File::open(root.join(&path)).expect("open data file");
        let rows = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        // Written beside the table, never committed: only its statistics are wanted.
        let mut writer = RecordBatchWriter::for_table(&table).expect("writer");
        for batch in rows {
            writer.write(batch).await.expect("write");
        }
        let adds = writer.flush().await.expect("flush");
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("stats JSON");
        assert_eq!(adds.len(), 1);
        assert_eq!(
            parse(stats.as_deref().expect("spliced file has statistics")),
            parse(adds[0].stats.as_deref().expect("delta-rs statistics")),
            "statistics of {path}"
        );
    }
}
