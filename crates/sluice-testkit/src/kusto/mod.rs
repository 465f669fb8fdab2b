//! A local stand-in for Azure Data Explorer, for the Kusto sink's tests.
//!
//! ADX itself cannot run on a test machine. These servers implement the
//! documented REST contract the sink relies on and reject every request
//! that departs from it:
//!
//! - [`store`]: the tables, ingestion mappings and extents (with their
//!   `ingest-by:` tags) that ingestion writes into;
//! - [`engine`]: the Azure AD token endpoint, the engine's query and
//!   management endpoints, and streaming ingestion;
//! - [`azurite`]: Azurite, the Azure Blob and Queue storage emulator;
//! - [`dm`]: the data-management service for queued ingestion (ingestion
//!   resources, identity token) and an ingestion worker that takes queue
//!   messages from Azurite and ingests their blobs into the store.

pub mod azurite;
pub mod dm;
pub mod engine;
pub mod store;
