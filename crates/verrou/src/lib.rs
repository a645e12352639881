//! verrou facade.
