//! `/admin/access`: the access review as an HTML table, and `/admin/access.csv` as the same rows
//! for a review campaign import (issue 13). Both sit behind the [`Admin`] gate, so each view is
//! audited. The rows are the ones `storegate access-report` prints (`access_review`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Admin, render};
use crate::access_review::{self as access, Report, Row, Windows, sources};
use crate::web::AppState;
use crate::web::errors::AppError;

/// `?dormant=30d&expiring=14d`, as on the command line.
#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    dormant: Option<String>,
    expiring: Option<String>,
}

impl WindowQuery {
    fn windows(&self, rid: &str) -> Result<Windows, AppError> {
        let d = Windows::default();
        let pick = |raw: &Option<String>, default: i64, name: &str| match raw.as_deref() {
            None | Some("") => Ok(default),
            Some(r) => sources::parse_window(r)
                .map_err(|e| AppError::bad_request(format!("`{name}`: {e}"), rid)),
        };
        Ok(Windows {
            dormant_secs: pick(&self.dormant, d.dormant_secs, "dormant")?,
            expiring_secs: pick(&self.expiring, d.expiring_secs, "expiring")?,
        })
    }
}

async fn report(state: &AppState, w: Windows) -> Report {
    let scim = match &state.scim {
        Some(s) => s.snapshot().await.map_err(|e| e.detail),
        None => Err("[scim] is not enabled".to_owned()),
    };
    let trail = sources::trail_files(&state.config);
    // The policy in force now (a reload may have changed it since startup).
    let snap = state.policy();
    let mut cfg = crate::config::Config::clone(&state.config);
    cfg.policy = snap.policy.clone();
    cfg.stores = snap.stores.clone();
    sources::gather(&cfg, scim, &trail, state.clock.now(), w).await
}

#[derive(Template)]
#[template(path = "admin/access.html")]
struct AccessPage<'a> {
    rows: &'a [Row],
    warnings: &'a [String],
    launches_from: &'a str,
    dormant: usize,
    expiring: usize,
    csv_link: String,
    /// The filter form's values: what was asked, else the defaults.
    dormant_window: &'a str,
    expiring_window: &'a str,
}

/// `GET /admin/access`.
pub async fn page(
    State(state): State<AppState>,
    admin: Admin,
    Query(q): Query<WindowQuery>,
) -> Result<Response, AppError> {
    let w = q.windows(&admin.request_id)?;
    let r = report(&state, w).await;
    let dormant_window = q
        .dormant
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or("30d");
    let expiring_window = q
        .expiring
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or("14d");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("dormant", dormant_window)
        .append_pair("expiring", expiring_window)
        .finish();
    let page = AccessPage {
        rows: &r.rows,
        warnings: &r.warnings,
        launches_from: &r.launches_from,
        dormant: r.rows.iter().filter(|x| x.dormant).count(),
        expiring: r.rows.iter().filter(|x| x.expiring).count(),
        csv_link: format!("/admin/access.csv?{query}"),
        dormant_window,
        expiring_window,
    };
    Ok(render(&page, &admin.request_id))
}

/// `GET /admin/access.csv`: the rows as a download.
pub async fn csv(
    State(state): State<AppState>,
    admin: Admin,
    Query(q): Query<WindowQuery>,
) -> Result<Response, AppError> {
    let w = q.windows(&admin.request_id)?;
    let r = report(&state, w).await;
    let mut resp = access::to_csv(&r.rows).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"storegate-access.csv\""),
    );
    Ok(crate::web::no_store(resp))
}
