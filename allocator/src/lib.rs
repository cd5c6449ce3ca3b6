//! ferrolb's address allocator: which Service gets which address of which pool.
//!
//! A pure library: no Kubernetes types, no I/O, no clock. The controller turns pools and Services
//! into [`Pool`]s and [`ServiceRequest`]s at the edge and turns [`Assignment`]s and [`Error`]s
//! back into status, Events and metrics.
//!
//! Pools are sets of runs over `u128` ([`intervals`]), so a `/64` costs what a `/30` costs and
//! finding the lowest free address is a map lookup, not a scan. Results depend only on the calls
//! made and their order: every map is ordered and every tie is broken by name.
//!
//! - [`allocator`]: who holds what; pools in, Services in and out, reports.
//! - `pick`: which address a Service gets.
//! - [`space`]: one pool's addresses of one family, free and counted.
//! - [`sharing`]: when two Services may hold one address.
//! - [`service`]: the checks on a request and what a Service holds; the inputs (pools,
//!   Services, selectors) are `model`'s.
//! - [`report`]: overlaps, orphans and usage, for pool status.
//! - [`error`]: every refusal, worded for Events.

pub mod allocator;
pub mod error;
pub mod intervals;
mod pick;
pub mod report;
pub mod service;
pub mod sharing;
pub mod space;

pub use allocator::Allocator;
pub use error::{Error, Result};
/// The inputs are the model's, shared with the controller and the speaker.
pub use model::pool::{self, Pool, ServiceAllocation};
pub use model::selector::{self, LabelSelector, Labels, Operator, Requirement};
pub use model::service::{FamilyPolicy, Protocol, ServiceKey, ServiceRequest};
pub use report::{Orphan, Overlap, PoolUsage};
pub use service::{AssignedAddress, Assignment, check_request};
pub use sharing::SharingConflict;
pub use space::Usage;
