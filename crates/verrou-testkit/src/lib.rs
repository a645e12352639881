//! Private throwaway Redis and PostgreSQL servers for verrou's tests and benchmarks.
