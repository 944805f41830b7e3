//! The reward-fulfillment service's HTTP routes (public paths; the gateway forwards them
//! unchanged): a player's inventory as the ledger recorded it.

use crate::AppState;
use crate::error::FulfillmentError;
use auth_claims::{Identity, Role};
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use http_api::inventory::Inventory;
use service_kit::Json;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/inventory/me", get(my_inventory))
        .route("/inventory/{user_id}", get(user_inventory))
        .with_state(state)
}

/// Roles that read every player's inventory (ADMIN always may).
const INVENTORY_READERS: &[Role] = &[Role::Operator, Role::Auditor];

async fn my_inventory(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<Json<Inventory>, FulfillmentError> {
    Ok(Json(state.ledger.inventory(&identity.sub).await?))
}

async fn user_inventory(
    State(state): State<AppState>,
    identity: Identity,
    Path(user_id): Path<String>,
) -> Result<Json<Inventory>, FulfillmentError> {
    identity.require(INVENTORY_READERS)?;
    Ok(Json(state.ledger.inventory(&user_id).await?))
}
