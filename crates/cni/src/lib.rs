//! The node agent (`bowline cni`): learns which pods on its node are enrolled, installs
//! the capture rules inside their namespaces and hands the namespaces to ztunnel over the
//! ZDS protocol.
//!
//! Owns: enrolment decisions and the agent side of ZDS. Must not: proxy traffic.
//!
//! Map: [`zds`], the agent side of the protocol; [`agent`], the loop that follows the
//! control plane's workloads for this node and captures/releases pods; [`report`], telling
//! the control plane which pods are captured (it advertises them as HBONE only then).

#![forbid(unsafe_code)]

pub mod agent;
pub mod report;
pub mod zds;
