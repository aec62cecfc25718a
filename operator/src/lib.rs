//! The Xin operator: reconciles `xin.dev/v1alpha1` Tenants, Channels, AutomationRules and
//! IngestionJobs into namespaces, workloads, Secrets, policies and Jobs.
//!
//! Every reconcile is the pipeline resolve → validate → build → apply → status (Stackable's
//! shape), one module folder per kind under `controllers/`: what the spec refers to is read
//! from the watches' stores (`stores`), the children are built by pure functions
//! (`builders`, `controllers::<kind>::children`), applied with server-side apply only on a
//! difference and pruned when no longer desired (`apply`), and the typed status is patched
//! only on a difference by the one runner all four kinds share (`controllers::runner`).
//! Errors name the object and the step (`error`).
#![forbid(unsafe_code)]
#![deny(warnings)]

pub mod apply;
pub mod builders;
pub mod component;
pub mod conditions;
pub mod config;
pub mod controllers;
pub mod crdgen;
pub mod error;
#[cfg(test)]
pub mod golden;
pub mod metrics;
pub mod redact;
pub mod server;
pub mod smoke;
pub mod stores;
