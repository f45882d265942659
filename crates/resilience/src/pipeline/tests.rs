//! Tests of the pipeline on a paused tokio clock.
