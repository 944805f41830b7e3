//! Encoding UserActivityEvents in the Confluent wire format without a registry round trip per
//! message: the first record goes through [`SchemaRegistry::encode`] (which registers the
//! schema or finds its id); after that the schema id and parsed schema are reused and records
//! are serialised straight into a buffer.

use apache_avro::Schema;
use apache_avro::schema::NamesRef;
use contracts::{Contract, UserActivityEvent};
use messaging::SchemaRegistry;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Registry(#[from] messaging::RegistryError),
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
    #[error("the registry's encoding is not Confluent-framed ({0} bytes)")]
    NotFramed(usize),
    #[error("local encoding differs from the registry's; the schema may have drifted")]
    Mismatch,
}

/// Encodes UserActivityEvents under one cached schema id.
pub struct ActivityEncoder {
    schema: Schema,
    header: [u8; 5],
}

impl ActivityEncoder {
    /// A local encoder for a known schema id (tests; [`Self::from_registry`] in practice).
    pub fn with_schema_id(schema_id: u32) -> Result<Self, EncodeError> {
        let schema = UserActivityEvent::SCHEMA.parse().map_err(Box::new)?;
        let mut header = [0u8; 5];
        header[1..].copy_from_slice(&schema_id.to_be_bytes());
        Ok(Self { schema, header })
    }

    /// Encodes `sample` through the registry (registering the schema if needed), takes the
    /// schema id from the result and checks that local encoding gives the same bytes.
    pub async fn from_registry(
        registry: &SchemaRegistry,
        topic: &str,
        sample: &UserActivityEvent,
    ) -> Result<Self, EncodeError> {
        let framed = registry.encode(topic, sample).await?;
        if framed.len() < 5 || framed[0] != 0 {
            return Err(EncodeError::NotFramed(framed.len()));
        }
        let id = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]);
        let encoder = Self::with_schema_id(id)?;
        let mut local = Vec::new();
        encoder.encode_into(sample, &mut local)?;
        if local != framed {
            return Err(EncodeError::Mismatch);
        }
        Ok(encoder)
    }

    pub fn schema_id(&self) -> u32 {
        u32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ])
    }

    /// Replaces `buf`'s content with the framed encoding of `event`.
    pub fn encode_into(
        &self,
        event: &UserActivityEvent,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        buf.clear();
        buf.extend_from_slice(&self.header);
        let names = NamesRef::new();
        apache_avro::write_avro_datum_ref(&self.schema, &names, event, buf).map_err(Box::new)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Mix;

    /// What the registry's encoder does: serde to an Avro value, resolved against the schema.
    fn reference_encoding(schema: &Schema, event: &UserActivityEvent) -> Vec<u8> {
        let value = apache_avro::to_value(event)
            .unwrap()
            .resolve(schema)
            .unwrap();
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[test]
    fn fast_encoding_equals_the_generic_one_and_decodes_back() {
        let encoder = ActivityEncoder::with_schema_id(0x0102_0304).unwrap();
        assert_eq!(encoder.schema_id(), 0x0102_0304);
        let mut mix = Mix::new(3, "enc-", Some(9));
        let mut buf = Vec::new();
        for i in 0..500 {
            let mut event = mix.next_event(1_700_000_000_000 + i);
            if i % 7 == 0 {
                event.envelope.correlation_id = Some("corr".into());
            }
            encoder.encode_into(&event, &mut buf).unwrap();
            assert_eq!(&buf[..5], &[0, 1, 2, 3, 4]);
            assert_eq!(&buf[5..], reference_encoding(&encoder.schema, &event));
            let value = apache_avro::reader::datum::GenericDatumReader::builder(&encoder.schema)
                .build()
                .unwrap()
                .read_value(&mut &buf[5..])
                .unwrap();
            let back: UserActivityEvent = apache_avro::from_value(&value).unwrap();
            assert_eq!(back, event);
        }
    }
}
