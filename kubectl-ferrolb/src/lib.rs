//! `kubectl ferrolb`: a kubectl plugin for ferrolb. Its logic lives here, free of I/O (the
//! conversion from MetalLB, and what the cluster's objects say), so that it is tested without
//! files, processes or a cluster; the binary reads the files or the cluster, and prints.

pub mod cluster;
pub mod migrate;
