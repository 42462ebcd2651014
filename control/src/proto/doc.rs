//! Checks docs/protocol.md against the code.
