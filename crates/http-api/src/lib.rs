//! The platform's public HTTP API as data: the request and response bodies services exchange
//! with clients through the gateway, and the OpenAPI document describing them ([`openapi`]),
//! generated from these types, which the gateway serves at `/openapi.json`.
//!
//! Services build their handlers on these types, so the document cannot drift from what
//! they accept and return. JSON is camelCase; times are RFC 3339 strings in UTC.

pub mod audit;
pub mod auth;
mod de;
pub mod dlq;
mod docs;
pub mod events;
pub mod inventory;
pub mod overview;
pub mod text;

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

/// Page selection in query strings: `?page=2&size=50`. Out-of-range or malformed values are
/// refused (400 `invalid_query`), never silently replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::IntoParams)]
#[serde(default, try_from = "RawPageQuery")]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number.
    #[param(minimum = 1, maximum = 10_000, default = 1)]
    pub page: u64,
    /// Items per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: u64,
}

impl Default for PageQuery {
    fn default() -> Self {
        Self { page: 1, size: 20 }
    }
}

/// [`PageQuery`] as it arrives, before its bounds are checked.
#[derive(Deserialize)]
struct RawPageQuery {
    page: Option<u64>,
    size: Option<u64>,
}

impl TryFrom<RawPageQuery> for PageQuery {
    type Error = String;

    fn try_from(raw: RawPageQuery) -> Result<Self, Self::Error> {
        let default = Self::default();
        let page = raw.page.unwrap_or(default.page);
        let size = raw.size.unwrap_or(default.size);
        if !(1..=Self::MAX_PAGE).contains(&page) {
            return Err(format!("page: must be 1 to {}", Self::MAX_PAGE));
        }
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(format!("size: must be 1 to {}", Self::MAX_SIZE));
        }
        Ok(Self { page, size })
    }
}

impl PageQuery {
    pub const MAX_SIZE: u64 = 100;
    /// Deep pages cost a scan of everything before them; past this, filter instead.
    pub const MAX_PAGE: u64 = 10_000;

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

/// A time given in a query string (RFC 3339). A value that is not one is refused (400
/// `invalid_query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub time::OffsetDateTime);

impl Timestamp {
    /// Milliseconds since the Unix epoch (what BSON dates hold).
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(Timestamp)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"
                ))
            })
    }
}
