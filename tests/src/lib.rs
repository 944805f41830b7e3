//! End-to-end tests of the platform as the dev tool starts it: every process a real binary on
//! loopback, with real MongoDB, Kafka and schema registry. The tests live in `tests/tests/`;
//! this library holds what several of them share, and `src/bin/` holds harness processes
//! that tests kill on purpose. `bench` is the performance harness (`./dev bench`), `chaos`
//! the fault-injection harness (`./dev chaos`).

pub mod bench;
pub mod chaos;
pub mod effects;
pub mod saga;

use std::io::{BufRead, BufReader, Lines};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A service binary started by a test (rather than by the dev tool) with the test instance's
/// configuration for that service, on a free port, with `overrides` on top.
pub struct ServiceProcess {
    pub name: &'static str,
    child: Child,
    /// Reads the log after "listening", so a chatty process never blocks on a full pipe.
    drain: Option<std::thread::JoinHandle<Vec<String>>>,
    /// `host:port` it listens on, from its "listening" log line.
    pub addr: String,
}

impl ServiceProcess {
    pub fn start(name: &'static str, overrides: &[(&str, String)]) -> Self {
        let config_dir = test_support::required(test_support::CONFIG_DIR);
        let mut command = Command::new(binary(name));
        command
            .env("REWARDS_CONFIG_FILE", format!("{config_dir}/{name}.toml"))
            .env("REWARDS_HTTP__PORT", "0")
            .env("REWARDS_LOG__FORMAT", "json")
            .env_remove("RUST_LOG");
        for (key, value) in overrides {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
        // The "listening" line comes once the port is bound and signals are handled.
        let addr = logs
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(&line).ok()?;
                (entry["message"] == "listening")
                    .then(|| entry["addr"].as_str().unwrap().to_owned())
            })
            .unwrap_or_else(|| panic!("{name} exited before listening"));
        let drain = std::thread::spawn(move || drain(logs));
        Self {
            name,
            child,
            drain: Some(drain),
            addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `/readyz` says 200: listening comes before start-up work is done.
    pub async fn ready(self) -> Self {
        let api = Api::new(self.url(""));
        test_support::poll_until(
            Duration::from_secs(60),
            "the service to be ready",
            || async { (api.get("/readyz", None).await.status == 200).then_some(()) },
        )
        .await;
        self
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its status and the rest of its log.
    pub fn wait_for_exit(mut self, deadline: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let give_up = Instant::now() + deadline;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < give_up,
                "{} did not exit within {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self
            .drain
            .take()
            .map(|d| d.join().unwrap_or_default())
            .unwrap_or_default();
        (status, rest)
    }
}

fn drain(logs: Lines<BufReader<ChildStdout>>) -> Vec<String> {
    logs.map_while(Result::ok).collect()
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Service binaries (and game-sim's tools) sit next to the `deps/` folder test binaries are
/// built into.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    dir.join(name)
}

/// Runs game-sim with the test instance's Kafka and registry, bounded in time.
pub async fn game_sim(args: &[&str]) -> std::process::Output {
    let brokers = test_support::required(test_support::KAFKA_BROKERS);
    let registry = test_support::required(test_support::REGISTRY_URL);
    let mut command = tokio::process::Command::new(binary("game-sim"));
    command
        .args(args)
        .args(["--brokers", &brokers, "--registry", &registry])
        .env_remove("REWARDS_CONFIG_FILE")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("game-sim finishes within 60 s")
        .expect("game-sim starts")
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An HTTP reply, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    /// The problem `code` of an error reply.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A JSON client of one base URL: the gateway, or a service called directly.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

/// A signed-in test user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// The test instance's gateway.
    pub fn gateway() -> Self {
        Self::new(test_support::service_url("gateway"))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into())
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `method path` with an optional JSON body and bearer token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = self.request(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Reply {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/auth/register",
            None,
            serde_json::json!({ "email": email, "password": password, "nickname": "player" }),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/auth/login",
            None,
            serde_json::json!({ "email": email, "password": password }),
        )
        .await
    }

    /// A new account with role USER, signed in.
    pub async fn new_user(&self) -> User {
        let email = format!("{}@example.com", test_support::unique("user"));
        let password = "correct horse battery".to_owned();
        let registered = self.register(&email, &password).await;
        assert_eq!(registered.status, 201, "{registered:?}");
        let tokens = self.login(&email, &password).await;
        assert_eq!(tokens.status, 200, "{tokens:?}");
        User {
            id: registered.body["id"].as_str().unwrap().to_owned(),
            email,
            password,
            access: tokens.body["accessToken"].as_str().unwrap().to_owned(),
            refresh: tokens.body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// The instance's bootstrap administrator, signed in.
    pub async fn admin(&self) -> User {
        let email = test_support::required(test_support::ADMIN_EMAIL);
        let password = test_support::required(test_support::ADMIN_PASSWORD);
        let tokens = self.login(&email, &password).await;
        assert_eq!(tokens.status, 200, "{tokens:?}");
        let access = tokens.body["accessToken"].as_str().unwrap().to_owned();
        let me = self.get("/users/me", Some(&access)).await;
        assert_eq!(me.status, 200, "{me:?}");
        User {
            id: me.body["id"].as_str().unwrap().to_owned(),
            email,
            password,
            access,
            refresh: tokens.body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// A new account given `roles` by the administrator, signed in afresh.
    pub async fn user_with_roles(&self, roles: &[&str]) -> User {
        let user = self.new_user().await;
        let admin = self.admin().await;
        let set = self
            .call(
                reqwest::Method::PUT,
                &format!("/users/{}/roles", user.id),
                Some(&admin.access),
                Some(serde_json::json!({ "roles": roles })),
            )
            .await;
        assert_eq!(set.status, 200, "{set:?}");
        let tokens = self.login(&user.email, &user.password).await;
        User {
            access: tokens.body["accessToken"].as_str().unwrap().to_owned(),
            refresh: tokens.body["refreshToken"].as_str().unwrap().to_owned(),
            ..user
        }
    }
}

/// Reads `topic` from the beginning with a group of its own until `enough` says so.
pub async fn read_topic(
    topic: &str,
    deadline: Duration,
    enough: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::Consumer;
    let consumer =
        messaging::kafka::consumer(&test_support::kafka(), &test_support::unique("reader"))
            .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    let give_up = tokio::time::Instant::now() + deadline;
    while !enough(&seen) {
        let remaining = give_up.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !remaining.is_zero(),
            "{topic}: only {} messages after {deadline:?}",
            seen.len()
        );
        if let Ok(Ok(message)) = tokio::time::timeout(remaining, consumer.recv()).await {
            seen.push(message.detach());
        }
    }
    seen
}

/// The value of the message's header `name`, if it has one.
pub fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Produces raw bytes to `topic` under `key`, with the message-id header when given.
pub async fn produce_raw(topic: &str, key: &str, payload: &[u8], message_id: Option<&str>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    let producer = messaging::kafka::producer(&test_support::kafka()).unwrap();
    let mut headers = OwnedHeaders::new();
    if let Some(id) = message_id {
        headers = headers.insert(Header {
            key: messaging::outbox::MESSAGE_ID_HEADER,
            value: Some(id.as_bytes()),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A record on `game.user-activity` no consumer can decode, under key `key`; the id of the
/// event service's dead letter for it, once there is one.
pub async fn dead_lettered(api: &Api, admin: &User, key: &str) -> String {
    produce_raw(contracts::topics::USER_ACTIVITY, key, b"not avro", None).await;
    test_support::poll_until(Duration::from_secs(30), "the dead letter", || async {
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
