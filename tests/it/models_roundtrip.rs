//! Real Metabase graph payloads go through the typed models and come back unchanged.

use mbprov::metabase::models::*;
use serde_json::{Value, json};

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) -> T {
    let typed: T = serde_json::from_value(v.clone()).expect("parses");
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(back, v, "round trip changed the payload");
    typed
}

#[test]
fn v2_data_graph_with_granular_maps_roundtrips() {
    let g: DataGraph = roundtrip(json!({
        "revision": 41,
        "groups": {
            "1": {"1": {"view-data": "unrestricted", "create-queries": "query-builder-and-native",
                        "download": {"schemas": "full"}}},
            "2": {"1": {"view-data": "unrestricted", "create-queries": "query-builder-and-native",
                        "download": {"schemas": "full"}, "data-model": {"schemas": "all"},
                        "details": "yes", "transforms": "yes"}},
            "5": {"1": {"view-data": {"PUBLIC": {"10": "sandboxed", "11": "unrestricted"}},
                        "create-queries": {"PUBLIC": {"10": "query-builder"}, "": "no"},
                        "download": {"schemas": {"PUBLIC": {"10": "limited"}}},
                        "some-future-key": {"x": 1}}}
        }
    }));
    let cell = &g.groups[&Id(5)][&Id(1)];
    match cell.view_data.as_ref().unwrap() {
        Granular::Schemas(s) => match &s["PUBLIC"] {
            SchemaLevel::Tables(t) => assert_eq!(t[&Id(10)], ViewData::Sandboxed),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(cell.extra.contains_key("some-future-key"));
}

#[test]
fn legacy_data_graph_roundtrips() {
    roundtrip::<DataGraph>(json!({
        "revision": 7,
        "groups": {
            "1": {"2": {"data": {"native": "write", "schemas": "all"}}},
            "3": {"2": {"data": {"native": "none",
                                 "schemas": {"PUBLIC": {"4": "all", "5": {"read": "all", "query": "segmented"}}}},
                        "download": {"native": "full", "schemas": "full"}}}
        }
    }));
}

#[test]
fn collection_graph_roundtrips_and_reads_missing_as_none() {
    let g: CollectionGraph = roundtrip(json!({
        "revision": 12,
        "groups": {"1": {"root": "read", "7": "write"}, "5": {"9": "read"}}
    }));
    assert_eq!(g.access(1, CollectionKey::Root), CollectionAccess::Read);
    assert_eq!(g.access(5, CollectionKey::Id(7)), CollectionAccess::None);
    assert_eq!(g.access(9, CollectionKey::Id(9)), CollectionAccess::None);
}
