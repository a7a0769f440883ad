//! Listing a prefix a page at a time, with what each object's storage class says about
//! whether it can be read now.

use std::collections::VecDeque;

use anyhow::Result;

use super::{Bucket, ObjectInfo};
use crate::copy::store::ListPage;

/// Pages through a prefix in key order, holding one page at a time.
pub struct Lister<'a> {
    bucket: &'a Bucket,
    prefix: &'a str,
    page: VecDeque<ObjectInfo>,
    token: Option<String>,
    done: bool,
}

impl<'a> Lister<'a> {
    pub fn new(bucket: &'a Bucket, prefix: &'a str) -> Self {
        Lister {
            bucket,
            prefix,
            page: VecDeque::new(),
            token: None,
            done: false,
        }
    }

    async fn fill(&mut self) -> Result<()> {
        while self.page.is_empty() && !self.done {
            let ListPage { objects, next } = self
                .bucket
                .store
                .list_page(&self.bucket.name, self.prefix, self.token.take())
                .await?;
            self.page.extend(objects);
            self.done = next.is_none();
            self.token = next;
        }
        Ok(())
    }

    pub(crate) async fn peek(&mut self) -> Result<Option<&ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.front())
    }

    pub async fn next(&mut self) -> Result<Option<ObjectInfo>> {
        self.fill().await?;
        Ok(self.page.pop_front())
    }
}
