//! Accepting a request body: size limit (413, before reading when Content-Length says
//! so), a body that ends before its Content-Length (400), and a read deadline (408).

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;

/// How long a client may take to send its body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads the whole body, enforcing `limit` bytes.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = match headers.get(axum::http::header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Content-Length header is not a number".into())
                })?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if is_length_limit(&*e) => return Err(ApiError::TooLarge { limit }),
        Err(e) => {
            return Err(ApiError::BadRequest(match declared {
                Some(n) => format!(
                    "request body ended before the {n} bytes its Content-Length announced ({e})"
                ),
                None => format!("could not read the request body: {e}"),
            }))
        }
    };
    if let Some(n) = declared {
        if bytes.len() as u64 != n {
            return Err(ApiError::BadRequest(format!(
                "request body has {} bytes but Content-Length says {n}",
                bytes.len()
            )));
        }
    }
    Ok(bytes)
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
