//! The event schema at run time: one compiled validator per event.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
pub use tidings_codegen::{EventDef, SchemaError, SchemaFile};

/// Why a schema could not be loaded for validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file is missing, not JSON, or breaks the schema format.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// An event's schema is not valid JSON Schema 2020-12.
    #[error("{origin}: event {event:?}: the schema does not compile: {message}")]
    Compile {
        /// The schema file.
        origin: String,
        /// The event.
        event: String,
        /// The validator's complaint.
        message: String,
    },
}

/// The events a server accepts, with a validator compiled once per event.
pub struct Registry {
    file: SchemaFile,
    validators: HashMap<String, jsonschema::Validator>,
    /// The schema's `presence` data validators, by pattern, in file order.
    presence: PresenceSchemas,
    /// Validators of parts of the schema (a field's), by JSON pointer, compiled on first use:
    /// filters check their values with them.
    parts: std::sync::Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// The schema's `presence` entries compiled: shared with the presence of a running instance.
#[derive(Clone)]
pub(crate) struct PresenceSchemas(std::sync::Arc<Vec<(String, jsonschema::Validator)>>);

impl PresenceSchemas {
    /// Checks presence `data` for `channel` against the entry of the first pattern that matches
    /// it (data of channels no entry matches is not checked).
    pub fn check(&self, channel: &str, data: &Value) -> Result<(), ValidateError> {
        let Some((_, validator)) = self
            .0
            .iter()
            .find(|(pattern, _)| crate::auth::pattern_matches(pattern, None, channel))
        else {
            return Ok(());
        };
        violations(validator, "presence", data)
    }
}

/// One reason a payload does not match its event's schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the failing value inside the payload (`""` for the payload itself).
    pub pointer: String,
    /// What is wrong, in words.
    pub message: String,
}

/// Why a payload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// The schema has no such event.
    #[error("unknown event {name:?}; known events: {known}")]
    UnknownEvent {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The payload does not match the event's schema.
    #[error("payload of {event:?} does not match its schema: {}", summary(.violations))]
    Invalid {
        /// The event.
        event: String,
        /// Every failing value.
        violations: Vec<Violation>,
    },
}

fn summary(v: &[Violation]) -> String {
    v.iter()
        .map(|v| {
            format!(
                "{} {}",
                if v.pointer.is_empty() {
                    "(payload)"
                } else {
                    &v.pointer
                },
                v.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Registry {
    /// Reads and compiles a schema file.
    ///
    /// # Errors
    /// [`RegistryError`] naming the file, the event and the problem.
    pub fn load(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        Registry::new(SchemaFile::load(path)?)
    }

    /// Compiles an already parsed schema.
    ///
    /// # Errors
    /// [`RegistryError::Compile`] when an event's schema does not compile.
    pub fn new(file: SchemaFile) -> Result<Registry, RegistryError> {
        let mut validators = HashMap::new();
        for event in &file.events {
            // Validate against the whole document with a `$ref` to the event, so `#/$defs/…`
            // references resolve exactly as they read in the file.
            let mut doc = file.root.clone();
            if let Value::Object(map) = &mut doc {
                map.insert("$ref".into(), Value::String(format!("#{}", event.pointer)));
            }
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&doc)
                .map_err(|e| RegistryError::Compile {
                    origin: file.origin.clone(),
                    event: event.name.clone(),
                    message: e.to_string(),
                })?;
            validators.insert(event.name.clone(), validator);
        }
        let mut presence = Vec::new();
        for p in &file.presence {
            // `{sub}` is not a URI fragment's character: escaped in the reference.
            let pointer = p.pointer.replace('{', "%7B").replace('}', "%7D");
            presence.push((
                p.pattern.clone(),
                compile(&file, &pointer, &format!("presence {}", p.pattern))?,
            ));
        }
        Ok(Registry {
            file,
            validators,
            presence: PresenceSchemas(std::sync::Arc::new(presence)),
            parts: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Checks presence `data` for `channel` against the schema's `presence` entry for the first
    /// pattern that matches it (data of channels no entry matches is not checked).
    ///
    /// # Errors
    /// [`ValidateError::Invalid`] listing what does not match (its `event` is `presence`).
    pub fn validate_presence(&self, channel: &str, data: &Value) -> Result<(), ValidateError> {
        self.presence.check(channel, data)
    }

    /// Whether `value` is valid against the part of the schema at `pointer` (`false` when that
    /// part does not compile).
    pub(crate) fn value_fits(&self, pointer: &str, value: &Value) -> bool {
        let cached = self
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pointer)
            .cloned();
        let validator = match cached {
            Some(v) => v,
            None => {
                let escaped = pointer.replace('{', "%7B").replace('}', "%7D");
                let Ok(v) = compile(&self.file, &escaped, pointer) else {
                    return false;
                };
                let v = std::sync::Arc::new(v);
                let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
                // Bounded: filters name few fields, but a client could name many.
                if parts.len() < 1024 {
                    parts.insert(pointer.to_string(), v.clone());
                }
                v
            }
        };
        validator.is_valid(value)
    }

    pub(crate) fn presence_schemas(&self) -> PresenceSchemas {
        self.presence.clone()
    }

    /// The parsed schema file.
    pub fn file(&self) -> &SchemaFile {
        &self.file
    }

    /// Event names, in schema order.
    pub fn event_names(&self) -> impl Iterator<Item = &str> {
        self.file.events.iter().map(|e| e.name.as_str())
    }

    /// True when the schema defines `event`.
    pub fn contains(&self, event: &str) -> bool {
        self.validators.contains_key(event)
    }

    /// Checks `data` against `event`'s schema.
    ///
    /// # Errors
    /// [`ValidateError`] listing every failing value.
    pub fn validate(&self, event: &str, data: &Value) -> Result<(), ValidateError> {
        let validator = self
            .validators
            .get(event)
            .ok_or_else(|| ValidateError::UnknownEvent {
                name: event.chars().take(128).collect(),
                known: self.event_names().collect::<Vec<_>>().join(", "),
            })?;
        violations(validator, event, data)
    }
}

/// `Ok` when `data` is valid, else what does not match (at most 32 problems).
fn violations(validator: &jsonschema::Validator, event: &str, data: &Value) -> Result<(), ValidateError> {
    if validator.is_valid(data) {
        return Ok(());
    }
    let violations = validator
        .iter_errors(data)
        .take(32)
        .map(|e| Violation {
            pointer: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    Err(ValidateError::Invalid {
        event: event.to_string(),
        violations,
    })
}

/// A validator of the schema at `pointer`, against the whole document so `#/$defs/…`
/// references resolve as they read in the file.
fn compile(file: &SchemaFile, pointer: &str, what: &str) -> Result<jsonschema::Validator, RegistryError> {
    let mut doc = file.root.clone();
    if let Value::Object(map) = &mut doc {
        map.insert("$ref".into(), Value::String(format!("#{pointer}")));
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&doc)
        .map_err(|e| RegistryError::Compile {
            origin: file.origin.clone(),
            event: what.to_string(),
            message: e.to_string(),
        })
}
