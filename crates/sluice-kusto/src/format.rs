//! Record serialization for the Kusto sink (in progress: the API is final,
//! the encoding is being completed).

use sluice_core::converter::Converter;
use sluice_core::record::Record;

/// A record that could not be written in the batch's format.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct FormatError {
    /// Topic of the record, when the error is about one.
    pub topic: Option<String>,
    /// Partition of the record.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// What was wrong.
    pub message: String,
}

impl FormatError {
    fn describe(&self) -> String {
        match &self.topic {
            Some(t) => format!(
                "record {t}/{}@{}: {}",
                self.partition, self.offset, self.message
            ),
            None => self.message.clone(),
        }
    }
}

/// Accumulates one batch of records in a Kusto ingestion format.
pub struct BatchEncoder {
    format: String,
    buf: Vec<u8>,
    records: usize,
}

impl BatchEncoder {
    /// `format`: the mapping's format as written in
    /// `kusto.tables.topics.mapping`.
    pub fn new(format: &str) -> Result<BatchEncoder, FormatError> {
        Ok(BatchEncoder {
            format: format.to_ascii_lowercase(),
            buf: Vec::new(),
            records: 0,
        })
    }

    /// The Kusto ingestion format name to announce.
    pub fn kusto_format(&self) -> &'static str {
        match self.format.as_str() {
            "csv" => "csv",
            "avro" => "avro",
            "apacheavro" => "apacheavro",
            _ => "multijson",
        }
    }

    /// Appends one record; on error nothing is appended.
    pub fn push(
        &mut self,
        record: &Record,
        _key_converter: &dyn Converter,
        _value_converter: &dyn Converter,
    ) -> Result<(), FormatError> {
        if let Some(v) = &record.value {
            self.buf.extend_from_slice(v);
            self.buf.push(b'\n');
            self.records += 1;
        }
        Ok(())
    }

    /// Records in the batch.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Uncompressed bytes so far.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The batch's bytes; leaves the encoder empty for the next batch.
    pub fn finish(&mut self) -> Result<Vec<u8>, FormatError> {
        self.records = 0;
        Ok(std::mem::take(&mut self.buf))
    }
}
