"""pymilvus 1.1.x quickstart against mishards (or any Milvus 1.1 server).

    cargo run --release -- demo                       # a whole cluster on 127.0.0.1:19530
    pip install pymilvus==1.1.2
    python examples/quickstart.py 127.0.0.1 19530

Creates the collection `quickstart` (dropping an old one) with a partition, inserts vectors
into both, flushes, counts, searches the whole collection and then the partition only, asks
mishards which node searches which segment file (`_cmd("route ...")`, a mishards command), and
drops the collection. Exits non-zero, with the reason, if any step does not answer as Milvus
would. tests/e2e/test_examples.py runs it against `mishards demo`.
"""

import json
import random
import sys

from milvus import MetricType, Milvus

COLLECTION = "quickstart"
PARTITION = "2024"
DIM = 16


def check(status, what):
    if not status.OK():
        sys.exit(f"{what} failed: {status}")


def main(host="127.0.0.1", port="19530"):
    client = Milvus(host=host, port=port)
    rng = random.Random(7)

    status, exists = client.has_collection(COLLECTION)
    check(status, "has_collection")
    if exists:
        check(client.drop_collection(COLLECTION), "drop_collection")
    check(
        client.create_collection(
            {
                "collection_name": COLLECTION,
                "dimension": DIM,
                "index_file_size": 1024,
                "metric_type": MetricType.L2,
            }
        ),
        "create_collection",
    )
    check(client.create_partition(COLLECTION, PARTITION), "create_partition")

    vectors = [[rng.random() for _ in range(DIM)] for _ in range(1000)]
    status, ids = client.insert(COLLECTION, vectors)
    check(status, "insert")
    recent = [[rng.random() for _ in range(DIM)] for _ in range(200)]
    status, recent_ids = client.insert(COLLECTION, recent, partition_tag=PARTITION)
    check(status, "insert into the partition")
    check(client.flush([COLLECTION]), "flush")

    status, count = client.count_entities(COLLECTION)
    check(status, "count_entities")
    print(f"{COLLECTION}: {count} vectors")
    assert count == 1200, count

    # Each query is a stored vector: it finds itself first, at distance 0.
    queries = [vectors[3], recent[5]]
    status, results = client.search(COLLECTION, 5, queries, params={})
    check(status, "search")
    for query_id, row in zip([ids[3], recent_ids[5]], results):
        print(f"query {query_id}: " + ", ".join(f"{hit.id} ({hit.distance:.3f})" for hit in row))
        assert row[0].id == query_id and row[0].distance < 1e-4, (query_id, row[0])

    # The partition alone: every hit comes from it.
    status, results = client.search(COLLECTION, 5, queries, partition_tags=[PARTITION], params={})
    check(status, "search in a partition")
    in_partition = set(recent_ids)
    assert all(hit.id in in_partition for row in results for hit in row), results
    assert results[1][0].id == recent_ids[5]

    # mishards explains the plan: which read-only node searches which segment file.
    status, reply = client._cmd(f"route {COLLECTION}")
    check(status, "route")
    route = json.loads(reply)
    print(f"route: {route['files']} files on nodes {sorted(route['nodes'])}")

    check(client.drop_collection(COLLECTION), "drop_collection")
    client.close()
    print("quickstart: OK")


if __name__ == "__main__":
    main(*sys.argv[1:3])
