//! Export: one state of an image (live or a snapshot) as a compact new image.

use alloc::vec::Vec;

use super::Image;
use crate::PAGE_SIZE;
use crate::blob::read_checked;
use crate::device::BlockDevice;
use crate::error::{Error, Structure};
use crate::layout::{CHAIN_PAYLOAD_LEN, Pointer};
use crate::metadata::Metadata;
use crate::superblock::MIN_IMAGE_BLOCKS;

/// Room an exported image keeps beyond its state, in blocks: for the free
/// space, the metadata growing and the first commits of the domain it boots.
const EXPORT_SLACK_BLOCKS: u64 = 64;

impl<D: BlockDevice> Image<D> {
    /// The metadata and stored pages of the live state as staged (`None`)
    /// or of the snapshot tagged `tag`.
    fn state_of(&mut self, tag: Option<&str>) -> Result<(Metadata, Vec<(u64, Pointer)>), Error> {
        match tag {
            Some(tag) => self.snapshot_state(tag),
            None => {
                let pages = self
                    .page_locations()?
                    .into_iter()
                    .map(|(page_index, location)| {
                        (page_index, Pointer::new(location.block, location.crc))
                    })
                    .collect();
                Ok((self.metadata.clone(), pages))
            }
        }
    }

    /// The size, in blocks, of the image [`Image::export_to`] writes for
    /// the same state: the pages, a page map as large as they can need,
    /// the metadata and module, twice over for the state and one commit
    /// rewriting it, plus some slack.
    pub fn export_block_count(&mut self, tag: Option<&str>) -> Result<u64, Error> {
        let (metadata, pages) = self.state_of(tag)?;
        let record_len_bytes = crate::migrate::encode_record(&crate::metadata::MetadataRecord {
            metadata,
            module: self.module,
        })?
        .len() as u64;
        let chain_blocks = |len_bytes: u64| len_bytes.div_ceil(CHAIN_PAYLOAD_LEN as u64).max(1);
        let pages = pages.len() as u64;
        // Each page may need a leaf node and a middle node of its own.
        let state_blocks = pages
            .saturating_mul(3)
            .saturating_add(1)
            .saturating_add(chain_blocks(record_len_bytes));
        Ok(state_blocks
            .saturating_add(crate::LOG_BLOCKS as u64)
            .saturating_mul(2)
            .saturating_add(chain_blocks(self.module.len_bytes))
            .saturating_add(EXPORT_SLACK_BLOCKS)
            .max(MIN_IMAGE_BLOCKS))
    }

    /// Writes the live state as staged (`tag` `None`) or the snapshot
    /// tagged `tag` as a new image on `device`: the same module, metadata
    /// and pages, and the domain's log (which no snapshot holds: it is the
    /// log as it is now), no snapshots and no history. Every page is read with its
    /// checksum checked before it is written. The new image has committed
    /// twice (its creation and its pages); the metadata's count of commits
    /// is the state's own.
    pub fn export_to<E: BlockDevice>(
        &mut self,
        tag: Option<&str>,
        device: E,
    ) -> Result<Image<E>, Error> {
        let (metadata, pages) = self.state_of(tag)?;
        let log = self.log()?;
        self.write_state_to(metadata, pages, &log, device)
    }

    /// Writes a fork of the live state (`tag` `None`, as last committed
    /// plus what is staged) or of the snapshot tagged `tag` as a new image
    /// on `device`: a new domain `name` with ID `id`, as
    /// [`Metadata::forked`] makes it, with `status` if given (a fork whose
    /// ports its parent holds starts stopped), sharing nothing with this
    /// image, not even the log: the fork's starts empty. Costs a read and a
    /// write of every page the state stores.
    pub fn fork_to<E: BlockDevice>(
        &mut self,
        tag: Option<&str>,
        device: E,
        id: crate::DomainId,
        name: &str,
        status: Option<crate::StoredStatus>,
    ) -> Result<Image<E>, Error> {
        crate::check_name(name).map_err(Error::InvalidName)?;
        let (metadata, pages) = self.state_of(tag)?;
        let mut forked = metadata.forked(id, name);
        if let Some(status) = status {
            forked.status = status;
        }
        self.write_state_to(forked, pages, &[], device)
    }

    fn write_state_to<E: BlockDevice>(
        &mut self,
        metadata: Metadata,
        pages: Vec<(u64, Pointer)>,
        log: &[u8],
        device: E,
    ) -> Result<Image<E>, Error> {
        let module = self.module()?;
        let image_blocks = self.image_blocks();
        let mut exported = Image::create_from(device, metadata, &module)?;
        for (page_index, pointer) in pages {
            let page: [u8; PAGE_SIZE] =
                read_checked(&mut self.device, &pointer, image_blocks, Structure::Page)?;
            exported.stage_page(page_index, &page)?;
        }
        exported.append_log(log);
        // Not `commit`: the state's count of commits is carried as it is.
        exported.write_commit()?;
        Ok(exported)
    }
}
