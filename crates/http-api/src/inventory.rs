//! What reward-fulfillment has granted a player: bodies of its routes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A player's granted points, items and coupons, as recorded in fulfillment's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub user_id: String,
    /// Sum of every granted POINT reward.
    pub points: i64,
    /// Item codes with the quantity granted, sorted by code.
    pub items: Vec<ItemHolding>,
    /// Issued coupons, oldest first.
    pub coupons: Vec<IssuedCoupon>,
    /// Successful grants recorded for this player.
    pub grants: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemHolding {
    pub item_code: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCoupon {
    /// Unique code the player redeems.
    pub code: String,
    /// The coupon template of the reward it came from.
    pub template: String,
    pub claim_id: String,
    /// RFC 3339.
    pub issued_at: String,
}
