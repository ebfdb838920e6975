//! Workload controllers as users write them: `Deployment`, `ReplicaSet`, `StatefulSet`,
//! `DaemonSet` (`apps/v1`) and `Job` (`batch/v1`), one shape for all five ([`Workload`]).
//! The mesh itself never reads them — it sees the pods they make; the lab plays their
//! controllers (docs/lab.md). What the lab honours: `replicas`, `selector.matchLabels`,
//! `template`, a Job's `completions`; the rest is read, named in one note per object
//! ([`WorkloadSpec::without_effect`]) and kept as written.

use serde::{Deserialize, Serialize};

use super::{Kind, Labels, PodSpec};

/// A workload controller of kind `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet`
/// or `Job` (the kind is beside it in [`super::Resource::Workload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Metadata.
    pub metadata: super::ObjectMeta,
    /// Spec.
    pub spec: WorkloadSpec,
    /// What a cluster reported of it (exported objects carry it): ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// The spec of a workload controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Pods wanted (Deployment, ReplicaSet, StatefulSet; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Which pods are its own; must select the template's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pods it makes.
    pub template: PodTemplate,
    /// A StatefulSet's governing (headless) Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// A Job's pods to run to completion (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<u32>,
    /// Read and not acted on in the lab.
    #[serde(flatten)]
    pub unenforced: Box<WorkloadExtras>,
}

/// `selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels a pod must carry.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    /// Set-based requirements (read; the lab's pods are its own by owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<serde_json::Value>,
}

/// `template`: the pods' metadata and spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplate {
    /// Labels and annotations the pods get.
    #[serde(default)]
    pub metadata: TemplateMeta,
    /// The pods' spec.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `template.metadata` (no name: the controller names its pods).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    /// Labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
    /// `kubectl` writes `creationTimestamp: null` here; ignored.
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
}

/// Workload spec fields read and not acted on in the lab.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strategy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update_strategy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_ready_seconds: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision_history_limit: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress_deadline_seconds: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod_management_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    volume_claim_templates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    persistent_volume_claim_retention_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ordinals: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parallelism: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff_limit: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_deadline_seconds: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_seconds_after_finished: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completion_mode: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suspend: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manual_selector: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod_failure_policy: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod_replacement_policy: Option<serde_json::Value>,
}

impl WorkloadExtras {
    /// The fields given, by their YAML names.
    fn given(&self) -> Vec<&'static str> {
        [
            ("strategy", self.strategy.is_some()),
            ("updateStrategy", self.update_strategy.is_some()),
            ("minReadySeconds", self.min_ready_seconds.is_some()),
            (
                "revisionHistoryLimit",
                self.revision_history_limit.is_some(),
            ),
            (
                "progressDeadlineSeconds",
                self.progress_deadline_seconds.is_some(),
            ),
            ("paused", self.paused.is_some()),
            ("podManagementPolicy", self.pod_management_policy.is_some()),
            (
                "volumeClaimTemplates",
                self.volume_claim_templates.is_some(),
            ),
            (
                "persistentVolumeClaimRetentionPolicy",
                self.persistent_volume_claim_retention_policy.is_some(),
            ),
            ("ordinals", self.ordinals.is_some()),
            ("parallelism", self.parallelism.is_some()),
            ("backoffLimit", self.backoff_limit.is_some()),
            (
                "activeDeadlineSeconds",
                self.active_deadline_seconds.is_some(),
            ),
            (
                "ttlSecondsAfterFinished",
                self.ttl_seconds_after_finished.is_some(),
            ),
            ("completionMode", self.completion_mode.is_some()),
            ("suspend", self.suspend.is_some()),
            ("manualSelector", self.manual_selector.is_some()),
            ("podFailurePolicy", self.pod_failure_policy.is_some()),
            (
                "podReplacementPolicy",
                self.pod_replacement_policy.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

impl WorkloadSpec {
    /// The fields given that have no effect in the lab, as paths (`spec.strategy`,
    /// `spec.template.spec.affinity`); empty when everything written is in force.
    pub fn without_effect(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unenforced
            .given()
            .into_iter()
            .map(|f| format!("spec.{f}"))
            .collect();
        if self
            .selector
            .as_ref()
            .is_some_and(|s| s.match_expressions.is_some())
        {
            out.push("spec.selector.matchExpressions".into());
        }
        out.extend(
            self.template
                .spec
                .without_effect()
                .into_iter()
                .map(|path| format!("spec.template.{path}")),
        );
        out
    }

    /// How many pods the controller of `kind` keeps (DaemonSets: one per node, not
    /// counted here).
    pub fn wanted(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Job => self.completions.unwrap_or(1),
            _ => self.replicas.unwrap_or(1),
        }
    }
}

/// A reference from an object to the one that made it (`metadata.ownerReferences`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// The owner's `apiVersion`.
    pub api_version: String,
    /// The owner's kind.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid.
    #[serde(default)]
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}
