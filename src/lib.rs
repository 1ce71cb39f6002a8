//! tokensmith: a Kubernetes operator that mints, rotates and revokes API
//! access tokens declared as `AccessToken` and `AppRegistration` resources.

pub mod admission;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod crdgen;
pub mod leader;
pub mod server;
pub mod telemetry;
pub mod token;
