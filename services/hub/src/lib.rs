//! The Xinqiao hub: gRPC services over mutual TLS, with identity from client certificates,
//! authorisation by the domain policy, and storage behind the store traits.

pub mod access;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod console;
pub mod convert;
pub mod dcat;
pub mod directory;
pub mod evaluation;
pub mod exchange;
pub mod federation;
pub mod feed;
pub mod interface;
pub mod metrics;
pub mod nodes;
pub mod paging;
pub mod pki;
pub mod refusals;
pub mod registry;
pub mod sample_upstream;
pub mod schemas;
pub mod search_index;
pub mod server;
pub mod status;
pub mod tls;
pub mod trail;
pub mod transcode;
pub mod upstream;
pub mod web;

pub use config::Config;
pub use server::{RunningHub, ServeError, start, start_with_store};
