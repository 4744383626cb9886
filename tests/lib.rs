//! The end-to-end suite lives in `e2e/`; this library is empty.
