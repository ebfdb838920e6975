//! The node agent (`bowline cni`): learns which pods on its node are enrolled, installs
//! the capture rules inside their namespaces and hands the namespaces to ztunnel over the
//! ZDS protocol.
//!
//! Owns: enrolment decisions and the agent side of ZDS. Must not: proxy traffic.
//!
//! Built so far: [`zds`], the agent side of the protocol (used by the lab and tests);
//! enrolment from the control plane comes with the lab.

#![forbid(unsafe_code)]

pub mod zds;
