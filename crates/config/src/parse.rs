//! Multi-document YAML (or JSON, or a `v1` `List` of objects) into [`Resource`]s. Each document must carry a known
//! `apiVersion` and `kind` — or one the mesh does not use, which is set aside and listed
//! ([`Parsed::unused`], [`crate::kinds`]); its fields are read strictly and then validated. The first bad
//! document fails the whole text, so a source is taken entirely or not at all. Every text
//! is held to [`Limits`] ([`crate::limits`]): its flow nesting is scanned before the YAML
//! loader sees it, the other limits are checked while each document's values are built.

use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::kinds::{self, Foreign};
use crate::limits::{self, Budget, Limit, Limits};
use crate::resources::{INGRESS_CLASS, Kind, Resource, WAYPOINT_CLASS};
use crate::{ConfigError, validate};

/// Why a text was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A document is not valid YAML, not a supported resource, or not valid as one.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The text passes one of its [`Limits`]; `error` says where and which.
    #[error("{error}")]
    Limit {
        /// Which limit.
        limit: Limit,
        /// Where, and the limit's value.
        error: ConfigError,
    },
    /// `cancelled` said to stop (the client went away); nothing is returned.
    #[error("{source_name}: parsing stopped after {documents} documents: cancelled")]
    Cancelled {
        /// The text's name.
        source_name: String,
        /// Documents read before stopping.
        documents: usize,
    },
}

impl From<ParseError> for ConfigError {
    fn from(error: ParseError) -> Self {
        match error {
            ParseError::Invalid(error) | ParseError::Limit { error, .. } => error,
            ParseError::Cancelled {
                source_name,
                documents,
            } => ConfigError {
                source_name,
                document: documents,
                object: None,
                path: String::new(),
                message: "cancelled".into(),
            },
        }
    }
}

/// What a text held: Bowline's resources, and the objects set aside as not used by the
/// mesh ([`crate::kinds`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The mesh's resources, in document order.
    pub resources: Vec<Resource>,
    /// `Kind ns/name` (or `Kind name`) of each document accepted and set aside.
    pub unused: Vec<String>,
}

impl Parsed {
    /// The one note that lists what was set aside, if anything was.
    pub fn unused_note(&self) -> Option<String> {
        (!self.unused.is_empty()).then(|| unused_note(&self.unused))
    }
}

/// `not used by the mesh (accepted, not kept): ConfigMap shop/a, Secret shop/b`.
pub fn unused_note(objects: &[String]) -> String {
    format!(
        "not used by the mesh (accepted, not kept): {}",
        objects.join(", ")
    )
}

/// Parses every document of `text` within [`Limits::FILES`]; `source_name` names the
/// text in errors (a file path, or `apply` for requests). Empty documents are skipped,
/// and so are objects the mesh does not use (see [`parse_documents_noting`] to list them).
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>, ConfigError> {
    parse_documents_noting(text, source_name).map(|parsed| parsed.resources)
}

/// [`parse_documents`], with the objects set aside as not used by the mesh.
pub fn parse_documents_noting(text: &str, source_name: &str) -> Result<Parsed, ConfigError> {
    parse_documents_with(text, source_name, &Limits::FILES, &|| false).map_err(Into::into)
}

/// Parses every document of `text` within `limits`, asking `cancelled` before each
/// document (a request whose client went away stops there, and nothing is returned).
pub fn parse_documents_with(
    text: &str,
    source_name: &str,
    limits: &Limits,
    cancelled: &dyn Fn() -> bool,
) -> Result<Parsed, ParseError> {
    let limit_error = |limit: Limit, document: usize, message: String| ParseError::Limit {
        limit,
        error: ConfigError {
            source_name: source_name.to_owned(),
            document,
            object: None,
            path: String::new(),
            message,
        },
    };
    if let Some(at) = limits::scan_flow_depth(text, limits.max_depth) {
        return Err(limit_error(
            Limit::Depth,
            at.document,
            format!(
                "nested deeper than {max} levels at line {} column {} (`[`/`{{` not closed); the limit is {max}",
                at.line,
                at.column,
                max = limits.max_depth
            ),
        ));
    }
    let budget = Budget::new(*limits);
    let mut parsed = Parsed::default();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document_number = index + 1;
        if cancelled() {
            return Err(ParseError::Cancelled {
                source_name: source_name.to_owned(),
                documents: index,
            });
        }
        if let Some(max) = limits.max_documents
            && document_number > max
        {
            return Err(limit_error(
                Limit::Documents,
                document_number,
                format!("more than {max} documents; the limit is {max} per request: split it"),
            ));
        }
        let fail = |object: Option<String>, path: String, message: String| ConfigError {
            source_name: source_name.to_owned(),
            document: document_number,
            object,
            path,
            message,
        };
        let value = match limits::bounded_value(document, &budget) {
            Ok(value) => value,
            Err(e) => {
                return Err(match budget.tripped.get() {
                    Some(limit) => limit_error(limit, document_number, e.to_string()),
                    None => fail(None, String::new(), format!("not valid YAML: {e}")).into(),
                });
            }
        };
        if value.is_null() {
            continue;
        }
        // A `List` (what `kubectl get -o yaml` writes) holds its objects in `items`; each
        // is read as a document of its own, its errors under `items[i]`.
        let items = match list_items(value) {
            Ok(items) => items,
            Err(value) => vec![(String::new(), value)],
        };
        for (prefix, value) in items {
            let under = |path: String| match (prefix.is_empty(), path.is_empty()) {
                (true, _) => path,
                (false, true) => prefix.clone(),
                (false, false) => format!("{prefix}.{path}"),
            };
            let resource = match parse_one(value) {
                Ok(Document::Mesh(resource)) => *resource,
                Ok(Document::Unused(object)) => {
                    parsed.unused.push(object);
                    continue;
                }
                Err((object, path, message)) => {
                    return Err(fail(object, under(path), message).into());
                }
            };
            validate::resource(&resource).map_err(|(path, message)| {
                fail(Some(resource.key().to_string()), under(path), message)
            })?;
            parsed.resources.push(resource);
        }
    }
    Ok(parsed)
}

/// The items of a `v1` `List`, each with its path (`items[3]`); any other document back
/// as it came.
fn list_items(value: Value) -> Result<Vec<(String, Value)>, Value> {
    let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
        && value.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_list {
        return Err(value);
    }
    let items = match value {
        Value::Mapping(mut map) => match map.remove("items") {
            Some(Value::Sequence(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| (format!("items[{i}]"), item))
        .collect())
}

/// One document: a mesh resource, or an object set aside (`Kind ns/name`).
enum Document {
    Mesh(Box<Resource>),
    Unused(String),
}

type Failure = (Option<String>, String, String);

fn parse_one(mut value: Value) -> Result<Document, Failure> {
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
    let metadata = |field: &str| {
        map.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let (name, namespace) = (metadata("name"), metadata("namespace"));
    let name_hint = name.as_ref().map(|n| format!("{kind_name} {n}"));
    let ours = Kind::from_name(&kind_name)
        .filter(|kind| kind.api_versions().contains(&api_version.as_str()));
    if ours.is_none() {
        match kinds::classify(&api_version, &kind_name) {
            Some(Foreign::Refused(message)) => return Err((name_hint, "kind".into(), message)),
            Some(Foreign::Unused) => {
                let name = name.unwrap_or_else(|| "(unnamed)".into());
                return Ok(Document::Unused(match namespace {
                    Some(namespace) => format!("{kind_name} {namespace}/{name}"),
                    None => format!("{kind_name} {name}"),
                }));
            }
            None => {}
        }
    }
    let Some(kind) = Kind::from_name(&kind_name) else {
        let known: Vec<String> = Kind::ALL.iter().map(ToString::to_string).collect();
        return Err((
            name_hint,
            "kind".into(),
            format!(
                "{kind_name:?} ({api_version}) is not a kind Bowline knows; its kinds are {} (objects the mesh does not use, such as ConfigMaps or RBAC, are accepted and set aside)",
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
    // Only TLS Secrets are the mesh's (an ingress gateway's certificates); others are set
    // aside like any object the mesh does not use, and never kept.
    if kind == Kind::Secret
        && map.get("type").and_then(Value::as_str) != Some(crate::resources::TLS_SECRET_TYPE)
    {
        let name = name.unwrap_or_else(|| "(unnamed)".into());
        return Ok(Document::Unused(match namespace {
            Some(namespace) => format!("{kind_name} {namespace}/{name}"),
            None => format!("{kind_name} {name}"),
        }));
    }
    let typed = |value: Value| -> Result<Resource, Failure> {
        Ok(match kind {
            Kind::Namespace => Resource::Namespace(strict(value)?),
            Kind::Node => Resource::Node(strict(value)?),
            Kind::ServiceAccount => Resource::ServiceAccount(strict(value)?),
            Kind::Secret => Resource::Secret(strict(value)?),
            Kind::Pod => Resource::Pod(strict(value)?),
            Kind::Service => Resource::Service(strict(value)?),
            Kind::Gateway => {
                gateway_class(&value)?;
                Resource::Gateway(strict(value)?)
            }
            Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(strict(value)?),
            Kind::PeerAuthentication => Resource::PeerAuthentication(strict(value)?),
            Kind::HTTPRoute => Resource::HttpRoute(strict(value)?),
            Kind::GRPCRoute => Resource::GrpcRoute(strict(value)?),
            Kind::ServiceEntry => Resource::ServiceEntry(strict(value)?),
            Kind::VirtualService => Resource::VirtualService(Box::new(strict(value)?)),
            Kind::DestinationRule => Resource::DestinationRule(Box::new(strict(value)?)),
            Kind::RequestAuthentication => Resource::Opaque(kind, strict(value)?),
            Kind::Deployment
            | Kind::ReplicaSet
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::Job => Resource::Workload(kind, Box::new(strict(value)?)),
        })
    };
    typed(value)
        .map(|resource| Document::Mesh(Box::new(resource)))
        .map_err(|(_, path, message)| (name_hint, path, message))
}

/// A Gateway of another class is refused for its class, before any field of a spec
/// written for another implementation is read.
fn gateway_class(value: &Value) -> Result<(), Failure> {
    let class = value
        .get("spec")
        .and_then(|spec| spec.get("gatewayClassName"))
        .and_then(Value::as_str);
    match class {
        Some(class) if class != WAYPOINT_CLASS && class != INGRESS_CLASS => Err((
            None,
            "spec.gatewayClassName".into(),
            format!(
                "{class:?}: Bowline runs waypoints (gatewayClassName: {WAYPOINT_CLASS}) and ingress gateways (gatewayClassName: {INGRESS_CLASS}); egress gateways and other implementations' classes are not supported"
            ),
        )),
        _ => Ok(()),
    }
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
