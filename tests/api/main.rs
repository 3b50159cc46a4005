//! End-to-end tests of the HTTP API: a real server on a real socket, a real sled data dir.

mod helpers;
