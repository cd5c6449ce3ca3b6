//! `kubectl ferrolb`: a kubectl plugin for ferrolb. The conversion logic lives here, free of I/O,
//! so that it is tested without files, processes or a cluster; `main.rs` reads the files and
//! prints.

pub mod migrate;
