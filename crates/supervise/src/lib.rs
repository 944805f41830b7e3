//! The processes of a local instance of the platform, as `./dev` starts them: detached, each
//! with a log and a pid file, found again and stopped by those ([`process`]); and the
//! instance's manifest ([`manifest`]), which tells other programs (the chaos harness) what
//! runs where without knowing how `./dev` configured it.

pub mod manifest;
pub mod process;
