//! Shop's end-to-end tests. The package has no library code: its one test binary,
//! `tests/platform`, runs several services together (see its crate documentation). Cargo
//! needs a library or binary target in every package, hence this file.
