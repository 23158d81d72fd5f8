//! Loading and checking an event schema file.
//!
//! A schema file is JSON Schema 2020-12 wrapped in a small envelope:
//!
//! ```json
//! {
//!   "$schema": "https://json-schema.org/draft/2020-12/schema",
//!   "namespaces": {
//!     "chat": {
//!       "message": { "type": "object", "properties": { "user": { "$ref": "#/$defs/User" } } }
//!     }
//!   },
//!   "$defs": { "User": { "type": "string" } }
//! }
//! ```
//!
//! Everything the code generators would otherwise trip over (typify panics on unresolvable
//! references, silently merges types whose names collide) is rejected here with an error that
//! names the file, the event and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use heck::ToPascalCase;
use serde_json::{Map, Value};

/// Keys allowed at the top level of a schema file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "$schema",
    "$id",
    "title",
    "description",
    "namespaces",
    "$defs",
    "presence",
];

/// The pattern namespace and event names must match.
pub const NAME_PATTERN: &str = "[a-z][a-z0-9_]*";

/// The pattern `$defs` names must match.
pub const DEF_NAME_PATTERN: &str = "[A-Za-z][A-Za-z0-9_-]*";

/// Type names that the generators emit themselves (Rust `Event`; TypeScript `EventMap`,
/// `EventName`, `Envelope`, `Payload`, and `Client` and `SubscribeOptions` in `index.ts`); no
/// event or `$defs` entry may take them.
pub const RESERVED_TYPE_NAMES: &[&str] = &[
    "Event",
    "EventMap",
    "EventName",
    "Envelope",
    "Payload",
    "Client",
    "SubscribeOptions",
];

/// A parsed and checked schema file.
///
/// # Example
///
/// ```
/// use tidings_codegen::SchemaFile;
///
/// let schema = SchemaFile::parse(
///     r#"{ "namespaces": { "chat": { "message": { "type": "string" } } } }"#,
///     "inline.json",
/// )?;
/// let event = schema.event("chat.message").unwrap();
/// assert_eq!(event.type_name, "ChatMessage");
/// assert_eq!(event.pointer, "/namespaces/chat/message");
/// # Ok::<(), tidings_codegen::SchemaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SchemaFile {
    /// Where the schema came from (a path or a caller-chosen label); starts every error message.
    pub origin: String,
    /// The whole document as parsed.
    pub root: Value,
    /// The shared types of `$defs`, in file order.
    pub defs: Map<String, Value>,
    /// Every event, in file order (namespace by namespace).
    pub events: Vec<EventDef>,
    /// The data presence members join with, per channel pattern (top-level `"presence"`), in
    /// file order.
    pub presence: Vec<PresenceDef>,
}

/// The data members of the channels a pattern matches join their presence with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PresenceDef {
    /// The channel pattern, as `--presence` takes it: `doc:*` (a trailing `*` matches any rest).
    pub pattern: String,
    /// The generated type name: PascalCase of the pattern's words, then `Presence` (`doc:*` →
    /// `DocPresence`).
    pub type_name: String,
    /// The data's JSON Schema.
    pub schema: Value,
    /// JSON pointer to it within [`SchemaFile::root`], e.g. `/presence/doc:*`.
    pub pointer: String,
}

/// One event of a schema file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventDef {
    /// The namespace, e.g. `chat`.
    pub namespace: String,
    /// The event within its namespace, e.g. `message`.
    pub event: String,
    /// The wire name, `namespace.event`, e.g. `chat.message`.
    pub name: String,
    /// The generated Rust and TypeScript type name, e.g. `ChatMessage`.
    pub type_name: String,
    /// The payload's JSON Schema (an object or a boolean).
    pub schema: Value,
    /// The schema's `description`, if it has one.
    pub description: Option<String>,
    /// JSON pointer to the payload schema within [`SchemaFile::root`],
    /// e.g. `/namespaces/chat/message`.
    pub pointer: String,
}

/// An item of a schema file that an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaItem {
    /// An event, by wire name (`chat.message`).
    Event(String),
    /// The presence data of a channel pattern.
    Presence(String),
    /// An entry of `$defs`, by name.
    Def(String),
}

impl fmt::Display for SchemaItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaItem::Event(name) => write!(f, "event \"{name}\""),
            SchemaItem::Presence(pattern) => write!(f, "presence of \"{pattern}\""),
            SchemaItem::Def(name) => write!(f, "$defs entry \"{name}\""),
        }
    }
}

/// What is wrong with a `$ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefProblem {
    /// The value of `$ref` is not a string.
    NotAString,
    /// The reference points outside the file (a URL or a relative path).
    External,
    /// A local reference that is not of the form `#/$defs/<Name>` (e.g. `#/definitions/X`).
    NotDefs,
    /// `#/$defs/<Name>` where `$defs` has no entry `<Name>`.
    Missing,
}

impl fmt::Display for RefProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefProblem::NotAString => "must be a string of the form \"#/$defs/<Name>\"",
            RefProblem::External => {
                "is an external reference; only local references \"#/$defs/<Name>\" are supported"
            }
            RefProblem::NotDefs => "is not supported; references must have the form \"#/$defs/<Name>\"",
            RefProblem::Missing => "does not name an entry of $defs",
        })
    }
}

/// Why a schema file was rejected. Every message starts with the file's origin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    #[error("{origin}: cannot read the schema file: {source}")]
    Read {
        /// The file.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{origin}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The file's structure is wrong: the top level is not an object, `namespaces` is missing
    /// or not an object, a namespace is not an object, `$defs` is not an object, or there are no
    /// events at all.
    #[error("{origin}: {problem}")]
    Structure {
        /// The file.
        origin: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// A top-level key other than `$schema`, `$id`, `title`, `description`, `namespaces` and
    /// `$defs`.
    #[error(
        "{origin}: unknown top-level key \"{key}\"; allowed keys are $schema, $id, title, \
         description, namespaces and $defs"
    )]
    UnknownKey {
        /// The file.
        origin: String,
        /// The key.
        key: String,
    },
    /// A namespace name that does not match [`NAME_PATTERN`].
    #[error("{origin}: invalid namespace name \"{namespace}\": names must match {NAME_PATTERN}")]
    InvalidNamespaceName {
        /// The file.
        origin: String,
        /// The offending name.
        namespace: String,
    },
    /// An event name that does not match [`NAME_PATTERN`].
    #[error(
        "{origin}: event \"{namespace}.{event}\": invalid event name \"{event}\": names must \
         match {NAME_PATTERN}"
    )]
    InvalidEventName {
        /// The file.
        origin: String,
        /// The event's namespace.
        namespace: String,
        /// The offending name.
        event: String,
    },
    /// A `$defs` name that does not match [`DEF_NAME_PATTERN`] and so does not make a usable type
    /// name.
    #[error(
        "{origin}: $defs entry \"{name}\": the name does not make a valid type name; \
         $defs names must match {DEF_NAME_PATTERN}"
    )]
    InvalidDefName {
        /// The file.
        origin: String,
        /// The offending name.
        name: String,
    },
    /// A payload or `$defs` schema that is neither an object nor a boolean.
    #[error("{origin}: {item}: the schema must be a JSON object or a boolean, found {found}")]
    InvalidSchema {
        /// The file.
        origin: String,
        /// The event or `$defs` entry.
        item: SchemaItem,
        /// The JSON type found instead (`an array`, `a string`, ...).
        found: &'static str,
    },
    /// A `$ref` that does not name an existing entry of the top-level `$defs`.
    #[error("{origin}: {item}: $ref {reference} {problem} (at {pointer})")]
    InvalidRef {
        /// The file.
        origin: String,
        /// The event or `$defs` entry containing the reference.
        item: SchemaItem,
        /// The reference as written (JSON-quoted when it is a string).
        reference: String,
        /// What is wrong with it.
        problem: RefProblem,
        /// JSON pointer to the `$ref` within the file.
        pointer: String,
    },
    /// A construct the generators cannot honour, such as `$defs` nested inside an event.
    #[error("{origin}: {item}: {problem} (at {pointer})")]
    Unsupported {
        /// The file.
        origin: String,
        /// The event or `$defs` entry.
        item: SchemaItem,
        /// What is not supported, and what to do instead.
        problem: String,
        /// JSON pointer to the construct within the file.
        pointer: String,
    },
    /// Two items generate the same type name.
    #[error("{origin}: {first} and {second} both generate the type name {type_name}; rename one")]
    NameCollision {
        /// The file.
        origin: String,
        /// The shared type name.
        type_name: String,
        /// The item that came first.
        first: SchemaItem,
        /// The item that came second.
        second: SchemaItem,
    },
    /// An item whose type name is one the generators emit themselves.
    #[error(
        "{origin}: {item}: generates the type name {type_name}, which is reserved for \
         generated code; rename it"
    )]
    ReservedName {
        /// The file.
        origin: String,
        /// The event or `$defs` entry.
        item: SchemaItem,
        /// The reserved name.
        type_name: String,
    },
}

impl SchemaError {
    /// The origin (file path or label) of the schema the error is about.
    pub fn origin(&self) -> &str {
        match self {
            SchemaError::Read { origin, .. }
            | SchemaError::Json { origin, .. }
            | SchemaError::Structure { origin, .. }
            | SchemaError::UnknownKey { origin, .. }
            | SchemaError::InvalidNamespaceName { origin, .. }
            | SchemaError::InvalidEventName { origin, .. }
            | SchemaError::InvalidDefName { origin, .. }
            | SchemaError::InvalidSchema { origin, .. }
            | SchemaError::InvalidRef { origin, .. }
            | SchemaError::Unsupported { origin, .. }
            | SchemaError::NameCollision { origin, .. }
            | SchemaError::ReservedName { origin, .. } => origin,
        }
    }

    /// The wire name of the event the error is about, if it is about one.
    pub fn event(&self) -> Option<&str> {
        match self {
            SchemaError::InvalidSchema { item, .. }
            | SchemaError::InvalidRef { item, .. }
            | SchemaError::Unsupported { item, .. }
            | SchemaError::ReservedName { item, .. } => match item {
                SchemaItem::Event(name) => Some(name),
                SchemaItem::Def(_) | SchemaItem::Presence(_) => None,
            },
            SchemaError::NameCollision { first, second, .. } => match (first, second) {
                (SchemaItem::Event(name), _) | (_, SchemaItem::Event(name)) => Some(name),
                _ => None,
            },
            _ => None,
        }
    }
}

impl SchemaFile {
    /// Reads and checks the schema file at `path`; error messages name the path as given.
    ///
    /// # Errors
    ///
    /// [`SchemaError::Read`] when the file cannot be read, otherwise as [`SchemaFile::parse`].
    pub fn load(path: impl AsRef<Path>) -> Result<SchemaFile, SchemaError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            origin: origin.clone(),
            source,
        })?;
        SchemaFile::parse(&text, &origin)
    }

    /// Parses and checks a schema file's text. `origin` (usually the path) starts every error
    /// message.
    ///
    /// # Errors
    ///
    /// A [`SchemaError`] for invalid JSON, a malformed envelope, a bad namespace, event or
    /// `$defs` name, a payload schema that is not an object or boolean, a `$ref` that is not a
    /// local `#/$defs/<Name>` naming an existing entry, `$defs` nested inside an item, type
    /// names that collide or are reserved, or a file without events.
    pub fn parse(text: &str, origin: &str) -> Result<SchemaFile, SchemaError> {
        let root: Value = serde_json::from_str(text).map_err(|e| SchemaError::Json {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let structure = |problem: String| SchemaError::Structure {
            origin: origin.to_string(),
            problem,
        };

        let Some(top) = root.as_object() else {
            return Err(structure(format!(
                "the top level must be a JSON object with a \"namespaces\" key, found {}",
                json_kind(&root)
            )));
        };
        if let Some(key) = top.keys().find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
            return Err(SchemaError::UnknownKey {
                origin: origin.to_string(),
                key: key.clone(),
            });
        }

        let defs = match top.get("$defs") {
            None => Map::new(),
            Some(Value::Object(defs)) => defs.clone(),
            Some(other) => {
                return Err(structure(format!(
                    "\"$defs\" must be an object of name → schema, found {}",
                    json_kind(other)
                )))
            }
        };

        let namespaces = match top.get("namespaces") {
            None => {
                return Err(structure(
                    "missing required key \"namespaces\" (an object of namespace → event → \
                     payload schema)"
                        .to_string(),
                ))
            }
            Some(Value::Object(namespaces)) => namespaces,
            Some(other) => {
                return Err(structure(format!(
                    "\"namespaces\" must be an object of namespace → event → payload schema, \
                     found {}",
                    json_kind(other)
                )))
            }
        };

        let mut events = Vec::new();
        for (namespace, members) in namespaces {
            if !is_lower_name(namespace) {
                return Err(SchemaError::InvalidNamespaceName {
                    origin: origin.to_string(),
                    namespace: namespace.clone(),
                });
            }
            let Some(members) = members.as_object() else {
                return Err(structure(format!(
                    "namespace \"{namespace}\" must be an object of event name → payload \
                     schema, found {}",
                    json_kind(members)
                )));
            };
            for (event, schema) in members {
                if !is_lower_name(event) {
                    return Err(SchemaError::InvalidEventName {
                        origin: origin.to_string(),
                        namespace: namespace.clone(),
                        event: event.clone(),
                    });
                }
                events.push(EventDef {
                    namespace: namespace.clone(),
                    event: event.clone(),
                    name: format!("{namespace}.{event}"),
                    type_name: event_type_name(namespace, event),
                    description: schema
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    schema: schema.clone(),
                    pointer: format!(
                        "/namespaces/{}/{}",
                        escape_pointer(namespace),
                        escape_pointer(event)
                    ),
                });
            }
        }
        if events.is_empty() {
            return Err(structure(
                "no events: \"namespaces\" must contain at least one namespace with at least \
                 one event"
                    .to_string(),
            ));
        }

        let mut presence = Vec::new();
        match top.get("presence") {
            None => {}
            Some(Value::Object(patterns)) => {
                for (pattern, schema) in patterns {
                    let words: Vec<&str> = pattern
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .filter(|w| !w.is_empty() && *w != "sub")
                        .collect();
                    let valid = !pattern.is_empty()
                        && pattern
                            .replace("{sub}", "")
                            .trim_end_matches('*')
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
                        && !words.is_empty()
                        && words[0].starts_with(|c: char| c.is_ascii_alphabetic());
                    if !valid {
                        return Err(structure(format!(
                            "presence pattern {pattern:?} is not a channel pattern: use channel characters \
                             (A-Z a-z 0-9 _ - : .), {{sub}}, and an optional trailing *, starting with a word, \
                             such as \"doc:*\""
                        )));
                    }
                    if !schema.is_object() && !schema.is_boolean() {
                        return Err(structure(format!(
                            "presence of {pattern:?} must be a JSON Schema (an object or a boolean), found {}",
                            json_kind(schema)
                        )));
                    }
                    presence.push(PresenceDef {
                        pattern: pattern.clone(),
                        type_name: format!("{}Presence", words.join("_").to_pascal_case()),
                        schema: schema.clone(),
                        pointer: format!("/presence/{}", escape_pointer(pattern)),
                    });
                }
            }
            Some(other) => {
                return Err(structure(format!(
                    "\"presence\" must be an object of channel pattern → JSON Schema of the data members \
                     join with, found {}",
                    json_kind(other)
                )))
            }
        }

        for name in defs.keys() {
            if !is_def_name(name) {
                return Err(SchemaError::InvalidDefName {
                    origin: origin.to_string(),
                    name: name.clone(),
                });
            }
        }

        // Type names: reserved words first, then collisions in file order (defs come first in
        // generated code, so a def "owns" its name and the event is reported second).
        let mut taken: BTreeMap<String, SchemaItem> = BTreeMap::new();
        let items = defs
            .keys()
            .map(|name| (def_type_name(name), SchemaItem::Def(name.clone())))
            .chain(
                events
                    .iter()
                    .map(|e| (e.type_name.clone(), SchemaItem::Event(e.name.clone()))),
            )
            .chain(
                presence
                    .iter()
                    .map(|p| (p.type_name.clone(), SchemaItem::Presence(p.pattern.clone()))),
            );
        for (type_name, item) in items {
            if RESERVED_TYPE_NAMES.contains(&type_name.as_str()) {
                return Err(SchemaError::ReservedName {
                    origin: origin.to_string(),
                    item,
                    type_name,
                });
            }
            if let Some(first) = taken.get(&type_name) {
                return Err(SchemaError::NameCollision {
                    origin: origin.to_string(),
                    type_name,
                    first: first.clone(),
                    second: item,
                });
            }
            taken.insert(type_name, item);
        }

        // Schemas and references.
        let checker = Checker { origin, defs: &defs };
        for (name, schema) in &defs {
            let item = SchemaItem::Def(name.clone());
            checker.check_item(&item, schema, &def_pointer(name))?;
        }
        for event in &events {
            let item = SchemaItem::Event(event.name.clone());
            checker.check_item(&item, &event.schema, &event.pointer)?;
        }
        for p in &presence {
            let item = SchemaItem::Presence(p.pattern.clone());
            checker.check_item(&item, &p.schema, &p.pointer)?;
        }

        Ok(SchemaFile {
            origin: origin.to_string(),
            root,
            defs,
            events,
            presence,
        })
    }

    /// The event with wire name `name` (`chat.message`).
    pub fn event(&self, name: &str) -> Option<&EventDef> {
        self.events.iter().find(|e| e.name == name)
    }

    /// The generated type name of a `$defs` entry, the same in Rust and TypeScript
    /// (`user_name` → `UserName`).
    pub fn def_type_name(&self, name: &str) -> String {
        def_type_name(name)
    }
}

/// The type name of event `namespace.event`: PascalCase of `namespace_event`.
pub(crate) fn event_type_name(namespace: &str, event: &str) -> String {
    format!("{namespace}_{event}").to_pascal_case()
}

/// The type name of a `$defs` entry, computed the way typify sanitizes names (PascalCase after
/// turning separators into word breaks), so that Rust and TypeScript agree.
pub(crate) fn def_type_name(name: &str) -> String {
    name.to_pascal_case()
}

/// The `$defs` name a `#/$defs/<Name>` reference targets, if the reference has that form.
pub(crate) fn def_ref_target(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("#/$defs/")
        .filter(|name| !name.contains('/'))
}

fn is_lower_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn is_def_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        // Names made only of separators after the first letter still sanitize fine, but a
        // name like "self" would become the keyword `Self`.
        && def_type_name(name) != "Self"
}

/// JSON pointer of a `$defs` entry within the file.
pub(crate) fn def_pointer(name: &str) -> String {
    format!("/$defs/{}", escape_pointer(name))
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json appends " at line L column C" to its messages; we report position separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

/// Keywords whose value is a single schema.
const SCHEMA_KEYWORDS: &[&str] = &[
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "contentSchema",
];

/// Keywords whose value is an array of schemas.
const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// Keywords whose value is an object of name → schema.
const SCHEMA_MAP_KEYWORDS: &[&str] = &["properties", "patternProperties", "dependentSchemas"];

/// A callback of [`visit_schemas`]: a schema object and its JSON pointer.
pub(crate) type Visitor<'a, E> = dyn FnMut(&Map<String, Value>, &str) -> Result<(), E> + 'a;

/// Calls `f` on every schema object within `schema` (itself included), with its JSON pointer.
///
/// Only keywords that hold schemas are followed: `enum`, `const`, `default`, `examples` and
/// unknown keywords hold data, in which a `"$ref"` is just a string.
pub(crate) fn visit_schemas<E>(schema: &Value, pointer: &str, f: &mut Visitor<'_, E>) -> Result<(), E> {
    // Anything but an object is a boolean schema or malformed input that the generators treat
    // as "any value"; there is nothing inside it.
    let Value::Object(object) = schema else {
        return Ok(());
    };
    f(object, pointer)?;
    for (key, value) in object {
        let here = format!("{pointer}/{}", escape_pointer(key));
        let k = key.as_str();
        if SCHEMA_KEYWORDS.contains(&k) {
            match value {
                // Draft 4-7 tuple form of `items`.
                Value::Array(schemas) => visit_all(schemas, &here, f)?,
                _ => visit_schemas(value, &here, f)?,
            }
        } else if SCHEMA_ARRAY_KEYWORDS.contains(&k) {
            if let Value::Array(schemas) = value {
                visit_all(schemas, &here, f)?;
            }
        } else if SCHEMA_MAP_KEYWORDS.contains(&k) {
            if let Value::Object(map) = value {
                for (name, sub) in map {
                    visit_schemas(sub, &format!("{here}/{}", escape_pointer(name)), f)?;
                }
            }
        }
    }
    Ok(())
}

fn visit_all<E>(schemas: &[Value], pointer: &str, f: &mut Visitor<'_, E>) -> Result<(), E> {
    for (i, sub) in schemas.iter().enumerate() {
        visit_schemas(sub, &format!("{pointer}/{i}"), f)?;
    }
    Ok(())
}

/// Checks one item's schema: its shape, every `$ref`, and that it nests no `$defs`.
struct Checker<'a> {
    origin: &'a str,
    defs: &'a Map<String, Value>,
}

impl Checker<'_> {
    fn check_item(&self, item: &SchemaItem, schema: &Value, pointer: &str) -> Result<(), SchemaError> {
        if !matches!(schema, Value::Bool(_) | Value::Object(_)) {
            return Err(SchemaError::InvalidSchema {
                origin: self.origin.to_string(),
                item: item.clone(),
                found: json_kind(schema),
            });
        }
        visit_schemas(schema, pointer, &mut |object, here| {
            for key in ["$defs", "definitions"] {
                if object.contains_key(key) {
                    return Err(SchemaError::Unsupported {
                        origin: self.origin.to_string(),
                        item: item.clone(),
                        problem: format!(
                            "\"{key}\" inside a schema is not supported; put shared types in \
                             the top-level \"$defs\" and refer to them as \"#/$defs/<Name>\""
                        ),
                        pointer: format!("{here}/{}", escape_pointer(key)),
                    });
                }
            }
            match object.get("$ref") {
                Some(reference) => self.check_ref(item, reference, &format!("{here}/$ref")),
                None => Ok(()),
            }
        })
    }

    fn check_ref(&self, item: &SchemaItem, value: &Value, pointer: &str) -> Result<(), SchemaError> {
        let problem = match value {
            Value::String(reference) if !reference.starts_with('#') => Some(RefProblem::External),
            Value::String(reference) => match def_ref_target(reference) {
                None => Some(RefProblem::NotDefs),
                Some(name) if !self.defs.contains_key(name) => Some(RefProblem::Missing),
                Some(_) => None,
            },
            _ => Some(RefProblem::NotAString),
        };
        match problem {
            None => Ok(()),
            Some(problem) => Err(SchemaError::InvalidRef {
                origin: self.origin.to_string(),
                item: item.clone(),
                reference: value.to_string(),
                problem,
                pointer: pointer.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "schema/events.json";

    fn parse(text: &str) -> Result<SchemaFile, SchemaError> {
        SchemaFile::parse(text, ORIGIN)
    }

    /// The error message for a schema that must be rejected.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    /// A file with one event `chat.message` whose payload schema is `payload`, and `defs`.
    fn with_event(payload: &str, defs: &str) -> String {
        format!(r#"{{ "namespaces": {{ "chat": {{ "message": {payload} }} }}, "$defs": {defs} }}"#)
    }

    #[test]
    fn presence_entries_are_parsed_checked_and_named() {
        let schema = parse(
            r##"{ "namespaces": { "chat": { "message": true } },
                  "$defs": { "Name": { "type": "string" } },
                  "presence": {
                    "doc:*": { "properties": { "by": { "$ref": "#/$defs/Name" } } },
                    "user:{sub}:inbox": true
                  } }"##,
        )
        .unwrap();
        let got: Vec<(&str, &str, &str)> = schema
            .presence
            .iter()
            .map(|p| (p.pattern.as_str(), p.type_name.as_str(), p.pointer.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("doc:*", "DocPresence", "/presence/doc:*"),
                (
                    "user:{sub}:inbox",
                    "UserInboxPresence",
                    "/presence/user:{sub}:inbox"
                )
            ]
        );
        for (presence, mentions) in [
            (r#""presence": []"#, "\"presence\" must be an object"),
            (r#""presence": { "doc 1": {} }"#, "not a channel pattern"),
            (r#""presence": { "*": {} }"#, "not a channel pattern"),
            (r#""presence": { "doc:*": 3 }"#, "must be a JSON Schema"),
            (
                r##""presence": { "doc:*": { "$ref": "#/$defs/Nope" } }"##,
                "presence of \"doc:*\"",
            ),
            // Its type name taken by an event: `chat_presence` and `chat:*` both name ChatPresence.
            (r#""presence": { "chat:*": {} }"#, "ChatPresence"),
        ] {
            let text = format!(
                r#"{{ "namespaces": {{ "chat": {{ "message": true, "presence": true }} }}, {presence} }}"#
            );
            let e = error(&text);
            assert!(e.contains(mentions), "{presence}: {e}");
        }
    }

    #[test]
    fn parses_events_and_defs_in_file_order() {
        let schema = parse(
            r##"{
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": "x", "title": "t", "description": "d",
                "namespaces": {
                    "notification": { "alert": { "type": "string", "description": "Alert." } },
                    "chat": {
                        "typing": true,
                        "message": { "properties": { "user": { "$ref": "#/$defs/user_name" } } }
                    }
                },
                "$defs": { "user_name": { "type": "string" }, "Z": {}, "A": {} }
            }"##,
        )
        .unwrap();
        let names: Vec<&str> = schema.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["notification.alert", "chat.typing", "chat.message"]);
        let defs: Vec<&str> = schema.defs.keys().map(String::as_str).collect();
        assert_eq!(defs, ["user_name", "Z", "A"]);

        let alert = schema.event("notification.alert").unwrap();
        assert_eq!(alert.namespace, "notification");
        assert_eq!(alert.event, "alert");
        assert_eq!(alert.type_name, "NotificationAlert");
        assert_eq!(alert.description.as_deref(), Some("Alert."));
        assert_eq!(alert.pointer, "/namespaces/notification/alert");
        assert_eq!(schema.root.pointer(&alert.pointer), Some(&alert.schema));
        assert_eq!(schema.event("chat.typing").unwrap().schema, Value::Bool(true));
        assert!(schema.event("chat.nope").is_none());
        assert_eq!(schema.def_type_name("user_name"), "UserName");
    }

    #[test]
    fn type_names_are_pascal_case() {
        assert_eq!(event_type_name("chat", "message"), "ChatMessage");
        assert_eq!(event_type_name("chat_room", "user_left"), "ChatRoomUserLeft");
        assert_eq!(event_type_name("v2", "x"), "V2X");
        assert_eq!(def_type_name("user-name"), "UserName");
        assert_eq!(def_type_name("HTTPStatus"), "HttpStatus");
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let e = parse("{\n  \"namespaces\": {,\n}").unwrap_err();
        assert!(
            matches!(
                e,
                SchemaError::Json {
                    line: 2,
                    column: 18,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "schema/events.json: invalid JSON at line 2, column 18: key must be a string"
        );
    }

    #[test]
    fn top_level_must_be_an_object() {
        assert_eq!(
            error("[1]"),
            "schema/events.json: the top level must be a JSON object with a \"namespaces\" key, \
             found an array"
        );
    }

    #[test]
    fn namespaces_is_required() {
        let message = error(r#"{ "title": "x" }"#);
        assert!(message.starts_with("schema/events.json: missing required key \"namespaces\""));
    }

    #[test]
    fn unknown_top_level_keys_are_rejected() {
        let message = error(r#"{ "namespaces": {}, "definitions": {} }"#);
        assert!(
            message.starts_with("schema/events.json: unknown top-level key \"definitions\";"),
            "{message}"
        );
        assert!(message.contains("namespaces and $defs"), "{message}");
    }

    #[test]
    fn namespaces_and_defs_must_be_objects() {
        assert!(error(r#"{ "namespaces": [] }"#)
            .starts_with("schema/events.json: \"namespaces\" must be an object"));
        assert_eq!(
            error(r#"{ "namespaces": { "chat": "message" } }"#),
            "schema/events.json: namespace \"chat\" must be an object of event name → payload \
             schema, found a string"
        );
        assert!(error(&with_event("{}", "[]")).starts_with("schema/events.json: \"$defs\" must be an object"));
    }

    #[test]
    fn names_must_match_the_pattern() {
        assert_eq!(
            error(r#"{ "namespaces": { "Chat": { "message": {} } } }"#),
            "schema/events.json: invalid namespace name \"Chat\": names must match [a-z][a-z0-9_]*"
        );
        assert_eq!(
            error(r#"{ "namespaces": { "chat": { "new-message": {} } } }"#),
            "schema/events.json: event \"chat.new-message\": invalid event name \"new-message\": \
             names must match [a-z][a-z0-9_]*"
        );
        assert!(
            error(r#"{ "namespaces": { "chat": { "1st": {} } } }"#).contains("invalid event name \"1st\"")
        );
        assert!(error(r#"{ "namespaces": { "": { "x": {} } } }"#).contains("invalid namespace name \"\""));
    }

    #[test]
    fn event_schemas_must_be_objects_or_booleans() {
        assert_eq!(
            error(&with_event(r#""string""#, "{}")),
            "schema/events.json: event \"chat.message\": the schema must be a JSON object or a \
             boolean, found a string"
        );
        let e = parse(&with_event("[]", "{}")).unwrap_err();
        assert_eq!(e.event(), Some("chat.message"));
        assert_eq!(e.origin(), ORIGIN);
        assert!(error(&with_event("{}", r#"{ "A": 1 }"#))
            .starts_with("schema/events.json: $defs entry \"A\": the schema must be"));
    }

    #[test]
    fn refs_to_missing_defs_are_rejected() {
        let e = parse(&with_event(
            r##"{ "properties": { "user": { "$ref": "#/$defs/Nope" } } }"##,
            r#"{ "User": {} }"#,
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "schema/events.json: event \"chat.message\": $ref \"#/$defs/Nope\" does not name an \
             entry of $defs (at /namespaces/chat/message/properties/user/$ref)"
        );
        assert!(matches!(
            e,
            SchemaError::InvalidRef {
                problem: RefProblem::Missing,
                ..
            }
        ));
        assert_eq!(e.event(), Some("chat.message"));
    }

    #[test]
    fn refs_must_be_local_defs() {
        let cases = [
            (
                "https://example.com/user.json",
                RefProblem::External,
                "is an external reference",
            ),
            (
                "user.json#/$defs/User",
                RefProblem::External,
                "is an external reference",
            ),
            (
                "#/definitions/User",
                RefProblem::NotDefs,
                "is not supported; references must",
            ),
            ("#", RefProblem::NotDefs, "is not supported; references must"),
            (
                "#/$defs/User/properties/x",
                RefProblem::NotDefs,
                "is not supported; references must",
            ),
            ("#/$defs/", RefProblem::Missing, "does not name an entry of $defs"),
        ];
        for (reference, expected, words) in cases {
            let payload = format!(r#"{{ "items": {{ "$ref": "{reference}" }} }}"#);
            let e = parse(&with_event(&payload, r#"{ "User": {} }"#)).unwrap_err();
            let message = e.to_string();
            assert!(
                matches!(&e, SchemaError::InvalidRef { problem, .. } if *problem == expected),
                "{reference}: {message}"
            );
            assert!(
                message.starts_with(&format!(
                    "schema/events.json: event \"chat.message\": $ref \"{reference}\" {words}"
                )),
                "{message}"
            );
        }
        assert!(error(&with_event(r#"{ "$ref": 5 }"#, "{}"))
            .contains("$ref 5 must be a string of the form \"#/$defs/<Name>\""));
    }

    #[test]
    fn refs_inside_defs_and_combinators_are_checked() {
        assert_eq!(
            error(&with_event(
                r##"{ "$ref": "#/$defs/A" }"##,
                r##"{ "A": { "oneOf": [{ "type": "null" }, { "$ref": "#/$defs/B" }] } }"##
            )),
            "schema/events.json: $defs entry \"A\": $ref \"#/$defs/B\" does not name an entry of \
             $defs (at /$defs/A/oneOf/1/$ref)"
        );
        for wrapper in [
            r#"{ "allOf": [X] }"#,
            r#"{ "anyOf": [{}, X] }"#,
            r#"{ "not": X }"#,
            r#"{ "items": X }"#,
            r#"{ "prefixItems": [X] }"#,
            r#"{ "additionalProperties": X }"#,
            r#"{ "patternProperties": { "^a": X } }"#,
            r#"{ "properties": { "a": { "properties": { "b": X } } } }"#,
        ] {
            let payload = wrapper.replace('X', r##"{ "$ref": "#/$defs/Missing" }"##);
            let message = error(&with_event(&payload, "{}"));
            assert!(
                message.contains("does not name an entry of $defs"),
                "{wrapper}: {message}"
            );
        }
    }

    #[test]
    fn data_that_looks_like_a_ref_is_not_checked() {
        let payload = r##"{
            "properties": { "$ref": { "type": "string" } },
            "enum": [{ "$ref": "#/elsewhere" }],
            "const": { "$ref": 1 },
            "default": { "$ref": "x" },
            "examples": [{ "$ref": "y" }]
        }"##;
        parse(&with_event(payload, "{}")).unwrap();
    }

    #[test]
    fn nested_defs_are_rejected() {
        assert_eq!(
            error(&with_event(r#"{ "$defs": { "X": {} } }"#, "{}")),
            "schema/events.json: event \"chat.message\": \"$defs\" inside a schema is not \
             supported; put shared types in the top-level \"$defs\" and refer to them as \
             \"#/$defs/<Name>\" (at /namespaces/chat/message/$defs)"
        );
    }

    #[test]
    fn colliding_type_names_are_rejected() {
        let e = parse(r#"{ "namespaces": { "chat": { "message_x": {} }, "chat_message": { "x": {} } } }"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "schema/events.json: event \"chat.message_x\" and event \"chat_message.x\" both \
             generate the type name ChatMessageX; rename one"
        );
        assert_eq!(e.event(), Some("chat.message_x"));
        assert_eq!(
            error(&with_event("{}", r#"{ "ChatMessage": {} }"#)),
            "schema/events.json: $defs entry \"ChatMessage\" and event \"chat.message\" both \
             generate the type name ChatMessage; rename one"
        );
        assert_eq!(
            error(&with_event("{}", r#"{ "user_name": {}, "UserName": {} }"#)),
            "schema/events.json: $defs entry \"user_name\" and $defs entry \"UserName\" both \
             generate the type name UserName; rename one"
        );
    }

    #[test]
    fn reserved_type_names_are_rejected() {
        assert_eq!(
            error(r#"{ "namespaces": { "event": { "map": {} } } }"#),
            "schema/events.json: event \"event.map\": generates the type name EventMap, which is \
             reserved for generated code; rename it"
        );
        assert!(error(&with_event("{}", r#"{ "event": {} }"#))
            .starts_with("schema/events.json: $defs entry \"event\": generates the type name Event,"));
    }

    #[test]
    fn def_names_must_make_type_names() {
        for name in ["1st", "_x", "a b", "ü", "self", "a.b"] {
            let defs = format!(r#"{{ "{name}": {{}} }}"#);
            assert_eq!(
                error(&with_event("{}", &defs)),
                format!(
                    "schema/events.json: $defs entry \"{name}\": the name does not make a valid \
                     type name; $defs names must match [A-Za-z][A-Za-z0-9_-]*"
                )
            );
        }
    }

    #[test]
    fn at_least_one_event_is_required() {
        for text in [r#"{ "namespaces": {} }"#, r#"{ "namespaces": { "chat": {} } }"#] {
            assert!(
                error(text).starts_with("schema/events.json: no events:"),
                "{text}"
            );
        }
    }

    #[test]
    fn load_names_the_path() {
        let e = SchemaFile::load("/nonexistent/events.json").unwrap_err();
        assert!(matches!(e, SchemaError::Read { .. }));
        assert!(e
            .to_string()
            .starts_with("/nonexistent/events.json: cannot read the schema file:"));
    }
}
