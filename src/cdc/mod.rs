//! The wire contract: AWS DMS's JSON message format for Kafka targets. The processor decodes it;
//! local capture encodes it, so the processor cannot tell local capture and DMS apart.

pub mod borrowed;
pub mod coerce;
pub mod decode;
pub mod encode;
pub mod envelope;
pub mod scan;
