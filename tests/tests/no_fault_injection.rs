//! The service binaries carry no fault injection: the tests' crash points live in the test
//! crate's harnesses, and no feature the tests enable reaches the crates the services link,
//! even in the one workspace build (`cargo build --workspace --bins --tests`) that `./dev`
//! makes and whose services `./dev up` runs.

use service_config::catalog::SERVICES;
use std::process::Command;

/// What the consumer harness's crash point is made of.
const MARKERS: [&str; 2] = ["REWARDS_FAILPOINT", "consumer-after-commit"];

#[test]
fn the_service_binaries_hold_no_crash_point() {
    for spec in SERVICES {
        let path = e2e_tests::binary(spec.name);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (built by ./dev)", path.display()));
        for marker in MARKERS {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{} contains {marker}",
                spec.name
            );
        }
    }
    // The check can see a crash point: the consumer harness has one.
    let harness = std::fs::read(e2e_tests::binary("consumer_harness")).unwrap();
    assert!(
        harness
            .windows(MARKERS[0].len())
            .any(|w| w == MARKERS[0].as_bytes())
    );
}

#[test]
fn the_workspace_build_enables_no_feature_of_the_crates_services_link() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--workspace",
            "--edges",
            "features",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p} {f}", "--offline"])
        .current_dir(workspace)
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    // `messaging v0.1.0 (<path>) <enabled features, comma-separated>`
    let packages: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("messaging v"))
        .collect();
    assert!(!packages.is_empty(), "messaging not in the tree:\n{tree}");
    for line in packages {
        let features = line
            .split_once(") ")
            .map_or("", |(_, f)| f.trim_end_matches("(*)").trim());
        assert!(
            features.is_empty(),
            "the workspace build enables features of messaging: {features}"
        );
    }
}
