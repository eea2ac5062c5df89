//! Configuration resources → validated model (in progress).
