//! Where things live on disk.
//!
//! Everything the tool downloads, builds or runs lives under one cache directory outside the
//! repository (`$REWARDS_HOME`, default `~/.cache/reward-platform`), so a clean clone stays
//! clean and CI can cache one folder:
//!
//! ```text
//! downloads/          wheels and archives, verified against pinned hashes
//! m2/                 Maven's local repository (Kafka and registry jars)
//! tools/              installed mongod, Java runtime, Kafka, Apicurio Registry
//! target/             the shared Cargo target directory (set by ./dev)
//! run/dev/            the instance `./dev up` runs: data/, logs/, pids/, config/
//! ```
//!
//! Test runs get their own instance in /dev/shm (tmpfs: MongoDB commits ~3x faster there)
//! with fresh data, removed when the run ends.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn from_env() -> anyhow::Result<Self> {
        let root = match std::env::var_os("REWARDS_HOME") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME")
                    .ok_or_else(|| anyhow::anyhow!("neither REWARDS_HOME nor HOME is set"))?;
                PathBuf::from(home).join(".cache/reward-platform")
            }
        };
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    pub fn maven_repo(&self) -> PathBuf {
        self.root.join("m2")
    }

    pub fn tools(&self) -> PathBuf {
        self.root.join("tools")
    }

    pub fn dev_instance(&self) -> PathBuf {
        self.root.join("run/dev")
    }

    /// Where the logs of the last test run are kept after its instance is removed.
    pub fn last_test_logs(&self) -> PathBuf {
        self.root.join("run/last-test-logs")
    }

    /// The Cargo target directory: `CARGO_TARGET_DIR` (which ./dev sets) or the cache's.
    pub fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("target"))
    }
}

/// The repository root (the workspace this tool belongs to).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// One running copy of the platform: its ports and its directories.
#[derive(Debug, Clone)]
pub struct InstanceDirs {
    pub root: PathBuf,
}

impl InstanceDirs {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn data(&self, component: &str) -> PathBuf {
        self.root.join("data").join(component)
    }

    pub fn log(&self, component: &str) -> PathBuf {
        self.root.join("logs").join(format!("{component}.log"))
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.root.join("pids").join(format!("{component}.pid"))
    }

    pub fn config(&self, file: &str) -> PathBuf {
        self.root.join("config").join(file)
    }

    pub fn ports_file(&self) -> PathBuf {
        self.root.join("ports.json")
    }

    /// Creates the directories, the root readable by its owner only (secrets live there).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        for sub in ["data", "logs", "pids", "config"] {
            std::fs::create_dir_all(self.root.join(sub))?;
        }
        Ok(())
    }
}
