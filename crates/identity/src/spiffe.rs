//! SPIFFE identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! This is the only identity shape the mesh issues or accepts. Parsing is strict: anything
//! else is refused with an error that names the part that is wrong.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a mesh SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE id: it must start with \"spiffe://\"")]
    MissingScheme(String),
    /// The trust domain is empty.
    #[error("{0:?} has an empty trust domain (expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")]
    EmptyTrustDomain(String),
    /// The trust domain holds a character SPIFFE does not allow.
    #[error(
        "trust domain {domain:?} holds {bad:?}; only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomain {
        /// The trust domain as written.
        domain: String,
        /// The first offending character.
        bad: char,
    },
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("{0:?} does not have the path /ns/<namespace>/sa/<service-account>")]
    NotNamespacedServiceAccount(String),
    /// A namespace or service-account segment is empty, `.`/`..`, or holds a bad character.
    #[error(
        "{kind} {segment:?} is not valid: use letters, digits, '.', '-' and '_' (not '.' or '..' alone)"
    )]
    BadSegment {
        /// `namespace` or `service account`.
        kind: &'static str,
        /// The segment as written.
        segment: String,
    },
}

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each of them.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(trust_domain, trust_domain)?;
        validate_segment("namespace", namespace)?;
        validate_segment("service account", service_account)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::MissingScheme(s.to_owned()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain(s.to_owned()));
        }
        validate_trust_domain(domain, domain)?;
        let mut parts = path.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Self::new(domain, ns, sa),
            _ => Err(SpiffeIdError::NotNamespacedServiceAccount(s.to_owned())),
        }
    }
}

fn validate_trust_domain(domain: &str, shown: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain(shown.to_owned()));
    }
    match domain
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(bad) => Err(SpiffeIdError::BadTrustDomain {
            domain: domain.to_owned(),
            bad,
        }),
        None => Ok(()),
    }
}

fn validate_segment(kind: &'static str, segment: &str) -> Result<(), SpiffeIdError> {
    let ok = !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::BadSegment {
            kind,
            segment: segment.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_workload_identity() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/frontend"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "frontend");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/frontend");
        assert_eq!(
            SpiffeId::new("cluster.local", "shop", "frontend").unwrap(),
            id
        );
    }

    type Check = fn(&SpiffeIdError) -> bool;

    #[test]
    fn refuses_everything_else_with_the_reason() {
        let cases: &[(&str, Check)] = &[
            ("https://cluster.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::MissingScheme(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::EmptyTrustDomain(_))
            }),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeIdError::BadTrustDomain { bad: 'C', .. })
            }),
            ("spiffe://cluster.local", |e| {
                matches!(e, SpiffeIdError::NotNamespacedServiceAccount(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, SpiffeIdError::NotNamespacedServiceAccount(_))
            }),
            ("spiffe://cluster.local/sa/b/ns/a", |e| {
                matches!(e, SpiffeIdError::NotNamespacedServiceAccount(_))
            }),
            ("spiffe://cluster.local/ns//sa/b", |e| {
                matches!(
                    e,
                    SpiffeIdError::BadSegment {
                        kind: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/a/sa/..", |e| {
                matches!(
                    e,
                    SpiffeIdError::BadSegment {
                        kind: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://cluster.local/ns/a b/sa/c", |e| {
                matches!(e, SpiffeIdError::BadSegment { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(check(&err), "{input}: unexpected error {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }
}
