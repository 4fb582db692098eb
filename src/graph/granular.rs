//! Reading, merging and comparing database/schema/table-level values.

use std::collections::BTreeMap;

use crate::metabase::models::{Granular, Id, LeastPermissive, SchemaLevel};

/// The value that applies to one table, reading a missing value as the least permissive one
/// (Metabase leaves those out of its answers).
pub fn resolve<T: Clone + LeastPermissive>(
    value: Option<&Granular<T>>,
    schema: &str,
    table: i64,
) -> T {
    match value {
        None => T::least(),
        Some(Granular::All(v)) => v.clone(),
        Some(Granular::Schemas(schemas)) => match schemas.get(schema) {
            None => T::least(),
            Some(SchemaLevel::All(v)) => v.clone(),
            Some(SchemaLevel::Tables(tables)) => {
                tables.get(&Id(table)).cloned().unwrap_or_else(T::least)
            }
        },
    }
}

/// Does `actual` (as Metabase renders it) grant exactly what `wanted` asks for, at every place
/// `wanted` names? Places `wanted` does not name are not compared.
pub fn satisfies<T: Clone + PartialEq + LeastPermissive>(
    actual: Option<&Granular<T>>,
    wanted: &Granular<T>,
) -> bool {
    match wanted {
        // Metabase collapses a value shared by every table to the database level, except EE
        // renders a sandboxed group's view-data per table: a granular answer satisfies a
        // database value when every table it lists has that value.
        Granular::All(v) => match actual {
            None => *v == T::least(),
            Some(Granular::All(a)) => a == v,
            Some(Granular::Schemas(s)) => *v != T::least() && all_leaves_are(s, v),
        },
        Granular::Schemas(schemas) => schemas.iter().all(|(schema, level)| match level {
            SchemaLevel::All(v) => match actual {
                None => *v == T::least(),
                Some(Granular::All(a)) => a == v,
                Some(Granular::Schemas(a)) => match a.get(schema) {
                    None => *v == T::least(),
                    Some(SchemaLevel::All(a)) => a == v,
                    Some(SchemaLevel::Tables(t)) => {
                        *v != T::least() && !t.is_empty() && t.values().all(|a| a == v)
                    }
                },
            },
            SchemaLevel::Tables(tables) => tables
                .iter()
                .all(|(table, v)| resolve(actual, schema, table.0) == *v),
        }),
    }
}

fn all_leaves_are<T: PartialEq>(schemas: &BTreeMap<String, SchemaLevel<T>>, v: &T) -> bool {
    !schemas.is_empty()
        && schemas.values().all(|level| match level {
            SchemaLevel::All(a) => a == v,
            SchemaLevel::Tables(t) => !t.is_empty() && t.values().all(|a| a == v),
        })
}

/// `later` applied over `earlier`: later values win where they overlap.
///
/// A database-level value replaces everything earlier. Two granular values merge per schema and
/// per table. A granular value over an earlier database-level one cannot be expressed in one
/// body without knowing every table, so the later value wins whole there too.
pub fn merge<T: Clone>(earlier: Option<&Granular<T>>, later: &Granular<T>) -> Granular<T> {
    match (earlier, later) {
        (Some(Granular::Schemas(e)), Granular::Schemas(l)) => {
            let mut out: BTreeMap<String, SchemaLevel<T>> = e.clone();
            for (schema, level) in l {
                let merged = match (out.get(schema), level) {
                    (Some(SchemaLevel::Tables(et)), SchemaLevel::Tables(lt)) => {
                        let mut t = et.clone();
                        t.extend(lt.iter().map(|(k, v)| (*k, v.clone())));
                        SchemaLevel::Tables(t)
                    }
                    _ => level.clone(),
                };
                out.insert(schema.clone(), merged);
            }
            Granular::Schemas(out)
        }
        _ => later.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metabase::models::CreateQueries::{self, *};

    fn tables(schema: &str, cells: &[(i64, CreateQueries)]) -> Granular<CreateQueries> {
        Granular::Schemas(BTreeMap::from([(
            schema.to_string(),
            SchemaLevel::Tables(cells.iter().map(|(t, v)| (Id(*t), v.clone())).collect()),
        )]))
    }

    fn schema(name: &str, v: CreateQueries) -> Granular<CreateQueries> {
        Granular::Schemas(BTreeMap::from([(name.to_string(), SchemaLevel::All(v))]))
    }

    #[test]
    fn resolve_reads_every_level_and_defaults_to_least() {
        let cases: Vec<(Option<Granular<CreateQueries>>, &str, i64, CreateQueries)> = vec![
            (None, "PUBLIC", 1, No),
            (Some(Granular::All(QueryBuilder)), "PUBLIC", 1, QueryBuilder),
            (
                Some(schema("PUBLIC", QueryBuilder)),
                "PUBLIC",
                1,
                QueryBuilder,
            ),
            (Some(schema("PUBLIC", QueryBuilder)), "OTHER", 1, No),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder)])),
                "PUBLIC",
                1,
                QueryBuilder,
            ),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder)])),
                "PUBLIC",
                2,
                No,
            ),
        ];
        for (value, s, t, want) in cases {
            assert_eq!(resolve(value.as_ref(), s, t), want, "{value:?} {s} {t}");
        }
    }

    #[test]
    fn satisfies_allows_for_metabase_reshaping() {
        let cases: Vec<(
            Option<Granular<CreateQueries>>,
            Granular<CreateQueries>,
            bool,
        )> = vec![
            // Least-permissive values are left out of answers.
            (None, Granular::All(No), true),
            (None, Granular::All(QueryBuilder), false),
            (
                Some(Granular::All(QueryBuilder)),
                Granular::All(QueryBuilder),
                true,
            ),
            (
                Some(Granular::All(QueryBuilderAndNative)),
                Granular::All(QueryBuilder),
                false,
            ),
            // Table values shared by the whole database come back collapsed.
            (
                Some(Granular::All(QueryBuilder)),
                tables("PUBLIC", &[(1, QueryBuilder)]),
                true,
            ),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder)])),
                tables("PUBLIC", &[(1, QueryBuilder), (2, No)]),
                true,
            ),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder)])),
                tables("PUBLIC", &[(2, QueryBuilder)]),
                false,
            ),
            (
                Some(schema("PUBLIC", QueryBuilder)),
                schema("PUBLIC", QueryBuilder),
                true,
            ),
            (
                Some(Granular::All(QueryBuilder)),
                schema("PUBLIC", QueryBuilder),
                true,
            ),
            // EE renders a sandboxed group's view-data per table even when the tables agree.
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder), (2, QueryBuilder)])),
                schema("PUBLIC", QueryBuilder),
                true,
            ),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder), (2, QueryBuilder)])),
                Granular::All(QueryBuilder),
                true,
            ),
            (
                Some(tables("PUBLIC", &[(1, QueryBuilder), (2, No)])),
                Granular::All(QueryBuilder),
                false,
            ),
            (Some(tables("PUBLIC", &[(1, No)])), Granular::All(No), false),
        ];
        for (actual, wanted, ok) in cases {
            assert_eq!(
                satisfies(actual.as_ref(), &wanted),
                ok,
                "{actual:?} vs {wanted:?}"
            );
        }
    }

    #[test]
    fn later_values_win_and_granular_values_merge() {
        let a = tables("PUBLIC", &[(1, QueryBuilder), (2, QueryBuilder)]);
        let b = tables("PUBLIC", &[(2, No), (3, QueryBuilderAndNative)]);
        assert_eq!(
            merge(Some(&a), &b),
            tables(
                "PUBLIC",
                &[(1, QueryBuilder), (2, No), (3, QueryBuilderAndNative)]
            )
        );
        assert_eq!(merge(Some(&a), &Granular::All(No)), Granular::All(No));
        assert_eq!(merge(Some(&Granular::All(No)), &a), a);
        assert_eq!(merge(None, &a), a);
    }
}
