//! Loading the link's data: issuer keys from `/v1/jwks` or `jwks_file`, the revocation list
//! from `/v1/revocations` (conditionally, once one is loaded) or the signed list file, put in
//! force through [`State`] and reported as [`RegistryEvent`]s.

use std::sync::Arc;
use std::time::Duration;

use aip_aat::clock::Clock;

use aip_aat::revocation::{RevocationList, SignedListError, SignedRevocationList};

use super::config::{Config, Mode};
use super::error::LinkError;
use super::events::{RegistryEvent, UpdateSource};
use super::files::read_bounded;
use aip_api::client::Fetched;

use super::http::Http;
use super::limits::{BACKGROUND_TIMEOUT, MAX_JWKS_BYTES, MAX_LIST_BYTES};
use super::state::{State, parse_jwks};

/// What the caller side and the link's thread share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) http: Http,
    pub(super) state: State,
    /// Wall-clock time, for the expiry of signed lists.
    pub(super) clock: Arc<dyn Clock>,
    /// One list request at a time, so each sends the newest ETag and answers arrive in order.
    list_fetch: tokio::sync::Mutex<()>,
    on_event: Box<dyn Fn(RegistryEvent) + Send + Sync>,
}

impl Shared {
    /// Nothing loaded yet; `on_event` hears of every load.
    pub(super) fn new(
        config: Config,
        http: Http,
        clock: Arc<dyn Clock>,
        on_event: Box<dyn Fn(RegistryEvent) + Send + Sync>,
    ) -> Self {
        Self {
            config,
            http,
            state: State::new(),
            clock,
            list_fetch: tokio::sync::Mutex::new(()),
            on_event,
        }
    }

    fn emit(&self, event: RegistryEvent) {
        (self.on_event)(event);
    }

    /// Reports revocation data that could not be fetched, read or accepted.
    pub(super) fn check_failed(&self, error: &LinkError) {
        self.emit(RegistryEvent::CheckFailed {
            mode: self.config.mode.as_str(),
            reason: error.to_string(),
        });
    }

    /// The first keys and revocation data; any failure fails the start.
    pub(super) async fn first_load(&self) -> Result<(), LinkError> {
        self.refresh_keys(BACKGROUND_TIMEOUT).await?;
        match self.config.mode {
            Mode::Crl => self.load_file(),
            Mode::Cached => self.fetch_list(UpdateSource::Poll, BACKGROUND_TIMEOUT).await,
            Mode::Online => self.fetch_list(UpdateSource::Online, BACKGROUND_TIMEOUT).await,
        }
    }

    /// Reloads the issuer keys; on failure the previous keys stay.
    pub(super) async fn refresh_keys(&self, timeout: Duration) -> Result<(), LinkError> {
        let loaded = match &self.config.jwks_file {
            Some(path) => read_bounded(path, MAX_JWKS_BYTES).and_then(|bytes| parse_jwks(&bytes, &path.display())),
            None => {
                let url = self.http.url("/v1/jwks");
                match self.http.fetch_jwks(timeout).await {
                    Ok(bytes) => parse_jwks(&bytes, &url),
                    Err(e) => Err(e),
                }
            }
        };
        match loaded {
            Ok(keys) => {
                let count = self.state.set_keys(keys);
                self.emit(RegistryEvent::KeysRefreshed { count });
                Ok(())
            }
            Err(e) => {
                self.emit(RegistryEvent::KeysFailed { reason: e.to_string() });
                Err(e)
            }
        }
    }

    /// Requests `/v1/revocations` (conditionally, once a list is loaded) and puts a newer list
    /// in force. Failures are reported as `CheckFailed`.
    pub(super) async fn fetch_list(&self, source: UpdateSource, timeout: Duration) -> Result<(), LinkError> {
        let _one_at_a_time = self.list_fetch.lock().await;
        let etag = self.state.etag();
        let url = self.http.url("/v1/revocations");
        let result = match self.http.fetch_revocations(etag.as_deref(), timeout).await {
            Ok(Fetched::NotModified) => {
                self.state.confirm();
                Ok(())
            }
            Ok(Fetched::Body { bytes, etag }) => aip_aat::json::from_slice::<RevocationList>(&bytes)
                .map_err(|e| LinkError::Decode {
                    source_name: url.clone(),
                    reason: format!("not a revocation list: {e}"),
                })
                .and_then(|list| self.install(&list, etag, None, source, &url)),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.check_failed(e);
        }
        result
    }

    /// Reads and verifies the signed list file (`crl` mode) and puts a newer list in force.
    pub(super) fn load_file(&self) -> Result<(), LinkError> {
        let result = self.read_signed_file();
        if let Err(e) = &result {
            self.check_failed(e);
        }
        result
    }

    fn read_signed_file(&self) -> Result<(), LinkError> {
        let Some(path) = &self.config.crl_path else {
            return Err(LinkError::Config("crl mode needs revocation.crl_path"));
        };
        let bytes = read_bounded(path, MAX_LIST_BYTES)?;
        let refused = |error: SignedListError| LinkError::SignedList {
            path: path.clone(),
            reason: error.to_string(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| refused(SignedListError::Malformed("not UTF-8 text")))?;
        let signed = SignedRevocationList::verify(text, &self.state.keys()).map_err(refused)?;
        let expires_at = signed.expires_at.unix_timestamp();
        self.install(
            &signed.list,
            None,
            Some(expires_at),
            UpdateSource::File,
            &path.display().to_string(),
        )?;
        // Put in force all the same (it is the newest data there is), but the link reports
        // itself stale until a fresh copy arrives.
        if signed.is_expired(self.clock.now()) {
            self.check_failed(&LinkError::expired(expires_at));
        }
        Ok(())
    }

    /// Puts `list` in force (see [`State::install`]) and reports a new version.
    fn install(
        &self,
        list: &RevocationList,
        etag: Option<String>,
        expires_at: Option<i64>,
        source: UpdateSource,
        source_name: &str,
    ) -> Result<(), LinkError> {
        if let Some(counts) = self.state.install(list, etag, expires_at, source_name)? {
            self.emit(RegistryEvent::ListUpdated {
                mode: self.config.mode.as_str(),
                version: list.version,
                source,
                counts,
            });
        }
        Ok(())
    }
}
