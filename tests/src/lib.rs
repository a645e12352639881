//! End-to-end tests of verrou live in `tests/`.
