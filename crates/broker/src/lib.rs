//! edgemq runtime.
