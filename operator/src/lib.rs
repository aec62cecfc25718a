//! The Xin operator: reconciles `xin.dev/v1alpha1` Tenants, Channels, AutomationRules and
//! IngestionJobs into namespaces, workloads, Secrets, policies and Jobs.
//!
//! Pipeline of every reconcile (Stackable's shape): resolve what the spec refers to
//! (`controllers::resolve`) → build the children with pure functions (`builders`) → apply them
//! with server-side apply, writing only on a difference (`apply`) → compute and patch the
//! status, only on a difference (`conditions`, `controllers::patch_status`).
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod apply;
pub mod builders;
pub mod conditions;
pub mod config;
pub mod controllers;
pub mod crdgen;
pub mod error;
pub mod metrics;
pub mod server;
