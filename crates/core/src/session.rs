//! Per-session protocol state.
