//! The platform at a glance, for staff: claim figures, the pipeline's backlogs and each
//! service instance's readiness, gathered by the gateway from the services' `/metrics` and
//! `/readyz`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One look at the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// When the services were asked.
    #[schema(format = DateTime)]
    pub at: String,
    pub claims: ClaimFigures,
    /// Claims settled per minute, one point per look the gateway took in the last
    /// 15 minutes, oldest first; each point is the rate over the minute before it.
    pub claims_per_minute: Vec<RatePoint>,
    /// Messages each consumer group is behind, summed over its partitions.
    pub consumer_lag: Vec<GroupLag>,
    /// Per service.
    pub outbox_pending: Vec<ServiceCount>,
    /// Dead letters neither replayed nor discarded, per service.
    pub dead_letters_pending: Vec<ServiceCount>,
    /// Every instance the gateway routes to.
    pub instances: Vec<InstanceReadiness>,
}

/// Claims settled since the event service instances started, and those in flight now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimFigures {
    pub succeeded: u64,
    pub failed: u64,
    /// Sagas waiting for their grant's result.
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatePoint {
    #[schema(format = DateTime)]
    pub at: String,
    pub succeeded: f64,
    pub failed: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupLag {
    pub group: String,
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCount {
    pub service: String,
    pub count: u64,
}

/// Whether one instance answers its readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReadiness {
    pub service: String,
    /// `host:port`.
    pub instance: String,
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
