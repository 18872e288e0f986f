//! [`CatalogClient`]: how gateways, nodes, tools and tests talk to the
//! catalog without knowing which replica leads.
//!
//! Owns: the list of replica addresses, the last leader seen, and the retry
//! policy.
//!
//! Invariants:
//! - Every call has a per-attempt deadline ([`ClientTimeouts::attempt`]) and
//!   an overall one ([`ClientTimeouts::total`]); a hung replica costs one
//!   attempt, after which the next replica is tried.
//! - Writes go first to the leader last named by any replica (`x-sillok-leader`),
//!   then to the others in turn; a replica that is not the leader forwards
//!   them. A proposal keeps its request id across retries, so a retry of a
//!   write that did commit returns the first reply instead of applying twice.
//! - A refusal (409) or a bad request (400) is final: it is returned at once,
//!   never retried. An authentication failure (403) is final once every
//!   replica of a round gave it (a lagging replica may not know a new key yet).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Proposal;
use crate::api::{self, AddReplica, CatalogView, ErrorBody, MembershipChanged, Proposed, RemoveReplica, Status};
use crate::raft_network::MAX_RESPONSE;
use crate::state::{CatalogError, Command};
use sillok_placement::PlacementMap;
use sillok_rpc::auth::Signer;
use sillok_rpc::client::{Reply as Response, RpcClient as Transport, authority};

#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub connect: Duration,
    /// One attempt at one replica.
    pub attempt: Duration,
    /// All attempts of one call.
    pub total: Duration,
    /// Pause between rounds when no replica could take a write.
    pub backoff: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_millis(300),
            attempt: Duration::from_millis(4000),
            total: Duration::from_secs(15),
            backoff: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The catalog refused the change; nothing changed.
    #[error("{0}")]
    Refused(CatalogError),
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No replica could serve the call before the overall deadline.
    #[error(
        "no catalog replica could serve the request within {secs:.1} s; last error: {last}. Check that a majority of the replicas ({replicas}) is running"
    )]
    Unavailable { secs: f64, last: String, replicas: String },
    #[error("unexpected answer from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("no catalog replica addresses given (set SILLOK_CATALOG or --catalog)")]
    NoReplicas,
}

/// A client of the catalog that finds and follows the leader.
pub struct CatalogClient {
    replicas: Vec<String>,
    transport: Transport,
    timeouts: ClientTimeouts,
    /// Index into `replicas` of the last known leader (or last good replica).
    preferred: Mutex<Option<usize>>,
}

impl std::fmt::Debug for CatalogClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogClient").field("replicas", &self.replicas).field("timeouts", &self.timeouts).finish()
    }
}

/// A fresh request id: 128 random bits from the OS, hex.
pub fn new_request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

enum Attempt<T> {
    Done(T),
    Final(ClientError),
    Retry(String),
}

impl CatalogClient {
    /// `replicas`: `host:port` of each replica. `signer`: the cluster secret
    /// (`Signer::new`) or an admin key (`Signer::with_key`).
    pub fn new(replicas: Vec<String>, signer: Signer, timeouts: ClientTimeouts) -> Result<Self, ClientError> {
        Self::with_tls(replicas, signer, timeouts, sillok_rpc::tls::process().as_deref())
    }

    /// [`CatalogClient::new`] presenting `tls` (`None`: plain HTTP) instead
    /// of this process's internal identity, e.g. a test's.
    pub fn with_tls(
        replicas: Vec<String>,
        signer: Signer,
        timeouts: ClientTimeouts,
        tls: Option<&sillok_rpc::tls::InternalTls>,
    ) -> Result<Self, ClientError> {
        let replicas: Vec<String> =
            replicas.into_iter().map(|r| authority(r.trim()).to_string()).filter(|r| !r.is_empty()).collect();
        if replicas.is_empty() {
            return Err(ClientError::NoReplicas);
        }
        Ok(CatalogClient {
            transport: Transport::with_tls(signer, timeouts.connect, tls),
            replicas,
            timeouts,
            preferred: Mutex::new(None),
        })
    }

    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// The order of this round: the preferred replica first, then the others.
    fn order(&self) -> Vec<usize> {
        let first = *self.preferred.lock().expect("lock");
        let mut v: Vec<usize> = first.into_iter().collect();
        v.extend((0..self.replicas.len()).filter(|i| Some(*i) != first));
        v
    }

    /// A replica that failed (dead or hung) is not asked first next time.
    fn forget_preferred(&self, i: usize) {
        let mut pref = self.preferred.lock().expect("lock");
        if *pref == Some(i) {
            *pref = None;
        }
    }

    /// Remembers the leader a response names, if it is one of ours.
    fn note_leader(&self, r: &Response) {
        let Some(addr) = r.headers.get(api::H_LEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once('@'))
        else {
            return;
        };
        if let Some(i) = self.replicas.iter().position(|a| a == addr.1) {
            *self.preferred.lock().expect("lock") = Some(i);
        }
    }

    fn classify<T: DeserializeOwned>(&self, addr: &str, r: Response) -> Attempt<T> {
        self.note_leader(&r);
        let err_body = || serde_json::from_slice::<ErrorBody>(&r.body).ok();
        match r.status {
            StatusCode::OK => match serde_json::from_slice(&r.body) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Final(ClientError::Protocol { addr: addr.into(), reason: e.to_string() }),
            },
            StatusCode::CONFLICT => match err_body() {
                Some(ErrorBody { refusal: Some(e), .. }) => Attempt::Final(ClientError::Refused(e)),
                Some(b) => Attempt::Final(ClientError::BadRequest(b.message)),
                None => {
                    Attempt::Final(ClientError::Protocol { addr: addr.into(), reason: "409 without a body".into() })
                }
            },
            StatusCode::FORBIDDEN => {
                Attempt::Final(ClientError::Forbidden(err_body().map(|b| b.message).unwrap_or_else(|| "403".into())))
            }
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Attempt::Final(ClientError::BadRequest(
                err_body().map(|b| b.message).unwrap_or_else(|| r.status.to_string()),
            )),
            s => Attempt::Retry(format!(
                "{addr}: {s} {}",
                err_body().map(|b| b.message).unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned())
            )),
        }
    }

    /// Calls replicas in turn until one answers for good or time runs out.
    async fn call<T: DeserializeOwned>(&self, method: Method, pq: &str, body: Vec<u8>) -> Result<T, ClientError> {
        let start = Instant::now();
        let mut last = String::from("none tried");
        loop {
            // A 403 may come from a replica that has not applied the key yet:
            // it is final only once every replica of a round said so.
            let mut forbidden = 0;
            let mut forbidden_msg = String::new();
            for i in self.order() {
                let left = self.timeouts.total.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break;
                }
                let addr = &self.replicas[i];
                let deadline = self.timeouts.attempt.min(left);
                match self.transport.call(method.clone(), addr, pq, body.clone(), &[], deadline, MAX_RESPONSE).await {
                    Ok(r) => match self.classify(addr, r) {
                        Attempt::Done(v) => return Ok(v),
                        Attempt::Final(ClientError::Forbidden(m)) => {
                            forbidden += 1;
                            forbidden_msg = m.clone();
                            last = m;
                        }
                        Attempt::Final(e) => return Err(e),
                        Attempt::Retry(why) => last = why,
                    },
                    Err(e) => {
                        self.forget_preferred(i);
                        last = e.to_string();
                    }
                }
            }
            if forbidden == self.replicas.len() {
                return Err(ClientError::Forbidden(forbidden_msg));
            }
            if start.elapsed() + self.timeouts.backoff >= self.timeouts.total {
                return Err(ClientError::Unavailable {
                    secs: start.elapsed().as_secs_f64(),
                    last,
                    replicas: self.replicas.join(", "),
                });
            }
            tokio::time::sleep(self.timeouts.backoff).await;
        }
    }

    fn body<T: Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).expect("request serialises")
    }

    /// The status as one replica (the preferred, or the first that answers) sees it.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", Vec::new()).await
    }

    /// The status of one given replica (no failover).
    pub async fn status_of(&self, addr: &str) -> Result<Status, ClientError> {
        let r = self
            .transport
            .call(Method::GET, addr, "/v1/status", Vec::new(), &[], self.timeouts.attempt, MAX_RESPONSE)
            .await
            .map_err(|e| ClientError::Unavailable { secs: 0.0, last: e.to_string(), replicas: addr.into() })?;
        match self.classify(addr, r) {
            Attempt::Done(s) => Ok(s),
            Attempt::Final(e) => Err(e),
            Attempt::Retry(why) => Err(ClientError::Unavailable { secs: 0.0, last: why, replicas: addr.into() }),
        }
    }

    /// The catalog; `consistent`: as of now on the leader (a read barrier),
    /// else as the answering replica has it.
    pub async fn catalog(&self, consistent: bool) -> Result<CatalogView, ClientError> {
        let pq = if consistent { "/v1/catalog?consistent=1" } else { "/v1/catalog" };
        self.call(Method::GET, pq, Vec::new()).await
    }

    /// The index a follower must have applied (`CatalogView::applied_index`
    /// space) to see every change committed before the call, confirmed by
    /// the leader (internal callers only). An older replica without the
    /// route answers 404, which comes back as `BadRequest`.
    pub async fn read_index(&self) -> Result<api::ReadIndex, ClientError> {
        self.call(Method::GET, "/v1/catalog/read_index", Vec::new()).await
    }

    /// A backup of the whole catalog, secrets included, read from the leader
    /// after a read barrier (admin keys and the cluster secret only).
    pub async fn backup(&self) -> Result<api::CatalogBackup, ClientError> {
        self.call(Method::GET, "/v1/backup", Vec::new()).await
    }

    /// The map once its epoch is newer than `newer_than`, waiting up to `wait`
    /// on one replica (`None`: nothing newer came).
    pub async fn map_newer_than(&self, newer_than: u64, wait: Duration) -> Result<Option<PlacementMap>, ClientError> {
        let ms = wait.as_millis().min(u128::from(api::MAX_WAIT_MS));
        self.long_poll(&format!("/v1/map?newer_than={newer_than}&wait_ms={ms}"), wait).await
    }

    /// One long poll, replica by replica (preferred first) until one answers:
    /// 200 is the value, 204 is "nothing newer within `wait`".
    async fn long_poll<T: DeserializeOwned>(&self, pq: &str, wait: Duration) -> Result<Option<T>, ClientError> {
        let start = Instant::now();
        let mut last = String::new();
        for i in self.order() {
            let addr = &self.replicas[i];
            let deadline = wait + self.timeouts.attempt;
            match self.transport.call(Method::GET, addr, pq, Vec::new(), &[], deadline, MAX_RESPONSE).await {
                Ok(r) if r.status == StatusCode::NO_CONTENT => return Ok(None),
                Ok(r) => match self.classify(addr, r) {
                    Attempt::Done(m) => return Ok(Some(m)),
                    Attempt::Final(e) => return Err(e),
                    Attempt::Retry(why) => last = why,
                },
                Err(e) => {
                    self.forget_preferred(i);
                    last = e.to_string();
                }
            }
        }
        Err(ClientError::Unavailable { secs: start.elapsed().as_secs_f64(), last, replicas: self.replicas.join(", ") })
    }

    /// The catalog once some replica has applied more than `newer_than`
    /// entries, waiting up to `wait` on one replica (`None`: nothing newer
    /// came). The long poll of a gateway's catalog follower.
    pub async fn catalog_newer_than(
        &self,
        newer_than: u64,
        wait: Duration,
    ) -> Result<Option<CatalogView>, ClientError> {
        let ms = wait.as_millis().min(u128::from(api::MAX_WAIT_MS));
        self.long_poll(&format!("/v1/catalog?newer_than={newer_than}&wait_ms={ms}"), wait).await
    }

    /// The changes after index `since`, waiting up to `wait` on one replica
    /// for some (`None`: nothing came). An older replica without the route
    /// answers 404, which comes back as `BadRequest`.
    /// Map changes come as deltas (`map_rows=1`).
    pub async fn changes_since(
        &self,
        since: u64,
        wait: Duration,
    ) -> Result<Option<crate::changes::Changes>, ClientError> {
        let ms = wait.as_millis().min(u128::from(api::MAX_WAIT_MS));
        self.long_poll(&format!("/v1/catalog/changes?since={since}&wait_ms={ms}&map_rows=1"), wait).await
    }

    /// [`CatalogClient::changes_since`] for a follower of the map alone (a
    /// storage node): no bucket or key change (so no secret) is sent, and a
    /// follower behind the replica's log gets the whole map as one change
    /// instead of "snapshot needed".
    pub async fn map_changes_since(
        &self,
        since: u64,
        wait: Duration,
    ) -> Result<Option<crate::changes::Changes>, ClientError> {
        let ms = wait.as_millis().min(u128::from(api::MAX_WAIT_MS));
        self.long_poll(&format!("/v1/catalog/changes?since={since}&wait_ms={ms}&map_rows=1&only=map"), wait).await
    }

    /// Sends a storage node's usage report to every replica at once (each
    /// keeps its own copy for status); returns how many took it and the
    /// answer of the one furthest along the log.
    pub async fn report(&self, r: &api::NodeReport) -> Reported {
        self.report_to("/v1/report", Self::body(r)).await
    }

    /// Sends a gateway's report to every replica at once, like [`Self::report`].
    pub async fn report_gateway(&self, r: &api::GatewayReport) -> Reported {
        self.report_to("/v1/report/gateway", Self::body(r)).await
    }

    async fn report_to(&self, path: &'static str, body: Vec<u8>) -> Reported {
        let calls = self.replicas.iter().map(|addr| {
            let body = body.clone();
            async move {
                let res =
                    self.transport.call(Method::POST, addr, path, body, &[], self.timeouts.attempt, MAX_RESPONSE).await;
                match res {
                    Ok(r) if r.status.is_success() => {
                        Some(serde_json::from_slice::<api::ReportAnswer>(&r.body).unwrap_or_default())
                    }
                    _ => None,
                }
            }
        });
        let answers: Vec<api::ReportAnswer> = futures::future::join_all(calls).await.into_iter().flatten().collect();
        let taken = answers.len();
        Reported { taken, answer: answers.into_iter().max_by_key(|a| a.applied_index) }
    }

    /// Proposes a change with a fresh request id.
    pub async fn propose(&self, command: Command) -> Result<Proposed, ClientError> {
        self.propose_with_id(new_request_id(), command).await
    }

    /// Proposes a change; retries keep `request_id`, so it applies at most once.
    pub async fn propose_with_id(&self, request_id: String, command: Command) -> Result<Proposed, ClientError> {
        let body = Self::body(&Proposal { request_id, command });
        self.call(Method::POST, "/v1/propose", body).await
    }

    /// Adds a replica: it joins as a learner, catches up, then votes.
    pub async fn add_replica(&self, id: u64, addr: &str, site: &str) -> Result<MembershipChanged, ClientError> {
        let body = Self::body(&AddReplica { id, addr: addr.into(), site: site.into() });
        self.call(Method::POST, "/v1/membership/add", body).await
    }

    pub async fn remove_replica(&self, id: u64) -> Result<MembershipChanged, ClientError> {
        self.call(Method::POST, "/v1/membership/remove", Self::body(&RemoveReplica { id })).await
    }
}

/// What became of a report sent to every replica.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    /// Replicas that took it.
    pub taken: usize,
    /// The answer of the replica with the highest applied index.
    pub answer: Option<api::ReportAnswer>,
}
