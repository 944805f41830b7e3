//! The operator console in a real browser: Debian's headless Chromium driven through
//! WebDriver (chromedriver) against the test instance's gateway. Each page visited is saved
//! as a screenshot under the run's logs (`console/<page>.png`).
//!
//! The test installs nothing: without `chromium` and `chromedriver` on PATH it says on stderr
//! that it skipped, and passes (CI installs both first).

use e2e_tests::saga::{claim_once, level_event, play_to_level, settled};
use e2e_tests::{Api, User};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::poll_until;

/// A chromedriver of the test's own, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = e2e_tests::closed_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        poll_until(
            Duration::from_secs(20),
            "chromedriver to listen",
            || async {
                let ready = reqwest::get(&status)
                    .await
                    .ok()?
                    .json::<serde_json::Value>()
                    .await
                    .ok()?;
                (ready["value"]["ready"] == true).then_some(())
            },
        )
        .await;
        Self { child, url }
    }

    /// A headless browser window 1280 pixels wide, with a profile of its own.
    async fn browser(&self, profile: &std::path::Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({ "goog:chromeOptions": { "args": args } });
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn screenshots() -> PathBuf {
    let dir =
        PathBuf::from(test_support::required(test_support::CONFIG_DIR)).join("../logs/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits for the element `css` to show `text` (polling: pages draw after their API calls).
async fn shows(browser: &Client, css: &str, text: &str) {
    poll_until(
        Duration::from_secs(15),
        &format!("{css} to show {text:?}"),
        || async {
            let element = browser.find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()?.contains(text).then_some(())
        },
    )
    .await;
}

/// Types `text` into the input `id`, once the page has drawn it.
async fn type_into(browser: &Client, id: &str, text: &str) {
    let input = browser.wait().for_element(Locator::Id(id)).await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn sign_in(browser: &Client, console: &str, user: &User) {
    browser.goto(console).await.unwrap();
    type_into(browser, "email", &user.email).await;
    type_into(browser, "password", &user.password).await;
    browser
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn click(browser: &Client, css: &str) {
    let element = browser.wait().for_element(Locator::Css(css)).await.unwrap();
    element.click().await.unwrap();
}

/// A record on `game.user-activity` no consumer can decode, under key `key`; the id of the
/// event service's dead letter for it.
async fn poison(api: &Api, admin: &User, key: &str) -> String {
    use rdkafka::producer::FutureRecord;
    messaging::kafka::producer(&test_support::kafka())
        .unwrap()
        .send(
            FutureRecord::to(contracts::topics::USER_ACTIVITY)
                .key(key)
                .payload(b"not avro"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    poll_until(Duration::from_secs(30), "the dead letter", || async {
        let page = api
            .get(
                "/dead-letters/event?status=NEW&size=100",
                Some(&admin.access),
            )
            .await;
        let letter = page.body["items"]
            .as_array()?
            .iter()
            .find(|l| l["key"] == key)?
            .clone();
        Some(letter["id"].as_str()?.to_owned())
    })
    .await
}

async fn menu(browser: &Client) -> Vec<String> {
    let mut titles = Vec::new();
    for link in browser.find_all(Locator::Css("#nav a")).await.unwrap() {
        titles.push(link.text().await.unwrap());
    }
    titles
}

#[tokio::test]
async fn staff_sign_in_and_see_the_pages_their_roles_allow_and_players_are_refused() {
    if !on_path("chromium") || !on_path("chromedriver") {
        writeln!(
            std::io::stderr(),
            "skipped: chromium and chromedriver are not on PATH \
             (apt-get install -y chromium chromium-driver), so the console was not tried"
        )
        .unwrap();
        return;
    }
    let api = Api::gateway();
    let console = test_support::service_url("gateway") + "/console";
    let served = reqwest::get(&console).await.unwrap();
    let policy = served.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );

    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let auditor = api.user_with_roles(&["AUDITOR"]).await;
    let admin = api.admin().await;
    let player = api.new_user().await;
    let (event, reward) = level_event(
        &api,
        &operator,
        json!({ "type": "POINT", "amount": 5, "totalStock": 5 }),
    )
    .await;
    let name = api
        .get(&format!("/events/{event}"), Some(&operator.access))
        .await
        .body["name"]
        .as_str()
        .unwrap()
        .to_owned();
    play_to_level(&api, &player, &event, 1).await;
    let claimed = claim_once(&api, &player.access, &event, &reward).await;
    assert_eq!(claimed.status, 202, "{claimed:?}");
    let claim = claimed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        settled(&api, &player.access, &claim).await["status"],
        "SUCCEEDED"
    );

    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(test_support::unique("console-profile"));

    // An auditor reads events, their stock, claims with their saga, and the audit trail,
    // with nothing to press on the pages of one event or claim.
    let browser = driver.browser(&profile.join("auditor")).await;
    sign_in(&browser, &console, &auditor).await;
    shows(&browser, "#page", &name).await;
    let form = browser.find(Locator::Id("sign-in")).await.unwrap();
    assert!(
        !form.is_displayed().await.unwrap(),
        "the sign-in form goes away"
    );
    assert_eq!(menu(&browser).await, ["Events", "Claims", "Audit trail"]);
    screenshot(&browser, "events").await;
    click(&browser, &format!("a[href='#/events/{event}']")).await;
    shows(&browser, "#page table", "1 reserved, 4 left of 5").await;
    assert!(
        browser
            .find_all(Locator::Css("#page button"))
            .await
            .unwrap()
            .is_empty()
    );
    screenshot(&browser, "event").await;
    browser.goto(&format!("{console}#/claims")).await.unwrap();
    type_into(&browser, "claims-user", &player.id).await;
    click(&browser, "#page form button").await;
    shows(&browser, "#page table", "SUCCEEDED").await;
    click(&browser, &format!("a[href='#/claims/{claim}']")).await;
    shows(&browser, "#page .timeline", "COMPLETED").await;
    shows(&browser, "#page .timeline", "RESULT_RECEIVED").await;
    assert!(
        browser
            .find_all(Locator::Css("#page button"))
            .await
            .unwrap()
            .is_empty()
    );
    screenshot(&browser, "claim").await;
    browser.goto(&format!("{console}#/audit")).await.unwrap();
    shows(&browser, "#page-title", "Audit trail").await;
    type_into(&browser, "audit-target", &event).await;
    click(&browser, "#page form button").await;
    shows(&browser, "#page table", "event.set_status").await;
    shows(&browser, "#page table", "event.create").await;
    screenshot(&browser, "audit").await;
    browser.close().await.unwrap();

    // An administrator replays a dead letter, and the trail says who did.
    let key = test_support::unique("console-poison");
    let letter = poison(&api, &admin, &key).await;
    let browser = driver.browser(&profile.join("admin")).await;
    sign_in(&browser, &console, &admin).await;
    shows(&browser, "#nav", "Dead letters").await;
    assert_eq!(
        menu(&browser).await,
        ["Events", "Claims", "Dead letters", "Audit trail"]
    );
    browser
        .goto(&format!("{console}#/dead-letters"))
        .await
        .unwrap();
    shows(&browser, "#page table", &key).await;
    click(&browser, &format!("button[data-replay='{letter}']")).await;
    let status = browser.find(Locator::Id("letters-status")).await.unwrap();
    status.select_by_value("REPLAYED").await.unwrap();
    shows(&browser, "#page table", &key).await;
    screenshot(&browser, "dead-letters").await;
    browser.close().await.unwrap();
    let trail = api
        .get(&format!("/audit?target={letter}"), Some(&admin.access))
        .await;
    assert_eq!(
        trail.body["items"][0]["action"], "dead_letter.replay",
        "{trail:?}"
    );
    assert_eq!(trail.body["items"][0]["actor"], admin.id.as_str());

    // An operator has neither dead letters nor the audit trail in the menu.
    let browser = driver.browser(&profile.join("operator")).await;
    sign_in(&browser, &console, &operator).await;
    shows(&browser, "#page", &name).await;
    assert_eq!(menu(&browser).await, ["Events", "Claims"]);
    browser.close().await.unwrap();

    // A player is told the console is not for them.
    let browser = driver.browser(&profile.join("player")).await;
    sign_in(&browser, &console, &player).await;
    shows(&browser, "#refused", "for staff").await;
    assert!(menu(&browser).await.is_empty());
    screenshot(&browser, "refused").await;
    browser.close().await.unwrap();
    let _ = std::fs::remove_dir_all(profile);
}
