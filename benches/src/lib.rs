//! Benchmarks of verrou.
