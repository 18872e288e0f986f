//! S3 access keys: the secret for an access key id, for s3s's SigV4 checks.
//! An unknown key id is `InvalidAccessKeyId` (403), as S3 answers. Secrets are
//! never logged.

use std::collections::HashMap;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use sillok_placement::AccessKey;

pub struct AccessKeys {
    secrets: HashMap<String, SecretKey>,
}

impl AccessKeys {
    pub fn new(keys: &[AccessKey]) -> Self {
        AccessKeys {
            secrets: keys
                .iter()
                .map(|k| (k.access_key_id.clone(), SecretKey::from(k.secret_access_key.clone())))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for AccessKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.secrets.get(access_key) {
            Some(s) => Ok(s.clone()),
            None => {
                Err(s3_error!(InvalidAccessKeyId, "The AWS access key Id you provided does not exist in our records."))
            }
        }
    }
}
