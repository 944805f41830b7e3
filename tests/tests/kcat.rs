//! The README's kcat lines, run as written against the test instance's broker: every line a
//! kcat without Avro support can run (Debian's build has none; the Avro line needs a kcat
//! built with libserdes). The test installs nothing: without `kcat` on PATH it says on
//! stderr that it skipped the lines, and passes.

use contracts::ActivityType;
use e2e_tests::saga::Game;
use mongo_kit::mongodb::bson::DateTime;
use std::io::Write;
use std::process::Command;
use std::time::Duration;
use test_support::{poll_until, unique};

const README: &str = include_str!("../../README.md");
const README_BROKER: &str = "127.0.0.1:9092";

/// The commands of the README's kcat block: comments dropped, continued lines joined.
fn readme_kcat_commands() -> Vec<String> {
    let section = README
        .split_once("**Looking at topics with kcat.**")
        .expect("the README's kcat section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the kcat section's sh block")
        .0;
    block
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ")
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

fn kcat_on_path() -> bool {
    Command::new("kcat").arg("-V").output().is_ok()
}

/// Runs a README line through the shell with the test instance's brokers; its stdout.
fn run(line: &str) -> String {
    let brokers = test_support::required(test_support::KAFKA_BROKERS);
    let output = Command::new("sh")
        .args(["-c", &line.replace(README_BROKER, &brokers)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn run_until(line: &str, what: &str, found: impl Fn(&str) -> bool) -> String {
    poll_until(Duration::from_secs(30), what, || async {
        let out = run(line);
        found(&out).then_some(out)
    })
    .await
}

/// The one line of `out` that holds `needle`.
fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines().find(|l| l.contains(needle)).unwrap()
}

#[tokio::test]
async fn the_readme_kcat_lines_run_against_the_broker() {
    let commands = readme_kcat_commands();
    let (avro, plain): (Vec<_>, Vec<_>) = commands.iter().partition(|c| c.contains("=avro"));
    assert_eq!((avro.len(), plain.len()), (1, 4), "{commands:#?}");
    if !kcat_on_path() {
        writeln!(
            std::io::stderr(),
            "skipped: kcat is not on PATH (apt-get install -y kcat), so the README's {} kcat \
             lines did not run",
            plain.len()
        )
        .unwrap();
        return;
    }
    let [activity, user_events, metadata, dead_letters] = plain[..] else {
        unreachable!()
    };

    // Something to find: one player's activity, and a record no consumer can decode.
    let player = unique("kcat-player");
    Game::connect()
        .send(
            &player,
            ActivityType::Login,
            DateTime::now().timestamp_millis(),
            |_| {},
        )
        .await;
    let poison = unique("kcat-poison");
    e2e_tests::produce_raw(contracts::topics::USER_ACTIVITY, &poison, b"not avro", None).await;

    let out = run_until(activity, "the player's activity", |out| {
        out.contains(&format!("key={player} "))
    })
    .await;
    let line = line_with(&out, &player);
    assert!(
        line.starts_with('p') && line.contains(" @") && line.contains(" ts="),
        "{line}"
    );
    assert!(line.contains(" bytes="), "{line}");

    let out = run(user_events);
    assert!(
        out.lines().count() <= 5,
        "at most the last 5 messages: {out}"
    );

    let out = run(metadata);
    assert!(
        out.contains(r#"topic "game.user-activity" with 6 partitions"#),
        "{out}"
    );

    let out = run_until(dead_letters, "the poison record's dead letter", |out| {
        out.contains(&poison)
    })
    .await;
    let line = line_with(&out, &poison);
    assert!(
        line.contains("dlq.original.topic=game.user-activity"),
        "{line}"
    );
    assert!(line.contains("dlq.error.class="), "{line}");
}
