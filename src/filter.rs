//! Filters: which events of a subscription a client gets, checked against the schema.
//!
//! A filter is a JSON object. Each key is a path into the payload (`user`, `author.name`), or
//! `event` (the event's name), `channel` (the channel's), or `and` / `or` (an array of filters) / `not` (a filter); a
//! value is what the field must equal (`{"user": "ada"}`), or an object of operators
//! (`{"votes": {"gte": 3}}`): `eq`, `ne`, `in`, `nin`, `exists`, `gt`, `gte`, `lt`, `lte` (on
//! numbers) and `prefix` (on strings). Several keys in one object must all hold.
//!
//! A filter is compiled once per subscription and checked against the schema of the events the
//! subscription may get: a path none of them has, or a value none of them allows there, is
//! refused with what the schema allows. A missing field equals nothing: `ne` and `nin` hold for
//! it, `exists: false` finds it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::schema::Registry;

/// The deepest nesting of `and` / `or` / `not` a filter may have.
pub const MAX_FILTER_DEPTH: usize = 8;
/// The most tests (field or event comparisons) one filter may hold.
pub const MAX_FILTER_TESTS: usize = 64;
/// The longest filter accepted, as JSON text.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Filtered subscriptions one WebSocket connection may hold (an SSE stream holds one).
pub const MAX_FILTERS_PER_CONNECTION: usize = 16;

const OPERATORS: &[&str] = &[
    "eq", "ne", "in", "nin", "exists", "gt", "gte", "lt", "lte", "prefix",
];

/// A compiled filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    root: Node,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    /// A test on the payload field at `path`.
    Field {
        path: Vec<String>,
        test: Test,
    },
    /// A test on the event's name.
    Event(Test),
    /// A test on the channel's name.
    Channel(Test),
}

#[derive(Clone, Debug, PartialEq)]
enum Test {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Prefix(String),
}

/// Why a filter was refused: what is wrong, where, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Not a filter at all (the wrong JSON shape, an unknown operator, …).
    #[error("filter{}: {message}", at(.path))]
    Malformed {
        /// Where in the filter (`and[1].user`), empty for the whole.
        path: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// More nesting or more tests than allowed.
    #[error("filter is too {what}: at most {max} (filters may nest and/or/not {MAX_FILTER_DEPTH} deep and hold {MAX_FILTER_TESTS} tests)")]
    TooLarge {
        /// `deep` or `large` or `long`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A field no event of the subscription has.
    #[error("filter: no event of this subscription has the field {path:?}; {known}")]
    UnknownField {
        /// The field's path.
        path: String,
        /// The fields they have.
        known: String,
    },
    /// A comparison the schema rules out (a number compared with a string, a value outside an
    /// enum, …).
    #[error("filter: {path:?} {message}")]
    Type {
        /// The field's path (or `event`).
        path: String,
        /// What the schema allows there.
        message: String,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at {path}")
    }
}

impl Filter {
    /// Reads a filter from JSON, checking its shape and size (not yet the schema).
    ///
    /// # Errors
    /// [`FilterError`] naming what is wrong.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let mut tests = 0;
        let root = node(value, "", 0, &mut tests)?;
        Ok(Filter { root })
    }

    /// Reads a filter from JSON text.
    ///
    /// # Errors
    /// [`FilterError`]: too long, not JSON, or not a filter.
    pub fn parse_str(text: &str) -> Result<Filter, FilterError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLarge {
                what: "long",
                max: MAX_FILTER_BYTES,
            });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| FilterError::Malformed {
            path: String::new(),
            message: format!("not JSON: {e}; a filter is a JSON object such as {{\"user\": \"ada\"}}"),
        })?;
        Filter::parse(&value)
    }

    /// Both filters must hold (an enforced one and the client's own).
    pub fn and(self, other: Filter) -> Filter {
        Filter {
            root: Node::All(vec![self.root, other.root]),
        }
    }

    /// Checks the filter against the schema of `events` (the events the subscription may
    /// get): every field must exist in at least one of them, and every value must be one the
    /// schema allows there.
    ///
    /// # Errors
    /// [`FilterError::UnknownField`] or [`FilterError::Type`].
    pub fn check(&self, registry: &Registry, events: &[&str]) -> Result<(), FilterError> {
        check_node(&self.root, registry, events)
    }

    /// Whether an event `event` on `channel` with payload `data` passes.
    pub fn matches(&self, channel: &str, event: &str, data: &Value) -> bool {
        eval(&self.root, channel, event, data)
    }

    /// A payload field every passing event has one of a few values at, found among the tests
    /// that must all hold (`{"user": "ada", …}`, `{"tenant": {"in": [...]}}`), or in every
    /// branch of an `or`: its path and those values' [keys](value_key). The hub indexes
    /// subscribers by it, so an event is tested only by the filters that can pass it.
    pub(crate) fn index(&self) -> Option<(&[String], Vec<String>)> {
        fn find(node: &Node) -> Option<(&[String], Vec<String>)> {
            match node {
                Node::All(nodes) => nodes.iter().find_map(find),
                // Every branch on the same field: the values of them all (an `or` of
                // equalities, or the filter a client merges from its subscriptions).
                Node::Any(nodes) => {
                    let mut found: Option<(&[String], Vec<String>)> = None;
                    for (path, keys) in nodes.iter().map(find).collect::<Option<Vec<_>>>()? {
                        match &mut found {
                            None => found = Some((path, keys)),
                            Some((p, _)) if *p != path => return None,
                            Some((_, all)) => all.extend(keys),
                        }
                    }
                    found
                }
                Node::Field {
                    path,
                    test: Test::Eq(v),
                } => value_key(v).map(|k| (path.as_slice(), vec![k])),
                Node::Field {
                    path,
                    test: Test::In(vs),
                } => vs
                    .iter()
                    .map(value_key)
                    .collect::<Option<Vec<_>>>()
                    .map(|ks| (path.as_slice(), ks)),
                _ => None,
            }
        }
        find(&self.root)
    }
}

/// The value at `path` in `data`.
pub(crate) fn value_at<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(data, |v, key| v.get(key))
}

/// A key under which equal values (as a filter compares them: numbers by value) are equal, for
/// a value a filter can name (a string, number, boolean or null).
pub(crate) fn value_key(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => format!("s{s}"),
        Value::Number(n) => format!("n{}", n.as_f64()?),
        Value::Bool(b) => format!("b{b}"),
        Value::Null => "z".to_string(),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

fn malformed(path: &str, message: impl Into<String>) -> FilterError {
    FilterError::Malformed {
        path: path.to_string(),
        message: message.into(),
    }
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn node(value: &Value, at: &str, depth: usize, tests: &mut usize) -> Result<Node, FilterError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(FilterError::TooLarge {
            what: "deep",
            max: MAX_FILTER_DEPTH,
        });
    }
    let Value::Object(map) = value else {
        return Err(malformed(
            at,
            "a filter is a JSON object of field → value or {operator: value}, such as {\"user\": \"ada\"}",
        ));
    };
    if map.is_empty() {
        return Err(malformed(
            at,
            "an empty filter; give at least one field, event, and, or or not",
        ));
    }
    let mut all = Vec::with_capacity(map.len());
    for (key, v) in map {
        let here = join_path(at, key);
        let n = match key.as_str() {
            "and" | "or" => {
                let Value::Array(items) = v else {
                    return Err(malformed(&here, format!("{key} takes an array of filters")));
                };
                if items.is_empty() {
                    return Err(malformed(&here, format!("{key} takes at least one filter")));
                }
                let mut nodes = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    nodes.push(node(item, &format!("{here}[{i}]"), depth + 1, tests)?);
                }
                if key == "and" {
                    Node::All(nodes)
                } else {
                    Node::Any(nodes)
                }
            }
            "not" => Node::Not(Box::new(node(v, &here, depth + 1, tests)?)),
            "event" => {
                *tests += 1;
                Node::Event(test(v, &here)?)
            }
            "channel" => {
                *tests += 1;
                Node::Channel(test(v, &here)?)
            }
            path => {
                *tests += 1;
                let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(malformed(
                        &here,
                        "a field path is names joined by dots, such as author.name",
                    ));
                }
                Node::Field {
                    path: parts,
                    test: test(v, &here)?,
                }
            }
        };
        if *tests > MAX_FILTER_TESTS {
            return Err(FilterError::TooLarge {
                what: "large",
                max: MAX_FILTER_TESTS,
            });
        }
        all.push(n);
    }
    Ok(if all.len() == 1 {
        all.pop().expect("one")
    } else {
        Node::All(all)
    })
}

/// A field's test: a plain value (equality), or one operator.
fn test(value: &Value, at: &str) -> Result<Test, FilterError> {
    let scalar = |v: &Value, what: &str| -> Result<Value, FilterError> {
        match v {
            Value::Array(_) | Value::Object(_) => Err(malformed(
                at,
                format!("{what} compares with a string, number, boolean or null (compare nested fields with dotted paths, lists with in)"),
            )),
            v => Ok(v.clone()),
        }
    };
    let number = |v: &Value, op: &str| -> Result<f64, FilterError> {
        v.as_f64()
            .ok_or_else(|| malformed(at, format!("{op} takes a number, found {v}")))
    };
    let list = |v: &Value, op: &str| -> Result<Vec<Value>, FilterError> {
        let Value::Array(items) = v else {
            return Err(malformed(at, format!("{op} takes an array of values")));
        };
        items.iter().map(|i| scalar(i, op)).collect()
    };
    let Value::Object(ops) = value else {
        return Ok(Test::Eq(scalar(value, "a field")?));
    };
    let mut ops_iter = ops.iter();
    let (Some((op, v)), None) = (ops_iter.next(), ops_iter.next()) else {
        return Err(malformed(
            at,
            format!(
                "give one operator per field (combine with and); operators are {}",
                OPERATORS.join(", ")
            ),
        ));
    };
    Ok(match op.as_str() {
        "eq" => Test::Eq(scalar(v, "eq")?),
        "ne" => Test::Ne(scalar(v, "ne")?),
        "in" => Test::In(list(v, "in")?),
        "nin" => Test::Nin(list(v, "nin")?),
        "exists" => Test::Exists(
            v.as_bool()
                .ok_or_else(|| malformed(at, "exists takes true or false"))?,
        ),
        "gt" => Test::Gt(number(v, "gt")?),
        "gte" => Test::Gte(number(v, "gte")?),
        "lt" => Test::Lt(number(v, "lt")?),
        "lte" => Test::Lte(number(v, "lte")?),
        "prefix" => Test::Prefix(
            v.as_str()
                .ok_or_else(|| malformed(at, "prefix takes a string"))?
                .to_string(),
        ),
        other => {
            return Err(malformed(
                at,
                format!(
                    "unknown operator {:?}; operators are {} (compare nested fields with dotted paths)",
                    other.chars().take(32).collect::<String>(),
                    OPERATORS.join(", ")
                ),
            ))
        }
    })
}

fn eval(node: &Node, channel: &str, event: &str, data: &Value) -> bool {
    match node {
        Node::All(nodes) => nodes.iter().all(|n| eval(n, channel, event, data)),
        Node::Any(nodes) => nodes.iter().any(|n| eval(n, channel, event, data)),
        Node::Not(n) => !eval(n, channel, event, data),
        Node::Event(test) => run_name(test, event),
        Node::Channel(test) => run_name(test, channel),
        Node::Field { path, test } => run(test, value_at(data, path)),
    }
}

/// JSON equality, numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// [`run`] on a name (an event's or a channel's), without making it a `Value` for every test.
fn run_name(test: &Test, name: &str) -> bool {
    let is = |v: &Value| v.as_str() == Some(name);
    match test {
        Test::Eq(x) => is(x),
        Test::Ne(x) => !is(x),
        Test::In(xs) => xs.iter().any(is),
        Test::Nin(xs) => !xs.iter().any(is),
        Test::Exists(want) => *want,
        Test::Prefix(p) => name.starts_with(p.as_str()),
        Test::Gt(_) | Test::Gte(_) | Test::Lt(_) | Test::Lte(_) => false,
    }
}

fn run(test: &Test, v: Option<&Value>) -> bool {
    let num = |f: &dyn Fn(f64) -> bool| v.and_then(Value::as_f64).is_some_and(f);
    match test {
        Test::Eq(x) => v.is_some_and(|v| same(v, x)),
        Test::Ne(x) => !v.is_some_and(|v| same(v, x)),
        Test::In(xs) => v.is_some_and(|v| xs.iter().any(|x| same(v, x))),
        Test::Nin(xs) => !v.is_some_and(|v| xs.iter().any(|x| same(v, x))),
        Test::Exists(want) => v.is_some() == *want,
        Test::Gt(x) => num(&|n| n > *x),
        Test::Gte(x) => num(&|n| n >= *x),
        Test::Lt(x) => num(&|n| n < *x),
        Test::Lte(x) => num(&|n| n <= *x),
        Test::Prefix(p) => v
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(p.as_str())),
    }
}

// --- the schema check ----------------------------------------------------------------------------

fn check_node(node: &Node, registry: &Registry, events: &[&str]) -> Result<(), FilterError> {
    match node {
        Node::All(nodes) | Node::Any(nodes) => nodes.iter().try_for_each(|n| check_node(n, registry, events)),
        Node::Not(n) => check_node(n, registry, events),
        Node::Channel(test) => match test {
            Test::Eq(v) | Test::Ne(v) if v.is_string() => Ok(()),
            Test::In(vs) | Test::Nin(vs) if vs.iter().all(Value::is_string) => Ok(()),
            Test::Prefix(_) => Ok(()),
            _ => Err(FilterError::Type {
                path: "channel".into(),
                message: "is a channel name: compare it with a string, eq, ne, in, nin or prefix".into(),
            }),
        },
        Node::Event(test) => {
            let names: Vec<&Value> = match test {
                Test::Eq(v) | Test::Ne(v) => vec![v],
                Test::In(vs) | Test::Nin(vs) => vs.iter().collect(),
                Test::Prefix(_) | Test::Exists(_) => vec![],
                _ => {
                    return Err(FilterError::Type {
                        path: "event".into(),
                        message: "is an event name: compare it with eq, ne, in, nin or prefix".into(),
                    })
                }
            };
            for v in names {
                if !v.as_str().is_some_and(|n| events.contains(&n)) {
                    return Err(FilterError::Type {
                        path: "event".into(),
                        message: format!(
                            "{v} is not an event of this subscription; they are {}",
                            events.join(", ")
                        ),
                    });
                }
            }
            Ok(())
        }
        Node::Field { path, test } => {
            let dotted = path.join(".");
            let found: Vec<(Value, String)> = events
                .iter()
                .filter_map(|e| registry.file().event(e))
                .filter_map(|e| resolve(&registry.file().root, &e.schema, &e.pointer, path))
                .collect();
            if found.is_empty() {
                return Err(FilterError::UnknownField {
                    path: dotted,
                    known: known_fields(registry, events),
                });
            }
            check_test(test, &dotted, &found, registry)
        }
    }
}

/// The JSON types a schema allows (`None`: any).
fn types_of(schema: &Value) -> Option<Vec<&str>> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(vec![t.as_str()]),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn check_test(
    test: &Test,
    path: &str,
    found: &[(Value, String)],
    registry: &Registry,
) -> Result<(), FilterError> {
    let allows = |kinds: &[&str]| {
        found
            .iter()
            .any(|(s, _)| types_of(s).is_none_or(|ts| ts.iter().any(|t| kinds.contains(t))))
    };
    let described = || {
        let mut out = String::new();
        for (i, (s, _)) in found.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            match (types_of(s), s.get("enum")) {
                (_, Some(e)) => {
                    let _ = write!(out, "one of {e}");
                }
                (Some(ts), None) => out.push_str(&ts.join("|")),
                (None, None) => out.push_str("any value"),
            }
        }
        out
    };
    match test {
        Test::Gt(_) | Test::Gte(_) | Test::Lt(_) | Test::Lte(_) => {
            if !allows(&["number", "integer"]) {
                return Err(FilterError::Type {
                    path: path.into(),
                    message: format!(
                        "is {}, not a number: gt, gte, lt and lte compare numbers",
                        described()
                    ),
                });
            }
        }
        Test::Prefix(_) => {
            if !allows(&["string"]) {
                return Err(FilterError::Type {
                    path: path.into(),
                    message: format!("is {}, not a string: prefix compares strings", described()),
                });
            }
        }
        Test::Eq(v) | Test::Ne(v) => allowed_value(v, path, found, registry, &described)?,
        Test::In(vs) | Test::Nin(vs) => {
            for v in vs {
                allowed_value(v, path, found, registry, &described)?;
            }
        }
        Test::Exists(_) => {}
    }
    Ok(())
}

/// `v` must be valid against at least one schema the path has.
fn allowed_value(
    v: &Value,
    path: &str,
    found: &[(Value, String)],
    registry: &Registry,
    described: &dyn Fn() -> String,
) -> Result<(), FilterError> {
    if found.iter().any(|(_, pointer)| registry.value_fits(pointer, v)) {
        return Ok(());
    }
    Err(FilterError::Type {
        path: path.into(),
        message: format!("cannot be {v}: the schema allows {}", described()),
    })
}

/// The schema at `path` below `schema` (at `pointer` in `root`), following `properties` and
/// local `$ref`s; `None` when no property of that name is declared.
fn resolve(root: &Value, schema: &Value, pointer: &str, path: &[String]) -> Option<(Value, String)> {
    let (mut schema, mut pointer) = deref(root, schema, pointer)?;
    for key in path {
        let props = schema.get("properties")?.as_object()?;
        let next = props.get(key)?;
        let here = format!(
            "{pointer}/properties/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        (schema, pointer) = deref(root, next, &here)?;
    }
    Some((schema, pointer))
}

/// Follows `$ref`s to `#/…` until a schema without one (at most a few hops).
fn deref(root: &Value, schema: &Value, pointer: &str) -> Option<(Value, String)> {
    let (mut schema, mut pointer) = (schema.clone(), pointer.to_string());
    for _ in 0..8 {
        let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
            return Some((schema, pointer));
        };
        let target = target.strip_prefix('#')?.to_string();
        schema = root.pointer(&target)?.clone();
        pointer = target;
    }
    None
}

/// The fields (paths) the events have, for an error message; at most 24.
fn known_fields(registry: &Registry, events: &[&str]) -> String {
    let mut fields: Vec<String> = Vec::new();
    fn walk(root: &Value, schema: &Value, pointer: &str, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Some((schema, pointer)) = deref(root, schema, pointer) else {
            return;
        };
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in props {
            let path = join_path(prefix, k);
            if !out.contains(&path) {
                out.push(path.clone());
            }
            if depth < 3 {
                walk(
                    root,
                    v,
                    &format!("{pointer}/properties/{k}"),
                    &path,
                    depth + 1,
                    out,
                );
            }
        }
    }
    let file = registry.file();
    for e in events.iter().filter_map(|e| file.event(e)) {
        walk(&file.root, &e.schema, &e.pointer, "", 0, &mut fields);
    }
    if fields.is_empty() {
        return "their payloads have no named fields (filter on event instead)".into();
    }
    let more = fields.len() > 24;
    fields.truncate(24);
    format!(
        "fields are {}{}",
        fields.join(", "),
        if more { ", …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> Registry {
        let text = r##"{
          "namespaces": {
            "order": {
              "placed": {
                "type": "object",
                "properties": {
                  "id": { "type": "integer" },
                  "total": { "type": "number" },
                  "tenant": { "type": "string" },
                  "status": { "$ref": "#/$defs/Status" },
                  "customer": {
                    "type": "object",
                    "properties": { "name": { "type": "string" }, "vip": { "type": "boolean" } }
                  }
                }
              },
              "note": { "type": "string" }
            },
            "chat": { "typing": { "type": "object", "properties": { "user": { "type": "string" } } } }
          },
          "$defs": { "Status": { "type": "string", "enum": ["new", "paid", "shipped"] } }
        }"##;
        Registry::new(tidings_codegen::SchemaFile::parse(text, "inline.json").unwrap()).unwrap()
    }

    const ALL: &[&str] = &["order.placed", "order.note", "chat.typing"];

    #[test]
    fn the_index_is_a_field_every_passing_event_has_one_of_a_few_values_at() {
        let index = |f: Value| {
            Filter::parse(&f).unwrap().index().map(|(path, mut keys)| {
                keys.sort();
                (path.join("."), keys)
            })
        };
        let keys = |path: &str, ks: &[&str]| {
            Some((
                path.to_string(),
                ks.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            ))
        };
        assert_eq!(index(json!({"tenant": "acme"})), keys("tenant", &["sacme"]));
        assert_eq!(index(json!({"id": {"in": [7, 8.0]}})), keys("id", &["n7", "n8"]));
        assert_eq!(
            index(json!({"status": {"ne": "x"}, "customer.vip": true})),
            keys("customer.vip", &["btrue"])
        );
        assert_eq!(
            index(json!({"or": [{"tenant": "a"}, {"tenant": {"in": ["b"]}}]})),
            keys("tenant", &["sa", "sb"])
        );
        // What a client merges for two subscriptions on one connection.
        let merged = json!({"or": [
            {"and": [{"channel": {"in": ["room:1"]}}, {"tenant": "a"}]},
            {"and": [{"channel": {"in": ["room:2"]}}, {"tenant": "b", "id": 3}]},
        ]});
        assert_eq!(index(merged), keys("tenant", &["sa", "sb"]));
        for none in [
            json!({"or": [{"tenant": "a"}, {"id": 1}]}),
            json!({"or": [{"tenant": "a"}, {"id": {"gt": 1}}]}),
            json!({"not": {"tenant": "a"}}),
            json!({"tenant": {"prefix": "a"}}),
            json!({"event": "order.placed"}),
        ] {
            assert_eq!(index(none.clone()), None, "{none}");
        }
    }

    fn compiled(f: Value) -> Filter {
        let filter = Filter::parse(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        filter
            .check(&registry(), ALL)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        filter
    }

    fn order() -> Value {
        json!({"id": 7, "total": 19.5, "tenant": "acme", "status": "paid", "customer": {"name": "Ada", "vip": true}})
    }

    #[test]
    fn every_operator_on_every_kind_of_field() {
        let o = order();
        let cases = [
            (json!({"tenant": "acme"}), true),
            (json!({"tenant": "other"}), false),
            (json!({"id": 7.0}), true),
            (json!({"id": {"eq": 7}}), true),
            (json!({"id": {"ne": 7}}), false),
            (json!({"status": {"in": ["paid", "shipped"]}}), true),
            (json!({"status": {"nin": ["paid", "shipped"]}}), false),
            (json!({"total": {"gt": 19.5}}), false),
            (json!({"total": {"gte": 19.5}}), true),
            (json!({"total": {"lt": 20}}), true),
            (json!({"total": {"lte": 19}}), false),
            (json!({"customer.name": {"prefix": "A"}}), true),
            (json!({"customer.vip": true}), true),
            (json!({"customer.name": {"exists": true}}), true),
            (json!({"customer.vip": {"exists": false}}), false),
            (json!({"event": "order.placed"}), true),
            (json!({"event": {"in": ["order.note"]}}), false),
            (json!({"event": {"prefix": "order."}}), true),
            (json!({"event": {"ne": "order.placed"}}), false),
            (json!({"event": {"nin": ["order.note", "chat.typing"]}}), true),
            (json!({"event": {"eq": "order.note"}}), false),
            (json!({"tenant": "acme", "status": "new"}), false),
            (json!({"or": [{"status": "new"}, {"customer.vip": true}]}), true),
            (
                json!({"and": [{"tenant": "acme"}, {"not": {"status": "shipped"}}]}),
                true,
            ),
            (json!({"not": {"or": [{"id": 7}, {"id": 8}]}}), false),
            (json!({"channel": "shop:1"}), true),
            (json!({"channel": {"in": ["shop:2"]}}), false),
            (json!({"channel": {"prefix": "shop:"}, "tenant": "acme"}), true),
            (json!({"channel": {"ne": "shop:1"}}), false),
            (json!({"channel": {"nin": ["shop:2"]}}), true),
        ];
        for (f, want) in cases {
            assert_eq!(
                compiled(f.clone()).matches("shop:1", "order.placed", &o),
                want,
                "{f}"
            );
        }
    }

    #[test]
    fn a_missing_field_equals_nothing() {
        let data = json!({"user": "ada"});
        assert!(!compiled(json!({"tenant": "acme"})).matches("c", "chat.typing", &data));
        assert!(compiled(json!({"tenant": {"ne": "acme"}})).matches("c", "chat.typing", &data));
        assert!(compiled(json!({"tenant": {"nin": ["acme"]}})).matches("c", "chat.typing", &data));
        assert!(compiled(json!({"tenant": {"exists": false}})).matches("c", "chat.typing", &data));
        assert!(!compiled(json!({"total": {"lt": 100}})).matches("c", "chat.typing", &data));
        // A payload that is not an object (order.note is a string) has no fields.
        assert!(!compiled(json!({"tenant": "acme"})).matches("c", "order.note", &json!("hi")));
    }

    fn refused(f: Value, events: &[&str]) -> String {
        match Filter::parse(&f).and_then(|filter| filter.check(&registry(), events)) {
            Ok(()) => panic!("accepted: {f}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_schema_refuses_what_no_event_allows() {
        for (f, events, mentions) in [
            (
                json!({"color": "red"}),
                ALL,
                vec!["no event", "\"color\"", "tenant", "customer.name"],
            ),
            (json!({"customer.age": 3}), ALL, vec!["customer.age"]),
            // The field exists, but not in the events the subscription gets.
            (
                json!({"tenant": "acme"}),
                &["chat.typing"][..],
                vec!["\"tenant\"", "fields are user"],
            ),
            (
                json!({"tenant": {"gt": 3}}),
                ALL,
                vec!["\"tenant\"", "string", "not a number"],
            ),
            (
                json!({"id": {"prefix": "1"}}),
                ALL,
                vec!["\"id\"", "integer", "not a string"],
            ),
            (
                json!({"status": "lost"}),
                ALL,
                vec!["\"status\"", "\"lost\"", "one of [\"new\",\"paid\",\"shipped\"]"],
            ),
            (json!({"status": {"in": ["paid", 3]}}), ALL, vec!["cannot be 3"]),
            (json!({"id": "7"}), ALL, vec!["cannot be \"7\"", "integer"]),
            (json!({"customer.vip": "yes"}), ALL, vec!["boolean"]),
            (
                json!({"event": "order.shipped"}),
                ALL,
                vec!["not an event of this subscription"],
            ),
            (json!({"event": {"gt": 1}}), ALL, vec!["event name"]),
            (json!({"channel": 3}), ALL, vec!["channel name"]),
        ] {
            let e = refused(f.clone(), events);
            for m in mentions {
                assert!(e.contains(m), "{f}: {e:?} should mention {m:?}");
            }
        }
    }

    #[test]
    fn malformed_and_oversized_filters_say_what_is_allowed() {
        for (f, mentions) in [
            (json!([1]), vec!["JSON object"]),
            (json!({}), vec!["empty filter"]),
            (json!({"and": {}}), vec!["and", "array"]),
            (json!({"or": []}), vec!["at least one"]),
            (json!({"id": {"gt": 1, "lt": 9}}), vec!["one operator per field"]),
            (
                json!({"id": {"between": [1, 9]}}),
                vec!["unknown operator", "between", "prefix"],
            ),
            (
                json!({"customer": {"name": "Ada"}}),
                vec!["unknown operator", "dotted paths"],
            ),
            (json!({"id": [1, 2]}), vec!["in"]),
            (json!({"id": {"in": 3}}), vec!["array"]),
            (json!({"id": {"gt": "3"}}), vec!["number"]),
            (json!({"a..b": 1}), vec!["dots"]),
            (
                json!({"and": [{"or": [{"tenant": {"exists": "yes"}}]}]}),
                vec!["at and[0].or[0].tenant", "true or false"],
            ),
        ] {
            let e = Filter::parse(&f)
                .err()
                .unwrap_or_else(|| panic!("accepted {f}"))
                .to_string();
            for m in mentions {
                assert!(e.contains(m), "{f}: {e:?} should mention {m:?}");
            }
        }
        let mut deep = json!({"tenant": "acme"});
        for _ in 0..=MAX_FILTER_DEPTH {
            deep = json!({ "not": deep });
        }
        assert!(matches!(
            Filter::parse(&deep),
            Err(FilterError::TooLarge { what: "deep", .. })
        ));
        let many: Vec<Value> = (0..=MAX_FILTER_TESTS).map(|i| json!({ "id": i })).collect();
        assert!(matches!(
            Filter::parse(&json!({ "or": many })),
            Err(FilterError::TooLarge { what: "large", .. })
        ));
        let long = format!(r#"{{"tenant":"{}"}}"#, "x".repeat(MAX_FILTER_BYTES));
        assert!(matches!(
            Filter::parse_str(&long),
            Err(FilterError::TooLarge { what: "long", .. })
        ));
        assert!(Filter::parse_str("{nope")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }

    #[test]
    fn an_imposed_filter_cannot_be_widened() {
        let imposed = Filter::parse(&json!({"tenant": "acme"})).unwrap();
        let own = Filter::parse(&json!({"or": [{"tenant": "other"}, {"id": {"gte": 0}}]})).unwrap();
        let both = imposed.and(own);
        let mut other = order();
        other["tenant"] = json!("other");
        assert!(both.matches("c", "order.placed", &order()));
        assert!(
            !both.matches("c", "order.placed", &other),
            "the client's or cannot reach another tenant"
        );
    }
}
