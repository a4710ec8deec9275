//! Integration tests: one binary driving the real `retort` executable (and the library).
//! Each area has its own module; `util` holds the temp-workspace helper.

mod util;

mod audit;
mod distill;
mod foundation;
mod golden;
mod ingest;
mod ledger;
mod lifecycle;
mod nn;
mod operations;
mod package;
mod policy;
mod privacy;
mod privacy_audit;
mod roles;
mod serve;
