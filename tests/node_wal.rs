//! The writable node's write-ahead log: a node SIGKILLed with rows
//! acknowledged but not flushed serves them after a restart, without the
//! rows deleted from its buffer, without the rows of a collection dropped
//! and created again, and without doubling what a flush made durable.
//! A real `mishards node` process over SQLite and MySQL.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::processes::ChildServer;
use common::*;
use mishards::wire::*;

on_both_databases!(killed_writer_replays_its_log);

/// A writable node that never flushes on its own (a 1 h auto-flush period).
fn writer(listen: &str, dir: &Path, meta_uri: &str) -> ChildServer {
    let data_dir = dir.display().to_string();
    ChildServer::spawn(
        "writer",
        &[
            "node",
            "--role",
            "rw",
            "--listen",
            listen,
            "--data-dir",
            &data_dir,
            "--meta-uri",
            meta_uri,
            "--flush-interval",
            "1h",
            "--merge-interval",
            "0s",
            "--log-level",
            "warn",
            "--no-http",
        ],
        "mishards node listening on ",
    )
}

fn rows(source: &mut VectorSource, n: usize) -> Vec<Vector> {
    source.floats(n, 8)
}

async fn insert_with_ids(c: &mut Client, name: &str, tag: &str, rows: &[Vector], ids: &[i64]) {
    let reply = grpc_ok(
        "Insert",
        c.insert(InsertParam {
            collection_name: name.into(),
            row_record_array: rows.iter().map(Vector::record).collect(),
            row_id_array: ids.to_vec(),
            partition_tag: tag.into(),
            extra_params: vec![],
        })
        .await,
    );
    assert_ok("Insert", &reply.status);
}

async fn killed_writer_replays_its_log(setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let (meta_uri, _database) = match &setup.meta {
        MetaKind::Sqlite => (
            format!("sqlite://{}/db/meta.sqlite", dir.path().display()),
            None,
        ),
        MetaKind::MySql(server) => {
            let db = MysqlDatabase::create(server).await;
            (db.uri.clone(), Some(db))
        }
    };
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let node = writer("127.0.0.1:0", dir.path(), &meta_uri);
    let addr = node.addr;
    let mut c = client_of(addr);
    let mut source = VectorSource::new(5);

    // Flushed rows, then unflushed ones on top (root and partition), some
    // of them deleted from the buffer, and a collection dropped and made
    // again with rows only before the drop.
    create_collection(&mut c, "kept", 8, 1).await;
    create_partition(&mut c, "kept", "p").await;
    let flushed = rows(&mut source, 30);
    insert_with_ids(&mut c, "kept", "", &flushed, &(0..30).collect::<Vec<_>>()).await;
    flush(&mut c, "kept").await;
    let buffered = rows(&mut source, 50);
    insert_with_ids(
        &mut c,
        "kept",
        "",
        &buffered,
        &(100..150).collect::<Vec<_>>(),
    )
    .await;
    let in_partition = rows(&mut source, 20);
    insert_with_ids(
        &mut c,
        "kept",
        "p",
        &in_partition,
        &(200..220).collect::<Vec<_>>(),
    )
    .await;
    let doomed: HashSet<i64> = (100..110).chain(200..205).chain(0..3).collect();
    delete_ids(&mut c, "kept", &doomed).await;
    create_collection(&mut c, "again", 8, 1).await;
    insert_with_ids(
        &mut c,
        "again",
        "",
        &rows(&mut source, 10),
        &(0..10).collect::<Vec<_>>(),
    )
    .await;
    let status = grpc_ok(
        "DropCollection",
        c.drop_collection(CollectionName {
            collection_name: "again".into(),
        })
        .await,
    );
    assert_status_ok("DropCollection", &status);
    create_collection(&mut c, "again", 8, 1).await;

    node.signal("KILL");
    drop(node);
    let node = writer(&addr.to_string(), dir.path(), &meta_uri);
    let mut c = client_of(node.addr);
    flush(&mut c, "kept").await;
    flush(&mut c, "again").await;
    // 30 flushed - 3 deleted, 50 - 10 and 20 - 5 replayed.
    assert_eq!(count(&mut c, "kept").await, 27 + 40 + 15);
    assert_eq!(
        count(&mut c, "again").await,
        0,
        "rows of the dropped collection came back"
    );
    let wanted: Vec<i64> = (100..150).chain(200..220).collect();
    let reply = grpc_ok(
        "GetVectorsByID",
        c.get_vectors_by_id(VectorsIdentity {
            collection_name: "kept".into(),
            id_array: wanted.clone(),
            partition_tag: String::new(),
        })
        .await,
    );
    assert_ok("GetVectorsByID", &reply.status);
    for (i, (id, got)) in wanted.iter().zip(&reply.vectors_data).enumerate() {
        let expected = if doomed.contains(id) {
            Vec::new()
        } else if *id < 200 {
            buffered[i].record().float_data
        } else {
            in_partition[i - 50].record().float_data
        };
        assert_eq!(got.float_data, expected, "row {id}");
    }

    // A second kill after the flush replays nothing twice.
    let addr = node.addr;
    node.signal("KILL");
    drop(node);
    let node = writer(&addr.to_string(), dir.path(), &meta_uri);
    let mut c = client_of(node.addr);
    flush(&mut c, "kept").await;
    assert_eq!(count(&mut c, "kept").await, 82);
    drop(node);
}
