//! The route table: every public API path and method, the service that owns it, and who may
//! call it. Besides these the gateway serves only its own files (`/openapi.json`, the
//! console); `/internal/...` paths are never routed.

use auth_claims::Role;
use axum::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Auth,
    Event,
    RewardFulfillment,
    /// Every service, each answering a page of its own; the gateway merges the pages
    /// (`GET /audit`, see [`crate::gather`]).
    Every,
    /// The gateway itself, from every instance's metrics and readiness (`GET /overview`,
    /// see [`crate::overview`]).
    Overview,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user, whatever their roles.
    SignedIn,
    /// One of these roles (ADMIN may always).
    Roles(&'static [Role]),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// In axum/matchit syntax: `/users/{id}`.
    pub path: &'static str,
    pub upstream: Upstream,
    pub access: Access,
    /// Limited per client: routes that invite guessing or spam.
    pub rate_limited: bool,
    /// The service answers a repeated `Idempotency-Key` with the first request's result, so
    /// the gateway may send a keyed request to another instance after a broken exchange.
    pub keyed: bool,
}

const ADMIN: Access = Access::Roles(&[Role::Admin]);
const OPERATOR: Access = Access::Roles(&[Role::Operator]);
/// Staff who read every player's claims, grants and progress.
const STAFF_READERS: Access = Access::Roles(&[Role::Operator, Role::Auditor]);
/// Every staff member.
const STAFF: Access = Access::Roles(&[Role::Operator, Role::Auditor]);
/// Staff who read the audit trail and accounts.
const AUDITORS: Access = Access::Roles(&[Role::Auditor]);

const fn route(method: Method, path: &'static str, upstream: Upstream, access: Access) -> Route {
    Route {
        method,
        path,
        upstream,
        access,
        rate_limited: false,
        keyed: false,
    }
}

/// A route whose service makes a repeat of a request with the same `Idempotency-Key` a
/// no-op that answers the first result.
const fn keyed(mut route: Route) -> Route {
    route.keyed = true;
    route
}

/// A public route limited per client.
const fn limited(method: Method, path: &'static str, upstream: Upstream) -> Route {
    Route {
        method,
        path,
        upstream,
        access: Access::Public,
        rate_limited: true,
        keyed: false,
    }
}

use Access::*;
use Upstream::*;

pub const ROUTES: &[Route] = &[
    limited(Method::POST, "/auth/register", Auth),
    limited(Method::POST, "/auth/login", Auth),
    route(Method::POST, "/auth/refresh", Auth, Public),
    route(Method::POST, "/auth/logout", Auth, Public),
    route(Method::GET, "/.well-known/jwks.json", Auth, Public),
    route(Method::GET, "/users/me", Auth, SignedIn),
    route(Method::PATCH, "/users/me", Auth, SignedIn),
    route(Method::DELETE, "/users/me", Auth, SignedIn),
    route(Method::GET, "/users", Auth, AUDITORS),
    route(Method::GET, "/users/{id}", Auth, AUDITORS),
    route(Method::PUT, "/users/{id}/roles", Auth, ADMIN),
    route(Method::POST, "/users/{id}/ban", Auth, ADMIN),
    route(Method::POST, "/users/{id}/unban", Auth, ADMIN),
    route(Method::DELETE, "/users/{id}", Auth, ADMIN),
    route(Method::POST, "/events", Event, OPERATOR),
    route(Method::GET, "/events", Event, SignedIn),
    route(Method::GET, "/events/{id}", Event, SignedIn),
    route(Method::PATCH, "/events/{id}", Event, OPERATOR),
    route(Method::POST, "/events/{id}/status", Event, OPERATOR),
    route(Method::POST, "/events/{id}/rewards", Event, OPERATOR),
    route(Method::GET, "/events/{id}/rewards", Event, SignedIn),
    route(Method::PATCH, "/rewards/{id}", Event, OPERATOR),
    route(Method::GET, "/events/{id}/progress/me", Event, SignedIn),
    route(Method::GET, "/progress/{userId}", Event, STAFF_READERS),
    keyed(route(
        Method::POST,
        "/events/{id}/rewards/{rewardId}/claims",
        Event,
        Roles(&[Role::User]),
    )),
    route(Method::GET, "/claims", Event, STAFF_READERS),
    route(Method::GET, "/claims/me", Event, SignedIn),
    // Owner or staff; the event service checks which.
    route(Method::GET, "/claims/{id}", Event, SignedIn),
    route(Method::GET, "/inventory/me", RewardFulfillment, SignedIn),
    route(
        Method::GET,
        "/inventory/{userId}",
        RewardFulfillment,
        STAFF_READERS,
    ),
    route(Method::GET, "/dead-letters/event", Event, ADMIN),
    route(Method::GET, "/dead-letters/event/{id}", Event, ADMIN),
    route(
        Method::POST,
        "/dead-letters/event/{id}/replay",
        Event,
        ADMIN,
    ),
    route(Method::POST, "/dead-letters/event/replay", Event, ADMIN),
    route(
        Method::POST,
        "/dead-letters/event/{id}/discard",
        Event,
        ADMIN,
    ),
    route(
        Method::GET,
        "/dead-letters/reward-fulfillment",
        RewardFulfillment,
        ADMIN,
    ),
    route(
        Method::GET,
        "/dead-letters/reward-fulfillment/{id}",
        RewardFulfillment,
        ADMIN,
    ),
    route(
        Method::POST,
        "/dead-letters/reward-fulfillment/{id}/replay",
        RewardFulfillment,
        ADMIN,
    ),
    route(
        Method::POST,
        "/dead-letters/reward-fulfillment/replay",
        RewardFulfillment,
        ADMIN,
    ),
    route(
        Method::POST,
        "/dead-letters/reward-fulfillment/{id}/discard",
        RewardFulfillment,
        ADMIN,
    ),
    route(Method::GET, "/audit", Every, AUDITORS),
    route(Method::GET, "/overview", Overview, STAFF),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_table_and_the_openapi_document_list_the_same_operations() {
        let table: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_lowercase(), r.path.to_owned()))
            .collect();
        let doc = serde_json::to_value(http_api::openapi()).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        assert_eq!(table, documented);
    }

    #[test]
    fn every_route_that_needs_a_token_is_documented_as_secured() {
        let doc = serde_json::to_value(http_api::openapi()).unwrap();
        for route in ROUTES {
            let operation = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            let secured = operation.get("security").is_some();
            assert_eq!(
                secured,
                route.access != Access::Public,
                "{} {}",
                route.method,
                route.path
            );
        }
    }

    /// A route the gateway may send twice on a key honours the key: its operation documents
    /// the `Idempotency-Key` header, and every operation that does is marked.
    #[test]
    fn keyed_routes_are_exactly_those_documented_with_an_idempotency_key() {
        let doc = serde_json::to_value(http_api::openapi()).unwrap();
        for route in ROUTES {
            let operation = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            let documented = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            assert_eq!(route.keyed, documented, "{} {}", route.method, route.path);
        }
        assert!(ROUTES.iter().any(|r| r.keyed), "claims are keyed");
    }

    #[test]
    fn no_internal_path_is_routed() {
        assert!(ROUTES.iter().all(|r| !r.path.starts_with("/internal")));
    }
}
