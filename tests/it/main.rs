//! facedb's integration tests: the real `facedb serve` binary, driven over HTTP.
//!
//! One test binary (`cargo test --test it`) with one module per concern. `common` is the
//! harness (start a server, send requests, build faces, check error shapes); the others follow
//! the API contract of spec.md endpoint by endpoint, replay the original product's documented
//! examples (`seed_examples`), check the command line (`serve_cli`), and compare random
//! searches with a naive oracle (`prop_search`).

mod cluster;
mod common;
mod crash;
mod detect;
mod doc_examples;
mod durability;
mod errors;
mod faces;
mod filters;
mod galleries;
mod index;
mod openapi;
mod prop_search;
mod search;
mod seed_examples;
mod serve_cli;
