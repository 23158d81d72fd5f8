//! JSON Schema → Rust types, through typify.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use heck::{ToPascalCase, ToSnakeCase};
use schemars::schema::Schema;
use serde_json::Value;
use typify::{TypeSpace, TypeSpaceSettings};

use crate::schema::{def_pointer, visit_schemas, SchemaFile, SchemaItem};

/// Options for [`rust`](crate::rust()).
///
/// # Example
///
/// ```
/// use tidings_codegen::RustOptions;
///
/// let opts = RustOptions::default().tidings_crate("crate");
/// assert_eq!(opts.tidings_crate, "crate");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RustOptions {
    /// Path of the `tidings` crate in the code that includes the output, used to implement
    /// `Emittable` and `Payload`. Default `::tidings`.
    pub tidings_crate: String,
}

impl Default for RustOptions {
    fn default() -> Self {
        RustOptions {
            tidings_crate: "::tidings".to_string(),
        }
    }
}

impl RustOptions {
    /// Sets the path of the `tidings` crate (e.g. `crate` inside tidings itself, or the name a
    /// dependency was renamed to).
    pub fn tidings_crate(mut self, path: impl Into<String>) -> Self {
        self.tidings_crate = path.into();
        self
    }
}

/// Why Rust generation failed for a schema that [`SchemaFile`] accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// serde could not read a schema as a schemars 0.8 schema (e.g. a keyword holding a value of
    /// the wrong JSON type, such as `"required": "name"`).
    #[error("{origin}: {item}: not a valid JSON Schema: {message}")]
    InvalidSchema {
        /// The schema file.
        origin: String,
        /// The event or `$defs` entry.
        item: SchemaItem,
        /// serde's description.
        message: String,
    },
    /// A keyword that typify 0.8 ignores or mishandles, so that the Rust type would accept or
    /// reject different payloads than the schema does (e.g. `prefixItems`, `if`).
    #[error(
        "{origin}: {item}: \"{keyword}\" is not supported by the Rust generator (typify 0.8 \
         ignores or mishandles it, so the Rust type would not match the schema) (at {pointer})"
    )]
    Unsupported {
        /// The schema file.
        origin: String,
        /// The event or `$defs` entry.
        item: SchemaItem,
        /// The keyword.
        keyword: &'static str,
        /// JSON pointer to the schema holding the keyword.
        pointer: String,
    },
    /// typify rejected the schema, or panicked on it (the panic is caught and reported here).
    #[error("{origin}: {}typify cannot generate Rust types: {message}", item_prefix(.item.as_ref()))]
    Typify {
        /// The schema file.
        origin: String,
        /// The event or `$defs` entry typify failed on, when it could be pinned down.
        item: Option<SchemaItem>,
        /// typify's description (the first line of its panic message, if it panicked).
        message: String,
    },
    /// typify would give two different schemas the same type name and silently use one type for
    /// both. typify names an inline schema after its parent and property (`chat.message`'s
    /// property `text` → `ChatMessageText`) or after its `title`.
    #[error(
        "{origin}: typify would name both {first} and {second} {type_name} and use one type for \
         both; rename one, or give the inline schema a distinct \"title\""
    )]
    NameClash {
        /// The schema file.
        origin: String,
        /// The type name.
        type_name: String,
        /// The first schema (an item, or an inline schema with its pointer).
        first: String,
        /// The second schema.
        second: String,
    },
    /// typify did not produce a type under an event's expected name.
    #[error("{origin}: event \"{event}\": typify did not generate the type {type_name}")]
    MissingType {
        /// The schema file.
        origin: String,
        /// The event's wire name.
        event: String,
        /// The type name that was expected.
        type_name: String,
    },
    /// [`RustOptions::tidings_crate`] is not a Rust path.
    #[error("tidings crate path \"{0}\" is not a Rust path (e.g. \"::tidings\" or \"crate\")")]
    InvalidCratePath(String),
    /// The generated code did not parse; a bug in tidings-codegen or typify.
    #[error("{origin}: generated Rust code does not parse (a bug in tidings-codegen): {message}")]
    Unparsable {
        /// The schema file.
        origin: String,
        /// syn's description.
        message: String,
    },
}

/// Renders a schema file as Rust: typify's types for every `$defs` entry and event, then for
/// each event `impl Emittable` and `impl Payload`, and an `Event` enum over all events with
/// `NAMES`, `name()`, `decode()`, `impl Emittable` and `From<Payload>`.
///
/// The output is meant to be `include!`d into a module. It refers to `::serde` and
/// `::serde_json`, which the including crate must depend on; depending on the schema, typify's
/// types may also need `regress` (for `pattern`), `chrono` (`format: date`/`date-time`) or
/// `uuid` (`format: uuid`): the header comment of the output lists them when they are.
///
/// Event types are named by PascalCasing `namespace_event` (`chat.message` → `ChatMessage`);
/// `$defs` entries by PascalCasing their name. Object schemas become structs (unknown fields
/// are dropped unless `additionalProperties` is `false`, which rejects them); strings with
/// constraints become validating newtypes; string enums become enums.
///
/// # Errors
///
/// [`CodegenError`] when typify rejects or panics on a schema, or `opts.tidings_crate` is not a
/// path.
///
/// # Example
///
/// ```
/// use tidings_codegen::{rust, RustOptions, SchemaFile};
///
/// let schema = SchemaFile::parse(
///     r#"{ "namespaces": { "chat": { "typing": {
///         "type": "object",
///         "properties": { "user": { "type": "string" } },
///         "required": ["user"]
///     } } } }"#,
///     "inline.json",
/// )?;
/// let code = rust(&schema, &RustOptions::default())?;
/// assert!(code.contains("pub struct ChatTyping"));
/// assert!(code.contains("impl ::tidings::Payload for ChatTyping"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rust(schema: &SchemaFile, opts: &RustOptions) -> Result<String, CodegenError> {
    let origin = &schema.origin;
    let krate = opts.tidings_crate.as_str();
    if syn::parse_str::<syn::Path>(krate).is_err() {
        return Err(CodegenError::InvalidCratePath(krate.to_string()));
    }

    // typify resolves `#/$defs/X` by the last path segment, so the $defs entries go in under
    // their own names. Events go in under `namespace_event`, which typify PascalCases to the
    // same type name `SchemaFile` computed (and checked for collisions).
    let mut items = Vec::with_capacity(schema.defs.len() + schema.events.len());
    for (name, value) in &schema.defs {
        items.push((
            SchemaItem::Def(name.clone()),
            name.clone(),
            value,
            def_pointer(name),
        ));
    }
    for event in &schema.events {
        let key = format!("{}_{}", event.namespace, event.event);
        items.push((
            SchemaItem::Event(event.name.clone()),
            key,
            &event.schema,
            event.pointer.clone(),
        ));
    }

    let mut defs = Vec::with_capacity(items.len());
    for (item, key, value, pointer) in &items {
        check_supported(origin, item, value, pointer)?;
        let converted =
            serde_json::from_value(Value::clone(value)).map_err(|e| CodegenError::InvalidSchema {
                origin: origin.clone(),
                item: item.clone(),
                message: e.to_string(),
            })?;
        defs.push((key.clone(), converted));
    }

    check_inline_names(origin, &items)?;

    let (space, tokens) = match generate(defs.clone()) {
        Ok(generated) => generated,
        Err(message) => {
            // Pin the failure down: convert growing prefixes of the items, with the rest
            // replaced by `true`, until one fails. Only runs on the error path.
            let item = (0..defs.len()).find_map(|i| {
                let mut trial = defs.clone();
                for entry in trial.iter_mut().skip(i + 1) {
                    entry.1 = Schema::Bool(true);
                }
                generate(trial).is_err().then(|| items[i].0.clone())
            });
            return Err(CodegenError::Typify {
                origin: origin.clone(),
                item,
                message,
            });
        }
    };

    let names: Vec<String> = space.iter_types().map(|t| t.name()).collect();
    for event in &schema.events {
        if !names.contains(&event.type_name) {
            return Err(CodegenError::MissingType {
                origin: origin.clone(),
                event: event.name.clone(),
                type_name: event.type_name.clone(),
            });
        }
    }

    let mut code = tokens;
    code.push_str(&event_items(schema, krate));
    let mut file = syn::parse_file(&code).map_err(|e| CodegenError::Unparsable {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    allow_unused(&mut file);

    let mut out = format!(
        "// Generated by tidings-codegen from {origin}. Do not edit.\n\
         // Requires the crates serde and serde_json"
    );
    let extra: Vec<&str> = [
        ("regress", space.uses_regress()),
        ("chrono", space.uses_chrono()),
        ("uuid", space.uses_uuid()),
    ]
    .iter()
    .filter_map(|(name, used)| used.then_some(*name))
    .collect();
    if !extra.is_empty() {
        let _ = write!(out, ", and also: {}", extra.join(", "));
    }
    out.push_str(".\n\n");
    out.push_str(&prettyplease::unparse(&file));
    Ok(out)
}

/// Marks every top-level item `#[allow(dead_code, ..)]`: an app uses some of its event types,
/// and an `include!`d file cannot carry an inner `#![allow]`, so without this a crate that
/// denies warnings would fail on the types it does not use (or on clippy's view of typify's
/// style).
fn allow_unused(file: &mut syn::File) {
    let allow: syn::Attribute =
        syn::parse_quote!(#[allow(dead_code, missing_docs, clippy::all, clippy::pedantic)]);
    for item in &mut file.items {
        let attrs = match item {
            syn::Item::Const(i) => &mut i.attrs,
            syn::Item::Enum(i) => &mut i.attrs,
            syn::Item::Fn(i) => &mut i.attrs,
            syn::Item::Impl(i) => &mut i.attrs,
            syn::Item::Mod(i) => &mut i.attrs,
            syn::Item::Static(i) => &mut i.attrs,
            syn::Item::Struct(i) => &mut i.attrs,
            syn::Item::Trait(i) => &mut i.attrs,
            syn::Item::Type(i) => &mut i.attrs,
            syn::Item::Union(i) => &mut i.attrs,
            syn::Item::Use(i) => &mut i.attrs,
            _ => continue,
        };
        attrs.insert(0, allow.clone());
    }
}

/// Keywords typify 0.8 ignores (or panics on) although they change which payloads are valid.
/// Ignoring them would make the Rust type disagree with validation: `prefixItems` with
/// `items: false`, for one, becomes a vector of an uninhabited type that rejects every valid
/// payload.
const UNSUPPORTED_KEYWORDS: &[&str] = &[
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "$dynamicRef",
    "$dynamicAnchor",
];

fn check_supported(
    origin: &str,
    item: &SchemaItem,
    schema: &Value,
    pointer: &str,
) -> Result<(), CodegenError> {
    visit_schemas(schema, pointer, &mut |object, here| match UNSUPPORTED_KEYWORDS
        .iter()
        .find(|k| object.contains_key(**k))
    {
        Some(keyword) => Err(CodegenError::Unsupported {
            origin: origin.to_string(),
            item: item.clone(),
            keyword,
            pointer: here.to_string(),
        }),
        None => Ok(()),
    })
}

/// Rejects inline schemas that typify would name like another, different schema: typify then
/// reuses the first type for both without a word (see [`CodegenError::NameClash`]).
///
/// Mirrors typify 0.8's naming for the common cases: an item is named after its key, a property
/// schema `<parent>_<property>`, array items `<parent>_item`, and a nested `title` wins over
/// both. Schemas that are only a `$ref` create no type and are skipped.
fn check_inline_names(
    origin: &str,
    items: &[(SchemaItem, String, &Value, String)],
) -> Result<(), CodegenError> {
    struct Named<'a> {
        who: String,
        schema: &'a Value,
    }
    let mut seen: BTreeMap<String, Named<'_>> = BTreeMap::new();
    let mut add = |name: String, who: String, schema| -> Result<(), CodegenError> {
        match seen.get(&name) {
            Some(first) if first.schema != schema => Err(CodegenError::NameClash {
                origin: origin.to_string(),
                type_name: name,
                first: first.who.clone(),
                second: who,
            }),
            Some(_) => Ok(()),
            None => {
                seen.insert(name, Named { who, schema });
                Ok(())
            }
        }
    };
    for (item, key, schema, _) in items {
        add(key.to_pascal_case(), item.to_string(), schema)?;
    }
    for (item, key, schema, pointer) in items {
        let mut stack: Vec<(String, &Value, String)> = vec![(key.clone(), *schema, pointer.clone())];
        while let Some((base, schema, pointer)) = stack.pop() {
            let Value::Object(object) = schema else { continue };
            let mut children: Vec<(String, &Value, String)> = Vec::new();
            if let Some(Value::Object(properties)) = object.get("properties") {
                for (prop, sub) in properties {
                    let name = format!("{base}_{}", prop.to_snake_case());
                    children.push((name, sub, format!("{pointer}/properties/{}", escape(prop))));
                }
            }
            if let Some(sub @ Value::Object(_)) = object.get("items") {
                children.push((format!("{base}_item"), sub, format!("{pointer}/items")));
            }
            for (name, sub, here) in children {
                if sub.get("$ref").is_some() {
                    continue;
                }
                let name = match sub.get("title").and_then(Value::as_str) {
                    Some(title) => title.to_string(),
                    None => name,
                };
                add(
                    name.to_pascal_case(),
                    format!("the schema at {here} ({item})"),
                    sub,
                )?;
                stack.push((name, sub, here));
            }
        }
    }
    Ok(())
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Runs typify over all items at once (references between them must resolve within one call).
fn generate(defs: Vec<(String, Schema)>) -> Result<(TypeSpace, String), String> {
    let mut settings = TypeSpaceSettings::default();
    settings
        .with_struct_builder(false)
        .with_derive("PartialEq".to_string());
    // typify panics instead of returning errors on some schemas it does not support; a build
    // script should print one line, not a panic message and a backtrace.
    let result = quietly(move || {
        let mut space = TypeSpace::new(&settings);
        space.add_ref_types(defs).map(|()| {
            let tokens = space.to_stream().to_string();
            (space, tokens)
        })
    });
    match result {
        Ok(Ok(generated)) => Ok(generated),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic),
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into the first line of its message, without the panic hook
/// printing anything for this thread.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });

    let was_quiet = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "typify panicked".to_string());
        // Panic messages often continue with a debug dump of the schema.
        let first = message.lines().next().unwrap_or_default();
        first.trim_end_matches(['(', '{', ':', ' ']).to_string()
    })
}

fn item_prefix(item: Option<&SchemaItem>) -> String {
    item.map(|item| format!("{item}: ")).unwrap_or_default()
}

/// The trait impls and the `Event` enum, as source text.
fn event_items(schema: &SchemaFile, krate: &str) -> String {
    let mut out = String::new();
    for event in &schema.events {
        let (name, ty) = (&event.name, &event.type_name);
        let _ = write!(
            out,
            "impl {krate}::Emittable for {ty} {{
                fn event_name(&self) -> &'static str {{ {name:?} }}
            }}
            impl {krate}::Payload for {ty} {{
                const NAME: &'static str = {name:?};
            }}
            impl ::std::convert::From<{ty}> for Event {{
                fn from(payload: {ty}) -> Self {{ Event::{ty}(payload) }}
            }}
            "
        );
    }

    let variants: String = schema
        .events
        .iter()
        .map(|e| {
            let doc = match &e.description {
                Some(d) => format!("{} ", doc_attr(&format!("`{}`: {d}", e.name))),
                None => doc_attr(&format!("`{}`.", e.name)),
            };
            format!("{doc} {ty}({ty}),\n", ty = e.type_name)
        })
        .collect();
    let names: String = schema.events.iter().map(|e| format!("{:?}, ", e.name)).collect();
    let name_arms: String = schema
        .events
        .iter()
        .map(|e| format!("Event::{}(_) => {:?},\n", e.type_name, e.name))
        .collect();
    let decode_arms: String = schema
        .events
        .iter()
        .map(|e| {
            format!(
                "{:?} => ::serde_json::from_value::<{ty}>(data).map(Event::{ty}),\n",
                e.name,
                ty = e.type_name
            )
        })
        .collect();

    let _ = write!(
        out,
        "{doc}
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize)]
        #[serde(untagged)]
        pub enum Event {{ {variants} }}

        impl Event {{
            /// Every event name, in schema order.
            pub const NAMES: &'static [&'static str] = &[{names}];

            /// The event's wire name, `namespace.event`.
            pub fn name(&self) -> &'static str {{
                match self {{ {name_arms} }}
            }}

            /// Decodes the payload of the event called `name`: `None` when no event has that
            /// name, `Some(Err(_))` when `data` does not fit the event's payload type.
            pub fn decode(
                name: &str,
                data: ::serde_json::Value,
            ) -> ::std::option::Option<::std::result::Result<Event, ::serde_json::Error>> {{
                ::std::option::Option::Some(match name {{
                    {decode_arms}
                    _ => return ::std::option::Option::None,
                }})
            }}
        }}

        impl {krate}::Emittable for Event {{
            fn event_name(&self) -> &'static str {{ self.name() }}
        }}
        ",
        doc = doc_attr(
            "Any event of the schema. Serializes as the bare payload (the name travels \
             separately); build one with `From` or `Event::decode`."
        ),
    );
    out
}

fn doc_attr(text: &str) -> String {
    format!("#[doc = {:?}]", format!(" {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate_for(payload: &str, defs: &str) -> Result<String, CodegenError> {
        let text = format!(
            r#"{{ "namespaces": {{ "chat": {{ "ok": {{ "type": "string" }}, "message": {payload} }} }},
                 "$defs": {defs} }}"#
        );
        let schema = SchemaFile::parse(&text, "events.json").unwrap();
        rust(&schema, &RustOptions::default())
    }

    #[test]
    fn options_default_to_tidings() {
        assert_eq!(RustOptions::default().tidings_crate, "::tidings");
        let opts = RustOptions::default().tidings_crate("crate");
        assert_eq!(opts.tidings_crate, "crate");
        let schema = SchemaFile::parse(r#"{ "namespaces": { "a": { "b": {} } } }"#, "x").unwrap();
        let code = rust(&schema, &opts).unwrap();
        assert!(code.contains("impl crate::Payload for AB {"), "{code}");
        let e = rust(&schema, &RustOptions::default().tidings_crate("not a path")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tidings crate path \"not a path\" is not a Rust path (e.g. \"::tidings\" or \"crate\")"
        );
    }

    #[test]
    fn header_lists_extra_crates() {
        let code = generate_for(r#"{ "type": "string", "pattern": "^a" }"#, "{}").unwrap();
        assert!(code.starts_with(
            "// Generated by tidings-codegen from events.json. Do not edit.\n\
             // Requires the crates serde and serde_json, and also: regress.\n"
        ));
        let code = generate_for(r#"{ "type": "string", "format": "uuid" }"#, "{}").unwrap();
        assert!(code.contains("and also: uuid."), "{code}");
        let code = generate_for(r#"{ "type": "string" }"#, "{}").unwrap();
        assert!(code.contains("serde_json.\n\n"));
    }

    #[test]
    fn keywords_typify_drops_are_rejected() {
        let e = generate_for(
            r#"{ "type": "object", "properties": { "pair": { "type": "array", "prefixItems": [{}] } } }"#,
            "{}",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "events.json: event \"chat.message\": \"prefixItems\" is not supported by the Rust \
             generator (typify 0.8 ignores or mishandles it, so the Rust type would not match \
             the schema) (at /namespaces/chat/message/properties/pair)"
        );
        let e = generate_for("{}", r#"{ "A": { "if": {}, "then": {} } }"#).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("events.json: $defs entry \"A\": \"if\" is not"));
    }

    #[test]
    fn typify_panics_become_errors_naming_the_item() {
        let e = generate_for(r#"{ "type": "string", "enum": ["a", "A"] }"#, "{}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "events.json: event \"chat.message\": typify cannot generate Rust types: Failed to \
             make unique variant names for [a,A]"
        );
        let e = generate_for(
            r##"{ "$ref": "#/$defs/X" }"##,
            r#"{ "X": { "not": { "type": "string" } } }"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("events.json: $defs entry \"X\": typify cannot generate Rust types: "),
            "{e}"
        );
    }

    #[test]
    fn inline_types_named_like_other_schemas_are_rejected() {
        // typify would name the `text` property's type ChatMessageText, then silently reuse
        // the $defs entry (an integer) for it.
        let e = generate_for(
            r#"{ "properties": { "text": { "type": "string", "minLength": 1 } } }"#,
            r#"{ "ChatMessageText": { "type": "integer" } }"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "events.json: typify would name both $defs entry \"ChatMessageText\" and the schema \
             at /namespaces/chat/message/properties/text (event \"chat.message\") \
             ChatMessageText and use one type for both; rename one, or give the inline schema a \
             distinct \"title\""
        );
        // Nested titles take precedence over derived names.
        let e = generate_for(
            r#"{ "items": { "title": "Ok", "type": "object", "properties": {} } }"#,
            r#"{ "Ok": { "type": "string" } }"#,
        )
        .unwrap_err();
        assert!(matches!(e, CodegenError::NameClash { ref type_name, .. } if type_name == "Ok"));
        // The same schema under the same name is one type, as intended.
        generate_for(
            r#"{ "properties": { "a": { "title": "T", "type": "string" }, "b": { "title": "T", "type": "string" } } }"#,
            "{}",
        )
        .unwrap();
    }

    #[test]
    fn malformed_keywords_are_reported() {
        let e = generate_for(r#"{ "type": "object", "required": "text" }"#, "{}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("events.json: event \"chat.message\": not a valid JSON Schema: "),
            "{e}"
        );
    }

    #[test]
    fn output_parses_and_has_the_event_items() {
        let code = generate_for(r#"{ "description": "A \"message\"." }"#, "{}").unwrap();
        syn::parse_file(&code).unwrap();
        for needle in [
            "impl ::tidings::Emittable for ChatMessage {",
            "const NAME: &'static str = \"chat.message\";",
            "impl ::std::convert::From<ChatMessage> for Event {",
            "/// `chat.message`: A \"message\".\n    ChatMessage(ChatMessage),",
            "/// `chat.ok`.\n    ChatOk(ChatOk),",
            "pub const NAMES: &'static [&'static str] = &[\"chat.ok\", \"chat.message\"];",
            "impl ::tidings::Emittable for Event {",
        ] {
            assert!(code.contains(needle), "missing {needle}:\n{code}");
        }
    }
}
