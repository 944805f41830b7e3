//! Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro binary) through a
//! Confluent-compatible schema registry, on top of `schema_registry_converter`.
//!
//! Subjects follow the TopicRecordName strategy (`<topic>-<record full name>`), so one topic
//! may carry several record types, each evolving under its own compatibility check.

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use contracts::{Contract, ContractSchema};
use futures::future::BoxFuture;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Deserialize;
use service_config::RegistryConfig;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// From the converter: registry unreachable, schema refused, bytes not decodable.
    /// `retriable` tells transient failures from permanent ones.
    #[error("schema registry: {0}")]
    Converter(#[from] SRCError),
    #[error("schema registry at {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("schema registry answered {status} to {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The subject's compatibility rule refused the schema (Confluent error code 409).
    #[error("schema refused as incompatible with subject {subject}: {message}")]
    Incompatible { subject: String, message: String },
    #[error("expected a {expected} record, got {actual}")]
    WrongRecord { expected: String, actual: String },
    #[error("record does not match {record}: {source}")]
    Shape {
        record: String,
        #[source]
        source: apache_avro::Error,
    },
}

impl RegistryError {
    /// Whether trying again later may succeed (network trouble) rather than never (bad bytes,
    /// unknown schema, incompatible schema).
    pub fn is_retriable(&self) -> bool {
        match self {
            RegistryError::Converter(e) => e.retriable,
            RegistryError::Http { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            RegistryError::Incompatible { .. }
            | RegistryError::WrongRecord { .. }
            | RegistryError::Shape { .. } => false,
        }
    }
}

impl RegistryError {
    /// Whether the registry answered that it knows no such schema: a Confluent error code of
    /// the 404xx family (40401 subject, 40402 version, 40403 schema not found), or a plain
    /// 404 as some compatible registries give.
    pub fn is_unknown_schema(&self) -> bool {
        match self {
            RegistryError::Converter(e) => {
                raw_error(e).is_some_and(|raw| matches!(raw.error_code, 404 | 40400..=40499))
            }
            RegistryError::Status { status, .. } => *status == 404,
            _ => false,
        }
    }
}

/// Compatibility levels as the Confluent API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    Backward,
    BackwardTransitive,
    Forward,
    Full,
    None,
}

impl Compatibility {
    fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::Full => "FULL",
            Compatibility::None => "NONE",
        }
    }
}

/// A client of the registry that encodes and decodes the platform's contracts. Schemas and
/// ids are cached after the first use, so steady-state encoding makes no HTTP calls.
pub struct SchemaRegistry {
    url: String,
    settings: SrSettings,
    http: reqwest::Client,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Writer schemas by id, ready to decode with. The converter's own decoder resolves the
    /// schema's names again and copies them for every message (a map and a name per record:
    /// most of a consumer's decoding time at tens of thousands of messages per second).
    readers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
}

/// A writer schema parsed and resolved once, with its record's full name.
struct WriterSchema {
    reader: GenericDatumReader<'static>,
    record: Option<String>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .finish()
    }
}

impl SchemaRegistry {
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let url = config.url.trim_end_matches('/').to_owned();
        let timeout = Duration::from_secs(5);
        let settings = SrSettings::new_builder(url.clone())
            .no_proxy()
            .set_timeout(timeout)
            .build()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|source| RegistryError::Http {
                url: url.clone(),
                source,
            })?;
        Ok(Self {
            url,
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings.clone()),
            readers: RwLock::new(HashMap::new()),
            settings,
            http,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The subject a contract is registered under on `topic`.
    pub fn subject(topic: &str, schema: &ContractSchema) -> String {
        format!("{topic}-{}", schema.full_name)
    }

    /// Registers `schema` under its subject for `topic` (a no-op returning the existing id if
    /// it is already there); refused if incompatible with the subject's latest version.
    pub async fn register(
        &self,
        topic: &str,
        schema: &ContractSchema,
    ) -> Result<u32, RegistryError> {
        self.register_schema(&Self::subject(topic, schema), schema.avsc)
            .await
    }

    /// Registers an Avro schema text under `subject`; returns its id.
    pub async fn register_schema(&self, subject: &str, avsc: &str) -> Result<u32, RegistryError> {
        let schema = SuppliedSchema::new(None, SchemaType::Avro, avsc.to_owned());
        match post_schema(&self.settings, subject.to_owned(), schema).await {
            Ok(registered) => Ok(registered.id),
            Err(e) => match raw_error(&e) {
                Some(raw) if raw.error_code == 409 => Err(RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    message: raw.message.clone(),
                }),
                _ => Err(e.into()),
            },
        }
    }

    /// Encodes `value` in the Confluent wire format for `topic`, registering its schema on
    /// first use.
    pub async fn encode<T: Contract>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, RegistryError> {
        let strategy = SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
            topic.to_owned(),
            supplied(&T::SCHEMA),
        );
        Ok(self.encoder.encode_struct(value, &strategy).await?)
    }

    /// Decodes Confluent-framed bytes into a generic Avro value and the record's full name.
    pub async fn decode_value(
        &self,
        bytes: &[u8],
    ) -> Result<(Option<String>, Value), RegistryError> {
        // Confluent framing: magic byte 0, then the schema id (big-endian).
        let (Some(&0), Some(id)) = (bytes.first(), bytes.get(1..5)) else {
            // Not framed: the converter says why, as it always did.
            let decoded = self.decoder.decode(Some(bytes)).await?;
            return Ok((decoded.name.map(|n| n.fullname(None)), decoded.value));
        };
        let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let known = self
            .readers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        let writer = match known {
            Some(writer) => writer,
            None => {
                // First sight of this id: the converter fetches the schema (its errors, such as
                // an unknown id, are the ones callers classify) and decodes this message.
                let Some(decoded) = self.decoder.decode_with_schema(Some(bytes)).await? else {
                    return Ok((None, Value::Null));
                };
                self.remember(id, &decoded.schema.parsed)?;
                return Ok((decoded.name.map(|n| n.fullname(None)), decoded.value));
            }
        };
        let value = writer
            .reader
            .read_value(&mut &bytes[5..])
            .map_err(|source| RegistryError::Shape {
                record: writer.record.clone().unwrap_or_else(|| "a value".into()),
                source,
            })?;
        Ok((writer.record.clone(), value))
    }

    /// Keeps a writer schema for decoding. It is leaked on purpose: a reader borrows its
    /// schema, the registry holds each id's schema for good, and a process meets a handful.
    fn remember(&self, id: u32, parsed: &Schema) -> Result<(), RegistryError> {
        let mut readers = self.readers.write().unwrap_or_else(|e| e.into_inner());
        if readers.contains_key(&id) {
            return Ok(());
        }
        let schema: &'static Schema = Box::leak(Box::new(parsed.clone()));
        let record = match schema {
            Schema::Record(r) => Some(r.name.fullname(None)),
            _ => None,
        };
        let reader = GenericDatumReader::builder(schema)
            .build()
            .map_err(|source| RegistryError::Shape {
                record: record.clone().unwrap_or_else(|| "a value".into()),
                source,
            })?;
        readers.insert(id, Arc::new(WriterSchema { reader, record }));
        Ok(())
    }

    /// Decodes Confluent-framed bytes into JSON (for people: dead-letter views, `./dev topic`)
    /// and the record's full name.
    pub async fn decode_json(
        &self,
        bytes: &[u8],
    ) -> Result<(Option<String>, serde_json::Value), RegistryError> {
        let (name, value) = self.decode_value(bytes).await?;
        let record = name.clone().unwrap_or_else(|| "a value".into());
        let json = serde_json::Value::try_from(value)
            .map_err(|source| RegistryError::Shape { record, source })?;
        Ok((name, json))
    }

    /// Decodes Confluent-framed bytes into `T`, refusing a record of another type.
    pub async fn decode<T: Contract>(&self, bytes: &[u8]) -> Result<T, RegistryError> {
        let (name, value) = self.decode_value(bytes).await?;
        let expected = T::SCHEMA.full_name;
        if name.as_deref() != Some(expected) {
            return Err(RegistryError::WrongRecord {
                expected: expected.to_owned(),
                actual: name.unwrap_or_else(|| "a non-record value".into()),
            });
        }
        apache_avro::from_value(&value).map_err(|source| RegistryError::Shape {
            record: expected.to_owned(),
            source,
        })
    }

    /// Sets the compatibility level of one subject, or the registry-wide default.
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        let url = match subject {
            Some(s) => format!("{}/config/{s}", self.url),
            None => format!("{}/config", self.url),
        };
        let body = serde_json::json!({ "compatibility": level.as_str() });
        self.send(self.http.put(&url).json(&body), &url).await?;
        Ok(())
    }

    /// The registry-wide default compatibility level.
    pub async fn global_compatibility(&self) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Config {
            compatibility_level: String,
        }
        let url = format!("{}/config", self.url);
        let resp = self.send(self.http.get(&url), &url).await?;
        let config: Config = resp.json().await.map_err(|source| RegistryError::Http {
            url: url.clone(),
            source,
        })?;
        Ok(config.compatibility_level)
    }

    /// A readiness check over a shared client.
    pub fn probe(
        self: &Arc<Self>,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), RegistryError>> + Send + Sync + 'static {
        let registry = Arc::clone(self);
        move || {
            let registry = Arc::clone(&registry);
            Box::pin(async move { registry.ping().await })
        }
    }

    /// One cheap request: proves the registry is up and answering.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/subjects", self.url);
        self.send(self.http.get(&url), &url).await?;
        Ok(())
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let http_err = |source| RegistryError::Http {
            url: url.to_owned(),
            source,
        };
        let resp = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(http_err)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(RegistryError::Status {
            url: url.to_owned(),
            status,
            body,
        })
    }
}

/// The registry's own error body behind a converter error, when there is one.
fn raw_error(error: &SRCError) -> Option<&RawError> {
    std::error::Error::source(error).and_then(|s| s.downcast_ref::<RawError>())
}

fn supplied(schema: &ContractSchema) -> SuppliedSchema {
    SuppliedSchema::new(
        Some(schema.full_name.to_owned()),
        SchemaType::Avro,
        schema.avsc.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(body: &str, retriable: bool) -> RegistryError {
        let raw: RawError = serde_json::from_str(body).unwrap();
        let error = if retriable {
            SRCError::retryable_with_cause(raw, "HTTP request failed")
        } else {
            SRCError::non_retryable_with_cause(raw, "HTTP request failed")
        };
        RegistryError::Converter(error)
    }

    #[test]
    fn an_unknown_schema_is_told_by_the_registry_s_error_code_not_its_text() {
        let not_found = answered(
            r#"{"error_code":40403,"message":"Schema 7 not found"}"#,
            false,
        );
        assert!(not_found.is_unknown_schema());
        assert!(!not_found.is_retriable());
        // "404" in the text of another error does not make it one.
        let refused = answered(
            r#"{"error_code":42201,"message":"id 404 is invalid"}"#,
            false,
        );
        assert!(!refused.is_unknown_schema());
        let down = answered(r#"{"error_code":50001,"message":"store 404 down"}"#, true);
        assert!(!down.is_unknown_schema());
        assert!(!RegistryError::Converter(SRCError::new("404", None, false)).is_unknown_schema());
    }
}
