//! Bowline's benchmarks and the HBONE demo: `bowline bench hbone|l4|l7|control-plane` and
//! `bowline hbone-demo`. Every benchmark measures a baseline in the same run and reports
//! ratios against it.
//!
//! Owns: the workloads, the measurements and their reports (text and `--json`). Must
//! not: contain mesh logic, or be compiled into the library crates it measures — it drives
//! `hbone` through its public API and the other components as `bowline` processes, the
//! way an operator would.

#![forbid(unsafe_code)]

pub mod control_plane;
pub mod demo;
pub mod hbone;
pub mod l4;
pub mod l7;
mod load;
mod procfs;
pub mod relay;
pub mod stats;
