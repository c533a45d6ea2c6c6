//! Bearer API keys: hashing (`tonewall hash-key`) and the extractor that turns
//! `Authorization: Bearer <key>` into the tenant.
//!
//! Must never: log or echo a presented key; compare hashes in variable time.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::api::ApiState;

/// The config form of an API key: `sha256:<64 hex>`.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// The tenant that the request's API key belongs to.
#[derive(Clone, Debug)]
pub struct Tenant(pub Arc<str>);

impl FromRequestParts<ApiState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let missing = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "an Authorization: Bearer <api key> header is required",
            )
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(missing)?
            .to_str()
            .map_err(|_| missing())?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(missing)?;
        state.manager.authenticate(key).map(Tenant).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(crate::config::is_key_hash(&hash_key("x")));
    }
}
