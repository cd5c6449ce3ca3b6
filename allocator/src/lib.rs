//! ferrolb address allocator (being written).
