#!/usr/bin/env bash
# Milvus 1.1's HTTP API through mishards, with curl: create a collection,
# insert, flush, search, get vectors by id, delete by id, drop.
#
# Start a demo cluster first; its banner prints the HTTP API's address:
#
#   mishards demo            # ... HTTP API        http://127.0.0.1:19121/ ...
#   examples/http_api.sh     # or: MISHARDS_HTTP=http://HOST:PORT examples/http_api.sh
#
# (`mishards demo --listen 127.0.0.1:0` picks free ports; pass the printed one.)
# Ids are JSON strings, as in Milvus 1.1. Every call must succeed (curl
# --fail-with-body): the script stops at the first error reply.
set -euo pipefail

API="${MISHARDS_HTTP:-http://127.0.0.1:19121}"
API="${API%/}"
C="${COLLECTION:-http_example}"

# req METHOD PATH [JSON]: prints the call and its reply.
req() {
    local method=$1 path=$2 body=${3-}
    if [[ -n $body ]]; then
        echo "\$ curl -X $method $API$path -d '$body'"
        curl -sS --fail-with-body -X "$method" "$API$path" \
            -H 'Content-Type: application/json' -d "$body"
    else
        echo "\$ curl -X $method $API$path"
        curl -sS --fail-with-body -X "$method" "$API$path"
    fi
    echo
}

# A leftover of an earlier run would make the create fail: drop it (404 if none).
curl -sS -o /dev/null -X DELETE "$API/collections/$C" || true

req GET "/state"
req POST "/collections" \
    "{\"collection_name\": \"$C\", \"dimension\": 4, \"index_file_size\": 1024, \"metric_type\": \"L2\"}"
req GET "/collections/$C"

# Insert four rows with our own ids (omit "ids" to have them generated).
req POST "/collections/$C/vectors" \
    '{"vectors": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2], [1.3, 1.4, 1.5, 1.6]], "ids": ["1", "2", "3", "4"]}'

# Rows are searchable once flushed.
req PUT "/system/task" "{\"flush\": {\"collection_names\": [\"$C\"]}}"

req PUT "/collections/$C/vectors" \
    '{"search": {"topk": 2, "vectors": [[0.1, 0.2, 0.3, 0.4]], "params": {}}}'
req GET "/collections/$C/vectors?ids=1,4"

# Delete by id, flush, and count again.
req PUT "/collections/$C/vectors" '{"delete": {"ids": ["1"]}}'
req PUT "/system/task" "{\"flush\": {\"collection_names\": [\"$C\"]}}"
req GET "/collections/$C"

# 204, no body.
req DELETE "/collections/$C"
