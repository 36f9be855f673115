//! What the unit tests of the crate share: an issuer over a fresh SQLite database and an
//! in-memory agent directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aip_aat::clock::Clock;
use aip_aat::ids::AgentId;
use aip_aat::keyfile::Protection;
use aip_aat::keys::Algorithm;
use aip_aat::revocation::RevocationIndex;
use aip_api::registry::PublishRevocationsRequest;
use aip_db::Database;
use async_trait::async_trait;

use crate::config::IssuerSettings;
use crate::directory::{AgentDirectory, Caller, DirectoryAgent, DirectoryError};
use crate::keys::{SigningKeys, ensure_key};
use crate::service::Issuer;
use crate::store::IssuerStore;

/// Agents held in memory.
#[derive(Default)]
pub(crate) struct MemoryDirectory(pub(crate) Mutex<HashMap<AgentId, Arc<DirectoryAgent>>>);

/// A directory with no agents.
pub(crate) type EmptyDirectory = MemoryDirectory;

#[async_trait]
impl AgentDirectory for MemoryDirectory {
    async fn agent(&self, agent_id: &AgentId) -> Result<Option<Arc<DirectoryAgent>>, DirectoryError> {
        Ok(self.0.lock().unwrap().get(agent_id).cloned())
    }

    async fn authenticate(&self, _token: &str) -> Result<Caller, DirectoryError> {
        Err(DirectoryError::Unauthorized("no access tokens here".into()))
    }

    async fn revoke_agent(&self, _: &Caller, _: &AgentId, _: Option<&str>) -> Result<u64, DirectoryError> {
        Err(DirectoryError::Forbidden("not here".into()))
    }

    async fn publish(&self, _: &str, _: &PublishRevocationsRequest) -> Result<u64, DirectoryError> {
        Ok(0)
    }

    async fn revocations(&self) -> Result<Arc<RevocationIndex>, DirectoryError> {
        Ok(Arc::default())
    }
}

/// An issuer over a new SQLite database in `dir`.
pub(crate) async fn issuer(
    dir: &Path,
    settings: IssuerSettings,
    directory: Arc<dyn AgentDirectory>,
    clock: Arc<dyn Clock>,
) -> Issuer {
    let database = Database::connect(&Database::sqlite_url(&dir.join("test.db")))
        .await
        .unwrap();
    let store = IssuerStore::new(&database);
    let now = clock.now();
    ensure_key(&store, Algorithm::EdDSA, Protection::InsecureNone, now)
        .await
        .unwrap();
    let keys = Arc::new(SigningKeys::load(&store, None, now).await.unwrap());
    Issuer::new(settings, directory, store, keys, clock).await.unwrap()
}
