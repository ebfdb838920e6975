//! Multi-document YAML (or JSON) into [`Resource`]s. Each document must carry a known
//! `apiVersion` and `kind`; its fields are read strictly and then validated. The first bad
//! document fails the whole text, so a source is taken entirely or not at all.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::resources::{Kind, Resource};
use crate::{ConfigError, validate};

/// Parses every document of `text`; `source_name` names the text in errors (a file path,
/// or `apply` for requests). Empty documents are skipped.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>, ConfigError> {
    let mut resources = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document_number = index + 1;
        let fail = |object: Option<String>, path: String, message: String| ConfigError {
            source_name: source_name.to_owned(),
            document: document_number,
            object,
            path,
            message,
        };
        let value = Value::deserialize(document)
            .map_err(|e| fail(None, String::new(), format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let resource =
            parse_one(value).map_err(|(object, path, message)| fail(object, path, message))?;
        validate::resource(&resource)
            .map_err(|(path, message)| fail(Some(resource.key().to_string()), path, message))?;
        resources.push(resource);
    }
    Ok(resources)
}

type Failure = (Option<String>, String, String);

fn parse_one(mut value: Value) -> Result<Resource, Failure> {
    let Some(map) = value.as_mapping_mut() else {
        return Err((
            None,
            String::new(),
            "a document must be a mapping with apiVersion, kind, metadata".into(),
        ));
    };
    let mut take_string = |field: &str| -> Result<String, Failure> {
        match map.remove(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err((None, field.into(), "must be a string".into())),
            None => Err((None, field.into(), "missing".into())),
        }
    };
    let api_version = take_string("apiVersion")?;
    let kind_name = take_string("kind")?;
    let name_hint = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(|n| format!("{kind_name} {n}"));
    let Some(kind) = Kind::from_name(&kind_name) else {
        let known: Vec<String> = Kind::ALL.iter().map(ToString::to_string).collect();
        return Err((
            name_hint,
            "kind".into(),
            format!(
                "kind {kind_name:?} is not supported by Bowline; supported kinds: {}",
                known.join(", ")
            ),
        ));
    };
    if !kind.api_versions().contains(&api_version.as_str()) {
        return Err((
            name_hint,
            "apiVersion".into(),
            format!(
                "{kind} is read as {}, not {api_version:?}",
                kind.api_versions().join(" or ")
            ),
        ));
    }
    let typed = |value: Value| -> Result<Resource, Failure> {
        Ok(match kind {
            Kind::Namespace => Resource::Namespace(strict(value)?),
            Kind::Node => Resource::Node(strict(value)?),
            Kind::ServiceAccount => Resource::ServiceAccount(strict(value)?),
            Kind::Pod => Resource::Pod(strict(value)?),
            Kind::Service => Resource::Service(strict(value)?),
            Kind::Gateway => Resource::Gateway(strict(value)?),
            Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(strict(value)?),
            Kind::PeerAuthentication => Resource::PeerAuthentication(strict(value)?),
            Kind::RequestAuthentication
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::HTTPRoute => Resource::Opaque(kind, strict(value)?),
        })
    };
    typed(value).map_err(|(_, path, message)| (name_hint, path, message))
}

/// Deserializes with the failing field's path.
fn strict<T: DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        let message = if message.starts_with("unknown field") {
            format!(
                "{message} (Bowline refuses fields it does not support rather than ignore them)"
            )
        } else {
            message
        };
        (None, path, message)
    })
}
