//! The PostgreSQL backend (being written).

use crate::StoreError;

/// The PostgreSQL store (not implemented yet).
#[derive(Debug, Clone)]
pub struct PostgresStore {}

impl PostgresStore {
    /// Connects to `url` (not implemented yet: always a configuration error).
    pub async fn connect(_url: &str) -> Result<Self, StoreError> {
        Err(StoreError::Config(
            "the PostgreSQL backend is not implemented yet".to_owned(),
        ))
    }
}
