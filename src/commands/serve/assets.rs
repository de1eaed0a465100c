//! The dashboard's two static files, compiled into the binary: the stylesheet and the small script that
//! refreshes the live run panel (and adds copy buttons). Nothing is fetched from anywhere else.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const STYLE: &str = include_str!("assets/style.css");
const LIVE: &str = include_str!("assets/live.js");

pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "live.js" => (LIVE, "text/javascript; charset=utf-8"),
        _ => return super::pages::not_found("no such file"),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, kind)], body).into_response()
}
