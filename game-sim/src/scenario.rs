//! The demo driver: makes one real user meet one event's condition. It signs in through the
//! gateway, reads the event, plans the activity ([`crate::plan`]), produces it, and
//! optionally waits until the event service reports the condition met.

use crate::now_ms;
use crate::plan::{Window, parse_rfc3339, plan, rfc3339};
use anyhow::{Context, anyhow, bail};
use contracts::UserActivityEvent;
use contracts::topics::USER_ACTIVITY;
use http_api::events::{Event, Progress};
use messaging::{SchemaRegistry, kafka};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use reqwest::Method;
use serde::de::DeserializeOwned;
use service_config::{KafkaConfig, RegistryConfig};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    pub event_id: String,
    pub email: String,
    pub password: String,
    pub gateway: String,
    /// Wait this long for the progress to read `met`; `None` does not wait.
    pub wait: Option<Duration>,
}

struct Gateway {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Gateway {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Result<T, (u16, String)>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Ok(Err((status.as_u16(), text)));
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: unexpected body {text}"))?;
        Ok(Ok(value))
    }

    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        self.call(method.clone(), path, body)
            .await?
            .map_err(|(status, text)| anyhow!("{method} {path} answered {status}: {text}"))
    }
}

pub async fn run(
    kafka_config: &KafkaConfig,
    registry_config: &RegistryConfig,
    options: ScenarioOptions,
) -> anyhow::Result<()> {
    let mut gateway = Gateway {
        base: options.gateway.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?,
        token: None,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Tokens {
        access_token: String,
    }
    #[derive(serde::Deserialize)]
    struct Me {
        id: String,
    }
    let tokens: Tokens = gateway
        .expect(
            Method::POST,
            "/auth/login",
            Some(serde_json::json!({ "email": options.email, "password": options.password })),
        )
        .await
        .context("signing in")?;
    gateway.token = Some(tokens.access_token);
    let me: Me = gateway.expect(Method::GET, "/users/me", None).await?;
    let event_path = format!("/events/{}", options.event_id);
    let event: Event = gateway.expect(Method::GET, &event_path, None).await?;
    let window = Window {
        starts_at: parse_rfc3339(&event.starts_at)
            .with_context(|| format!("the event's startsAt {:?}", event.starts_at))?,
        ends_at: parse_rfc3339(&event.ends_at)
            .with_context(|| format!("the event's endsAt {:?}", event.ends_at))?,
    };
    println!(
        "user {} ({}), event {} {:?} [{} .. {}), status {:?}",
        me.id, options.email, event.id, event.name, event.starts_at, event.ends_at, event.status
    );
    println!(
        "condition: {}",
        serde_json::to_string(&event.condition).unwrap_or_default()
    );

    let planned = plan(&event.condition, window, now_ms(), &me.id)
        .map_err(|e| anyhow!("cannot meet event {}: {e}", event.id))?;
    println!("producing {} record(s) to {USER_ACTIVITY}:", planned.len());
    for record in &planned {
        println!("  {}", describe(record));
    }
    produce(kafka_config, registry_config, &planned).await?;
    println!("all acknowledged");

    let Some(wait) = options.wait else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + wait;
    let progress_path = format!("{event_path}/progress/me");
    let mut last_shown = String::new();
    loop {
        match gateway
            .call::<Progress>(Method::GET, &progress_path, None)
            .await?
        {
            Ok(progress) => {
                let shown = show_progress(&progress);
                if shown != last_shown {
                    print!("{shown}");
                    last_shown = shown;
                }
                if progress.met {
                    println!("condition met");
                    return Ok(());
                }
            }
            // Not there yet (no activity folded in so far) or a passing failure: ask again.
            Err((status, text)) if status == 404 || status >= 500 => {
                let shown = format!("progress: {status} {text}\n");
                if shown != last_shown {
                    print!("{shown}");
                    last_shown = shown;
                }
            }
            Err((status, text)) => bail!("GET {progress_path} answered {status}: {text}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the condition was not met within {wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Produces `records` in order, each keyed by its user and acknowledged before the next.
async fn produce(
    kafka_config: &KafkaConfig,
    registry_config: &RegistryConfig,
    records: &[UserActivityEvent],
) -> anyhow::Result<()> {
    let registry = SchemaRegistry::new(registry_config)?;
    let producer = kafka::producer(kafka_config)?;
    for record in records {
        let payload = registry.encode(USER_ACTIVITY, record).await?;
        let id = record.envelope.message_id.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "message-id",
            value: Some(id.as_str()),
        });
        producer
            .send(
                FutureRecord::to(USER_ACTIVITY)
                    .key(record.user_id.as_str())
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow!("producing to {USER_ACTIVITY}: {e}"))?;
    }
    Ok(())
}

fn describe(record: &UserActivityEvent) -> String {
    let mut text = format!(
        "{} {:?}",
        rfc3339(record.envelope.occurred_at),
        record.activity_type
    );
    if let Some(quest) = &record.quest_id {
        text += &format!(" quest={quest}");
    }
    if let (Some(item), Some(count)) = (&record.item_code, record.item_count) {
        text += &format!(" item={item} x{count}");
    }
    if let Some(level) = record.new_level {
        text += &format!(" level={level}");
    }
    text
}

fn show_progress(progress: &Progress) -> String {
    let mut text = format!("progress: met={}\n", progress.met);
    for leaf in &progress.leaves {
        let filter = leaf
            .filter
            .as_ref()
            .and_then(|f| f.quest_id.as_ref().or(f.item_code.as_ref()))
            .map(|f| format!(" [{f}]"))
            .unwrap_or_default();
        text += &format!(
            "  {:?}{filter}: {}/{}{}\n",
            leaf.metric,
            leaf.current,
            leaf.target,
            if leaf.met { " met" } else { "" }
        );
    }
    text
}
