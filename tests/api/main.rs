//! End-to-end tests of the HTTP API: a real server on a real socket, a real sled data dir.

mod activity;
mod api_conventions;
mod audit;
mod authz;
mod bad_input;
#[path = "../common/bin_server.rs"]
mod bin_server;
mod binary_ops;
mod crash;
mod data_dir;
mod hardening;
mod helpers;
mod http_limits;
mod lifecycle;
mod schemas;
mod verify;
