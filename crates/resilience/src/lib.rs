//! Resilience primitives for calls to an unreliable dependency (being written; see issue 3).
