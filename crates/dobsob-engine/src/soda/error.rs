//! Errors from the portal, with the portal's own error code and message, and whether a retry can help.
//!
//! Socrata answers errors in two body shapes: `{"code": ..., "error": true, "message": ...}` and
//! `{"errorCode": ..., "message": ...}`; [`parse_error_body`] reads both.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SodaError {
    /// The portal answered with an error status.
    #[error("{method} {url} answered HTTP {status}{}: {message}", .code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        /// The portal's `code` or `errorCode`, e.g. `query.soql.no-such-column`.
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Connecting, sending, or reading the body failed (includes timeouts and cut connections).
    #[error("{method} {url} failed: {message}")]
    Network {
        method: &'static str,
        url: String,
        message: String,
        /// No connection could be made at all (DNS, refused, TLS): the portal is unreachable, not busy.
        connect: bool,
    },
    /// The portal answered 200 with something dobsob cannot use.
    #[error("{url} sent a bad response: {message}")]
    BadResponse { url: String, message: String },
    /// Writing a downloaded page to disk failed.
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl SodaError {
    /// Whether the same request may succeed later: throttling (429), server errors (5xx), server-side query
    /// timeouts (408), "still processing" (202) and network errors. Other 4xx fail fast, and so do 501 (not
    /// implemented) and 505 (HTTP version): answers that will not change on retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            SodaError::Status { status, .. } => {
                matches!(status, 202 | 408 | 429 | 500..=599) && !matches!(status, 501 | 505)
            }
            SodaError::Network { .. } => true,
            SodaError::BadResponse { .. } | SodaError::Io { .. } => false,
        }
    }

    /// Whether the portal could not be reached at all (as opposed to failing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SodaError::Network { connect: true, .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SodaError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Reads the portal's error code and message out of an error body of either shape. Falls back to the start of
/// the body (HTML error pages from proxies happen too).
pub fn parse_error_body(body: &str) -> (Option<String>, String) {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(body) {
        let code = o
            .get("code")
            .or_else(|| o.get("errorCode"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let message = o
            .get("message")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| "no message".into());
        return (code, message);
    }
    let snippet: String = body.trim().chars().take(200).collect();
    (
        None,
        if snippet.is_empty() {
            "empty error body".into()
        } else {
            snippet
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_are_read() {
        let (code, msg) = parse_error_body(
            r#"{"code":"dataset.missing","error":true,"message":"Not found","data":{"id":"x"}}"#,
        );
        assert_eq!(code.as_deref(), Some("dataset.missing"));
        assert_eq!(msg, "Not found");
        let (code, msg) = parse_error_body(
            r#"{"message":"Query coordinator error: query.soql.no-such-column; No such column: foo","errorCode":"query.soql.no-such-column","data":{}}"#,
        );
        assert_eq!(code.as_deref(), Some("query.soql.no-such-column"));
        assert!(msg.starts_with("Query coordinator error"));
        let (code, msg) = parse_error_body("<html>Bad Gateway</html>");
        assert_eq!(code, None);
        assert_eq!(msg, "<html>Bad Gateway</html>");
    }

    #[test]
    fn retry_classes() {
        let status = |s| SodaError::Status {
            method: "GET",
            url: "u".into(),
            status: s,
            code: None,
            message: String::new(),
            retry_after: None,
        };
        for s in [202, 408, 429, 500, 502, 503] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 412, 501] {
            assert!(!status(s).is_retryable(), "{s}");
        }
    }
}
