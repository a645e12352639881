//! Redis store for verrou, on fred.
