//! The speaker's pure core (being written).
