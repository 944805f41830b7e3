//! The platform's public HTTP API as data: the request and response bodies services exchange
//! with clients through the gateway, and the OpenAPI document describing them ([`openapi`]),
//! generated from these types, which the gateway serves at `/openapi.json`.
//!
//! Services build their handlers on these types, so the document cannot drift from what
//! they accept and return. JSON is camelCase; times are RFC 3339 strings in UTC.

pub mod auth;
pub mod dlq;
mod docs;
pub mod events;
pub mod inventory;

pub use docs::openapi;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// 1-based page number.
    pub page: u64,
    pub size: u64,
    /// Items across all pages.
    pub total: u64,
}

/// Page selection in query strings: `?page=2&size=50`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct PageQuery {
    /// 1-based page number (default 1).
    pub page: u64,
    /// Items per page, 1 to 100 (default 20).
    pub size: u64,
}

impl Default for PageQuery {
    fn default() -> Self {
        Self { page: 1, size: 20 }
    }
}

impl PageQuery {
    pub const MAX_SIZE: u64 = 100;
    /// Deep pages cost a scan of everything before them; past this, filter instead.
    pub const MAX_PAGE: u64 = 10_000;

    /// The page clamped to sane bounds.
    pub fn clamped(self) -> Self {
        Self {
            page: self.page.clamp(1, Self::MAX_PAGE),
            size: self.size.clamp(1, Self::MAX_SIZE),
        }
    }

    pub fn skip(self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.size)
    }
}

/// An error response (RFC 9457), `application/problem+json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable: switch on this, not on `title`.
    pub code: String,
    pub detail: Option<String>,
}
