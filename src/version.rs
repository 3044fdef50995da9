//! weir's version (a leaf: the CLI, the demo and `weir_build_info` name it).

/// weir's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
