//! Topic names: a public contract (game servers outside the project produce to
//! [`USER_ACTIVITY`]).

pub const USER_ACTIVITY: &str = "game.user-activity";
pub const USER_EVENTS: &str = "auth.user-events";
pub const GRANT_COMMANDS: &str = "event.grant-commands";
pub const GRANT_RESULTS: &str = "reward.grant-results";
