//! Shared validation: `FieldError`, the `Validate` trait, the context it runs in, and path-aware parsing.
//!
//! **Path style.** Paths are relative to the object's spec — the API request body or a custom resource's
//! `spec` — in JSON (camelCase) names: dots between fields, brackets around list indexes, dots before map
//! keys: `destinations[1].weight`, `conditions.all[0].values`, `statusMap.1`. The same style comes out of
//! [`from_json_str`] / [`from_json_value`] for errors found while parsing, so a 422 response has one kind of
//! path whichever step found the problem. The operator reports Kubernetes paths with
//! [`FieldError::under`]`("spec")` → `spec.destinations[1].weight`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One problem with one field: where it is and what to do about it. Serialises as `{"path","message"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is, e.g. `destinations[1].weight` (see the module docs for the style).
    pub path: String,
    /// What is wrong and how to fix it, written for a person.
    pub message: String,
}

impl FieldError {
    /// A field error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }

    /// The same error with `prefix` in front of its path: `under("spec")` turns `name` into `spec.name`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join(prefix, &self.path);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every field error of one object, as one `std::error::Error` (for `?` in the operator and tests).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_list(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn display_list(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Where an object comes from, which decides how it names the objects it refers to.
///
/// The API and the store refer to other objects by ID (`campaignId`); Kubernetes custom resources refer to
/// them by name (`campaignRef: {name}`) and may take secrets from a `Secret` (`secretRef`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum ValidationContext {
    /// A request body of the admin API: IDs required, `…Ref` fields rejected.
    Api,
    /// The `spec` of a custom resource: `…Ref` fields required, `…Id` fields rejected.
    Kubernetes,
    /// A store document: IDs required; refs allowed too (the operator keeps them on mirrored objects).
    Store,
}

/// Checks an object and returns every problem found, each with its path; an empty list means valid.
pub trait Validate {
    /// All field errors of `self` in `ctx`, in document order.
    fn validate(&self, ctx: ValidationContext) -> Vec<FieldError>;

    /// `Ok(())` when valid, else every field error as one [`ValidationErrors`].
    fn check(&self, ctx: ValidationContext) -> Result<(), ValidationErrors> {
        let errors = self.validate(ctx);
        if errors.is_empty() { Ok(()) } else { Err(ValidationErrors(errors)) }
    }
}

/// Parse JSON text into `T`; on failure the error's path says which field was wrong.
pub fn from_json_str<T: DeserializeOwned>(json: &str) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(path_error)
}

/// Parse a JSON value into `T`; on failure the error's path says which field was wrong.
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = err.into_inner();
    // serde_json appends " at line L column C"; the path says more, so keep only the reason.
    let text = inner.to_string();
    let message = match text.rfind(" at line ") {
        Some(at) if inner.line() > 0 => text[..at].to_string(),
        _ => text,
    };
    FieldError::new(path, message)
}

/// `base.name`, or `name` when `base` is empty.
pub(crate) fn join(base: &str, name: &str) -> String {
    match (base.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{base}.{name}"),
    }
}

/// `base[index]`.
pub(crate) fn item(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// Collects field errors under a base path while a validator walks an object.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    list: Vec<FieldError>,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(FieldError::new(path, message));
    }

    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.list
    }

    /// A required, non-blank string of at most `max` characters.
    pub(crate) fn required_text(&mut self, path: &str, value: &str, what: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(path, format!("{what} is required"));
        } else if value.chars().count() > max {
            self.add(path, format!("{what} is too long: at most {max} characters"));
        }
    }

    /// A key used in public URLs: lowercase letters, digits and dashes, 1–63 characters.
    pub(crate) fn key(&mut self, path: &str, value: &str) {
        if value.is_empty() {
            self.add(path, "key is required (lowercase letters, digits and dashes, 1–63 characters)");
        } else if !is_key(value) {
            self.add(
                path,
                format!(
                    "`{value}` is not a valid key: use 1–63 lowercase letters, digits and dashes, e.g. `summer-sale`"
                ),
            );
        }
    }

    /// A currency code that looks like ISO 4217: three uppercase letters.
    pub(crate) fn currency(&mut self, path: &str, value: &str) {
        if !is_currency(value) {
            self.add(path, format!("`{value}` is not a currency code: use three uppercase letters, e.g. `USD`"));
        }
    }

    /// An integer within `min..=max`, with the unit in the message.
    pub(crate) fn range(&mut self, path: &str, value: i64, min: i64, max: i64, unit: &str) {
        if value < min || value > max {
            self.add(path, format!("must be between {min} and {max}{unit} (got {value})"));
        }
    }

    /// The ID (API, store) or the ref (Kubernetes) of a referenced object, as `ctx` demands.
    pub(crate) fn link(&mut self, ctx: ValidationContext, base: &str, link: Link<'_>) {
        let Link { id_name, id, ref_name, reference, required } = link;
        let id_path = join(base, id_name);
        let ref_path = join(base, ref_name);
        match ctx {
            ValidationContext::Kubernetes => {
                if id.is_some() {
                    self.add(
                        &id_path,
                        format!("a custom resource names other objects by name: use `{ref_name}: {{name: …}}`"),
                    );
                }
                match reference {
                    Some(r) => self.object_name(&join(&ref_path, "name"), &r.name),
                    None if required => self.add(&ref_path, format!("`{ref_name}` is required")),
                    None => {}
                }
            }
            ValidationContext::Api | ValidationContext::Store => {
                if ctx == ValidationContext::Api && reference.is_some() {
                    self.add(
                        &ref_path,
                        format!("`{ref_name}` is only for Kubernetes objects; refer by ID with `{id_name}`"),
                    );
                }
                match id {
                    Some(id) if id.trim().is_empty() => self.add(&id_path, format!("`{id_name}` is empty")),
                    Some(_) => {}
                    None if required => self.add(&id_path, format!("`{id_name}` is required")),
                    None => {}
                }
            }
        }
    }

    /// A Kubernetes object name (RFC 1123 subdomain).
    pub(crate) fn object_name(&mut self, path: &str, name: &str) {
        if !is_object_name(name) {
            self.add(
                path,
                format!(
                    "`{name}` is not a Kubernetes object name: lowercase letters, digits, `-` and `.`, \
                     at most 253 characters, starting and ending with a letter or digit"
                ),
            );
        }
    }
}

/// Lowercase letters, digits and dashes, 1–63 characters.
pub fn is_key(value: &str) -> bool {
    (1..=63).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Three uppercase ASCII letters.
pub fn is_currency(value: &str) -> bool {
    value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase())
}

fn is_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=253).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(b) || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// A reference to another object in both of its forms, for [`Errors::link`].
pub(crate) struct Link<'a> {
    pub(crate) id_name: &'a str,
    pub(crate) id: Option<&'a str>,
    pub(crate) ref_name: &'a str,
    pub(crate) reference: Option<&'a crate::ObjectRef>,
    pub(crate) required: bool,
}
