//! Hostile input, as property tests on stable Rust (proptest), each bounded
//! (256 cases, small maximum sizes) so they run in seconds: request bytes
//! through prost decoding and the validators, partial search results of any
//! shape through the merge, any file set and health mask through the route
//! planner, and any text through the config parser. None may panic; what
//! they return must be well formed.
#![allow(clippy::unwrap_used)] // tests unwrap their own fixtures

use std::collections::HashSet;

use mishards::config::Config;
use mishards::merge::{merge, TopKHits};
use mishards::proxy::route;
use mishards::ring::Ring;
use mishards::types::{MetricType, Order};
use mishards::validate;
use mishards::wire::*;
use proptest::prelude::*;
use prost::Message;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::Ascending), Just(Order::Descending)]
}

fn metric() -> impl Strategy<Value = MetricType> {
    (1i32..=9).prop_filter_map("a metric", MetricType::from_i32)
}

/// Numbers a client may send: edges and small values.
fn wild_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1i64),
        Just(0i64),
        Just(1i64 << 20),
        Just((1i64 << 20) + 1),
        -5i64..70_000,
    ]
}

fn row_record() -> impl Strategy<Value = RowRecord> {
    (
        prop::collection::vec(any::<f32>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(float_data, binary_data)| RowRecord {
            float_data,
            binary_data: binary_data.into(),
        })
}

fn key_values() -> impl Strategy<Value = Vec<KeyValuePair>> {
    let value = prop_oneof![
        Just("{}".to_string()),
        Just("{\"nprobe\": 16}".to_string()),
        Just("{\"nprobe\": -1, \"ef\": 1e300}".to_string()),
        Just("[1,2]".to_string()),
        ".{0,40}",
    ];
    prop::collection::vec(
        (prop_oneof![Just("params".to_string()), ".{0,8}"], value)
            .prop_map(|(key, value)| KeyValuePair { key, value }),
        0..3,
    )
}

fn search_param() -> impl Strategy<Value = SearchParam> {
    (
        ".{0,300}",
        prop::collection::vec(".{0,20}", 0..4),
        prop::collection::vec(row_record(), 0..6),
        wild_i64(),
        key_values(),
    )
        .prop_map(
            |(collection_name, partition_tag_array, query_record_array, topk, extra_params)| {
                SearchParam {
                    collection_name,
                    partition_tag_array,
                    query_record_array,
                    topk,
                    extra_params,
                }
            },
        )
}

/// Every check the proxy runs on a search before it fans out.
fn validate_search(p: &SearchParam, metric: MetricType, dim: i64) {
    let nq = p.query_record_array.len();
    let _ = validate::search_request(&p.collection_name, &p.partition_tag_array, nq, p.topk);
    if let Ok(params) = validate::extra_params(&p.extra_params) {
        for engine in 0..=20 {
            if let Some(engine) = mishards::types::EngineType::from_i32(engine) {
                let _ = validate::search_params(engine, &params, p.topk);
            }
        }
    }
    let _ = validate::vector_shapes(&p.query_record_array, metric, dim);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_and_validate_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        metric in metric(),
        dim in wild_i64(),
    ) {
        if let Ok(p) = SearchParam::decode(bytes.as_slice()) {
            validate_search(&p, metric, dim);
        }
        if let Ok(p) = InsertParam::decode(bytes.as_slice()) {
            if let Ok(data) = validate::vectors(&p.row_record_array, metric, dim) {
                let _ = validate::insert_payload(&data);
            }
            let _ = validate::user_ids(&p.row_id_array, p.row_record_array.len());
            let _ = validate::partition_tag(&p.partition_tag);
        }
        if let Ok(p) = SearchByIdParam::decode(bytes.as_slice()) {
            let _ = validate::search_by_id_count(p.id_array.len());
        }
    }

    #[test]
    fn structured_requests_validate_without_panic(
        p in search_param(),
        metric in metric(),
        dim in wild_i64(),
    ) {
        // Through the wire and back, as a client would send it.
        let decoded = SearchParam::decode(p.encode_to_vec().as_slice()).unwrap();
        validate_search(&decoded, metric, dim);
        // The result-size check bounds nq x topk before anything is sized by it.
        if validate::result_size(decoded.query_record_array.len(), decoded.topk).is_ok()
            && validate::topk(decoded.topk).is_ok()
        {
            let entries = decoded.query_record_array.len() as u128 * decoded.topk as u128;
            prop_assert!(entries * 12 < 2 << 30);
        }
    }

    #[test]
    fn partial_results_of_any_shape_merge_or_fail_cleanly(
        parts in prop::collection::vec(
            (
                prop_oneof![Just(0i64), Just(-1i64), Just(i64::MAX), 0i64..5],
                prop::collection::vec(-2i64..40, 0..30),
                prop::collection::vec(prop_oneof![any::<f32>(), -5f32..5f32], 0..30),
            ),
            0..5,
        ),
        topk in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..40],
        order in order(),
    ) {
        let mut hits = Vec::new();
        for (row_num, ids, distances) in parts {
            let wire = TopKQueryResult { status: None, row_num, ids, distances };
            if let Ok(h) = TopKHits::from_wire(wire) {
                prop_assert_eq!(h.ids.len(), h.nq * h.stride);
                hits.push(h);
            }
        }
        if let Ok(merged) = merge(hits, topk, order) {
            prop_assert_eq!(merged.ids.len(), merged.nq * merged.stride);
            prop_assert_eq!(merged.distances.len(), merged.ids.len());
            prop_assert!(merged.stride <= topk);
            let wire = merged.into_wire();
            let back = TopKHits::from_wire(wire).unwrap();
            prop_assert_eq!(back.ids.len(), back.nq * back.stride);
        }
    }

    #[test]
    fn raw_parts_with_lying_shapes_never_panic(
        parts in prop::collection::vec(
            (
                prop_oneof![Just(usize::MAX), Just(usize::MAX / 2), 0usize..5],
                prop_oneof![Just(usize::MAX), Just(0usize), 0usize..6],
                prop::collection::vec(-2i64..40, 0..30),
                prop::collection::vec(-5f32..5f32, 0..30),
            ),
            0..4,
        ),
        topk in 1usize..50,
        order in order(),
    ) {
        let hits = parts
            .into_iter()
            .map(|(nq, stride, ids, distances)| TopKHits { nq, stride, ids, distances })
            .collect();
        if let Ok(merged) = merge(hits, topk, order) {
            prop_assert_eq!(Some(merged.ids.len()), merged.nq.checked_mul(merged.stride));
        }
    }

    #[test]
    fn any_files_and_health_plan_each_file_once_on_a_healthy_node(
        node_count in 0usize..6,
        healthy_mask in any::<u8>(),
        files in prop::collection::vec((prop_oneof![any::<i64>(), 0i64..20], wild_i64()), 0..60),
        virtual_nodes in prop_oneof![Just(0usize), 1usize..64],
    ) {
        let nodes: Vec<String> = (0..node_count).map(|i| format!("10.0.0.{i}:19530")).collect();
        let ring = Ring::new(&nodes, virtual_nodes);
        let healthy = |addr: &str| {
            nodes.iter().position(|n| n == addr).is_some_and(|i| healthy_mask & (1 << i) != 0)
        };
        let distinct: HashSet<i64> = files.iter().map(|f| f.0).collect();
        let any_healthy = (0..node_count).any(|i| healthy_mask & (1 << i) != 0);
        match route::plan(&ring, &files, healthy) {
            Ok(plan) => {
                let mut placed = HashSet::new();
                for (node, ids) in &plan.assignments {
                    prop_assert!(healthy(node), "{} is unhealthy", node);
                    for id in ids {
                        prop_assert!(placed.insert(*id), "file {} placed twice", id);
                    }
                }
                prop_assert_eq!(placed, distinct);
            }
            Err(_) => prop_assert!(!any_healthy && !distinct.is_empty()),
        }
    }

    #[test]
    fn any_text_is_a_config_or_errors_never_a_panic(text in ".{0,400}") {
        let _ = Config::load_from_str(&text, |_| None);
    }

    #[test]
    fn toml_shaped_text_is_a_config_or_errors_never_a_panic(
        lines in prop::collection::vec(
            (
                prop_oneof![
                    Just("[server]"), Just("[meta]"), Just("[backends]"), Just("[topology]"),
                    Just("[access]"), Just("[log]"), Just("[metrics]"), Just("[nope]"), Just(""),
                ],
                prop_oneof![
                    Just("listen"), Just("uri"), Just("writable"), Just("readonly"),
                    Just("max_message_size"), Just("refresh_interval"), Just("deny"),
                    Just("allow_networks"), Just("read_only"), Just("level"), Just("stale_after"),
                    Just("virtual_nodes"), Just("max_connections"), Just("x"),
                ],
                prop_oneof![
                    Just("\"127.0.0.1:0\"".to_string()), Just("\"mysql://u:p@h/d\"".to_string()),
                    Just("[\"10.0.0.0/8\", \"::1\"]".to_string()), Just("true".to_string()),
                    Just("\"99999999999999GiB\"".to_string()), Just("-1".to_string()),
                    Just("18446744073709551615".to_string()), Just("\"0s\"".to_string()),
                    Just("[\"DropCollection\", 3]".to_string()), ".{0,20}",
                ],
            ),
            0..12,
        ),
        env in prop::option::of(".{0,30}"),
    ) {
        let text: String = lines
            .iter()
            .map(|(section, key, value)| format!("{section}\n{key} = {value}\n"))
            .collect();
        let _ = Config::load_from_str(&text, |name| {
            (name == "MISHARDS__TOPOLOGY__REFRESH_INTERVAL").then(|| env.clone()).flatten()
        });
    }
}
