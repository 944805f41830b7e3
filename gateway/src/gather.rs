//! Routes every service answers in part. `GET /audit`: each service holds the records of the
//! staff actions on its own data, so the gateway asks every service for the page the query
//! selects (same filters, same `before` cursor, same `size`) and answers the newest `size`
//! records of them all. Record ids are time-ordered, so newest first is greatest id first,
//! and the merged page is exact: its records are among each service's first `size`.

use crate::Gateway;
use crate::proxy::upstream_failed;
use crate::upstream::Retry;
use axum::body::Bytes;
use axum::extract::{Query, Request};
use axum::response::{IntoResponse, Response};
use http_api::audit::{AuditPage, AuditQuery};
use http_body_util::BodyExt;
use service_kit::Problem;

pub async fn audit(gateway: &Gateway, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let parts = &parts;
    let asked = gateway.upstreams().map(|upstream| async move {
        let answer = upstream.send(parts, Bytes::new(), Retry::Idempotent).await;
        (upstream, answer)
    });
    let mut pages = Vec::new();
    for (upstream, answer) in futures::future::join_all(asked).await {
        let response = match answer {
            Ok(response) if response.status().is_success() => response,
            // The services judge the query alike: the first refusal is everyone's.
            Ok(refused) => return refused,
            Err(e) => return upstream_failed(upstream, e),
        };
        match read_page(response).await {
            Some(page) => pages.push(page),
            None => {
                return Problem::internal(&format!("{} sent an unreadable page", upstream.name()))
                    .into_response();
            }
        }
    }
    let size = Query::<AuditQuery>::try_from_uri(&parts.uri)
        .map_or(AuditQuery::default().size, |Query(q)| q.size);
    axum::Json(merge(pages, size)).into_response()
}

async fn read_page(response: Response) -> Option<AuditPage> {
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// The newest `size` records of `pages`, and a cursor when any page had more.
fn merge(pages: Vec<AuditPage>, size: u64) -> AuditPage {
    let more_behind = pages.iter().any(|p| p.next.is_some());
    let mut items: Vec<_> = pages.into_iter().flat_map(|p| p.items).collect();
    items.sort_by(|a, b| b.id.cmp(&a.id));
    let more = more_behind || items.len() as u64 > size;
    items.truncate(size as usize);
    let next = more.then(|| items.last().map(|r| r.id.clone())).flatten();
    AuditPage { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_api::audit::AuditRecord;

    fn record(id: &str) -> AuditRecord {
        AuditRecord {
            id: id.into(),
            service: "s".into(),
            actor: "a".into(),
            action: "x".into(),
            target_type: "t".into(),
            target_id: "i".into(),
            changes: Vec::new(),
            reason: None,
            at: "2026-12-03T00:00:00Z".into(),
            request_id: None,
        }
    }

    fn page(ids: &[&str], next: bool) -> AuditPage {
        AuditPage {
            items: ids.iter().map(|id| record(id)).collect(),
            next: next.then(|| ids.last().unwrap().to_string()),
        }
    }

    fn ids(page: &AuditPage) -> Vec<&str> {
        page.items.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn the_newest_records_of_all_services_make_the_page() {
        let merged = merge(vec![page(&["9", "4"], false), page(&["7", "5"], false)], 3);
        assert_eq!(ids(&merged), ["9", "7", "5"]);
        assert_eq!(merged.next.as_deref(), Some("5"));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let merged = merge(
            vec![page(&["2"], false), page(&[], false), page(&["3"], false)],
            5,
        );
        assert_eq!(ids(&merged), ["3", "2"]);
        assert_eq!(merged.next, None);
    }

    #[test]
    fn a_service_with_more_behind_its_page_keeps_the_cursor() {
        let merged = merge(vec![page(&["8", "6"], true), page(&[], false)], 2);
        assert_eq!(merged.next.as_deref(), Some("6"));
    }
}
