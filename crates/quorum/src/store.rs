//! The metadata log and the image it builds, kept in step.

use std::path::Path;

use crate::image::{MetadataDelta, MetadataImage};
use crate::log::{LocalMetadataLog, MetadataLog, MetadataLogError};
use crate::record::MetadataRecord;

pub struct MetadataStore {
    image: MetadataImage,
    log: Box<dyn MetadataLog>,
}

impl MetadataStore {
    /// Opens the local metadata log in `dir` and replays it into a fresh image.
    pub fn open_local(dir: &Path) -> Result<Self, MetadataLogError> {
        let (log, records) = LocalMetadataLog::open(dir)?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.apply(record);
        }
        Ok(Self {
            image,
            log: Box::new(log),
        })
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Makes `records` durable, then applies them in order, and returns what they touched.
    /// Either all are applied or none.
    pub fn commit(
        &mut self,
        records: Vec<MetadataRecord>,
    ) -> Result<MetadataDelta, MetadataLogError> {
        let mut delta = MetadataDelta::default();
        if records.is_empty() {
            return Ok(delta);
        }
        self.log.append(&records)?;
        for record in &records {
            self.image.apply_into(record, &mut delta);
        }
        Ok(delta)
    }
}
