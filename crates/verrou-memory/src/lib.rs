//! In-process memory store for verrou.
