//! What an instance runs, written by `./dev` as `<instance>/manifest.json` each time it
//! starts the instance: every process with its kind, port, pid file and log. A program that
//! acts on the instance from outside (the chaos harness) finds its targets here.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `single` (one of each) or `cluster`.
    pub topology: String,
    /// The MongoDB replica set's name.
    pub replica_set: String,
    /// In start order.
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// Unique in the instance: `mongod`, `kafka-2`, `event-2`, ...
    pub name: String,
    pub kind: Kind,
    /// The port its clients use.
    pub port: u16,
    /// A Kafka node's `node.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i32>,
    pub pid_file: PathBuf,
    /// A string in the process's command line or environment that only this instance's
    /// copy has: a pid in the pid file counts only if its process holds it (pids are
    /// reused).
    pub marker: String,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Mongod,
    Kafka,
    Registry,
    /// An instance of the named service (a catalog name).
    Service(String),
}

impl Manifest {
    pub fn path(instance_root: &Path) -> PathBuf {
        instance_root.join(FILE)
    }

    pub fn load(instance_root: &Path) -> anyhow::Result<Self> {
        let path = Self::path(instance_root);
        let bytes =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub fn save(&self, instance_root: &Path) -> anyhow::Result<()> {
        std::fs::write(Self::path(instance_root), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn of_kind<'a>(&'a self, kind: &Kind) -> impl Iterator<Item = &'a Member> + use<'a> {
        let kind = kind.clone();
        self.members.iter().filter(move |m| m.kind == kind)
    }

    pub fn named(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

impl Member {
    /// The pid in its pid file, if that process is alive and is this member.
    pub fn pid(&self) -> Option<u32> {
        crate::process::running(&self.pid_file, &self.marker)
    }
}
