//! The link's own thread: a tokio current-thread runtime that makes the first load, then runs
//! the periodic work of the mode (key refreshes; polls and the event stream in `cached` mode;
//! file re-reads in `crl` mode) and answers the requests callers hand it — a key refresh for an
//! unknown `kid` (at most one per [`KID_REFRESH_GAP`], through the [`KidGate`]) and an `online`
//! check — each within [`CALL_TIMEOUT`].

use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc as std_mpsc};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::config::Mode;
use super::error::LinkError;
use super::events::UpdateSource;
use super::limits::{BACKGROUND_TIMEOUT, CALL_TIMEOUT, KID_REFRESH_GAP};
use super::refresh::Shared;
use super::state::lock;

/// Requests waiting for the link's thread; more are refused at once.
const MAX_PENDING_REQUESTS: usize = 1024;

/// The caller side of the link's thread.
pub(super) struct Worker {
    requests: mpsc::Sender<Request>,
    kid_gate: KidGate,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl Worker {
    /// Starts the link's thread over `shared` and waits for its first load; its failure is the
    /// start's.
    pub(super) fn start(shared: &Arc<Shared>) -> Result<Self, LinkError> {
        let (requests, request_rx) = mpsc::channel(MAX_PENDING_REQUESTS);
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("aip-registry".into())
            .spawn({
                let shared = Arc::clone(shared);
                move || work(shared, request_rx, stop_rx, ready_tx)
            })
            .map_err(|_| LinkError::Stopped)?;
        let first_load = ready_rx.recv().unwrap_or(Err(LinkError::Stopped));
        if let Err(e) = first_load {
            let _ = thread.join();
            return Err(e);
        }
        Ok(Self {
            requests,
            kid_gate: KidGate::default(),
            stop,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// An `online` check: a conditional request of `/v1/revocations`, within [`CALL_TIMEOUT`].
    pub(super) fn check_online(&self) -> Result<(), LinkError> {
        self.call(Request::CheckOnline, "revocation check")
    }

    /// Stops the background work and waits for the link's thread.
    pub(super) fn shutdown(&self) {
        let _ = self.stop.send(true);
        if std::thread::current().id() == self.thread_id {
            // Called from the event callback: the thread ends once the callback returns.
            return;
        }
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Hands a request to the link's thread and waits for its answer.
    fn call(&self, make: fn(Reply) -> Request, what: &'static str) -> Result<(), LinkError> {
        if std::thread::current().id() == self.thread_id {
            // From the event callback: the thread cannot answer while it runs the callback.
            return Err(LinkError::Busy);
        }
        let (reply, answer) = std_mpsc::sync_channel(1);
        self.requests.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LinkError::Busy,
            mpsc::error::TrySendError::Closed(_) => LinkError::Stopped,
        })?;
        match answer.recv_timeout(CALL_TIMEOUT) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(LinkError::Timeout { what }),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(LinkError::Stopped),
        }
    }

    /// Refreshes the keys for an unknown `kid`: at most once per [`KID_REFRESH_GAP`]; a caller
    /// arriving while a refresh runs waits for that one instead of starting another.
    pub(super) fn refresh_for_unknown_kid(&self) {
        let gate = &self.kid_gate;
        let mut state = lock(&gate.state);
        if state.running {
            let round = state.round;
            let deadline = Instant::now() + CALL_TIMEOUT;
            while state.running && state.round == round {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                state = gate
                    .done
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            return;
        }
        if state.last.is_some_and(|at| at.elapsed() < KID_REFRESH_GAP) {
            return;
        }
        state.running = true;
        state.last = Some(Instant::now());
        drop(state);
        // A failure is reported as `KeysFailed` by the link's thread; the caller sees the kid
        // still unknown.
        let _ = self.call(Request::RefreshKeys, "key refresh");
        let mut state = lock(&gate.state);
        state.running = false;
        state.round = state.round.wrapping_add(1);
        drop(state);
        gate.done.notify_all();
    }
}

impl Shared {
    /// The link's thread after the first load: periodic work and requests until stopped.
    async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<Request>, mut stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&self).refresh_keys_periodically());
        match self.config.mode {
            Mode::Cached => {
                tasks.spawn(Arc::clone(&self).poll_periodically());
                tasks.spawn(Arc::clone(&self).follow_stream());
            }
            Mode::Crl => {
                tasks.spawn(Arc::clone(&self).reread_periodically());
            }
            Mode::Online => {}
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                request = requests.recv() => match request {
                    Some(first) => Arc::clone(&self).answer(first, &mut requests),
                    None => break,
                },
            }
        }
        tasks.abort_all();
    }

    /// Answers `first` and every request already waiting, with one refresh of each kind.
    fn answer(self: Arc<Self>, first: Request, requests: &mut mpsc::Receiver<Request>) {
        let mut key_waiters = Vec::new();
        let mut check_waiters = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            match request {
                Request::RefreshKeys(reply) => key_waiters.push(reply),
                Request::CheckOnline(reply) => check_waiters.push(reply),
            }
            next = requests.try_recv().ok();
        }
        if !key_waiters.is_empty() {
            let shared = Arc::clone(&self);
            tokio::spawn(async move {
                let result = shared.refresh_keys(CALL_TIMEOUT).await;
                for reply in key_waiters {
                    let _ = reply.try_send(result.clone());
                }
            });
        }
        if !check_waiters.is_empty() {
            tokio::spawn(async move {
                let result = self.fetch_list(UpdateSource::Online, CALL_TIMEOUT).await;
                for reply in check_waiters {
                    let _ = reply.try_send(result.clone());
                }
            });
        }
    }

    async fn refresh_keys_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.key_ttl);
        loop {
            ticks.tick().await;
            let _ = self.refresh_keys(BACKGROUND_TIMEOUT).await;
        }
    }

    async fn poll_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.check_interval);
        loop {
            ticks.tick().await;
            let _ = self.fetch_list(UpdateSource::Poll, BACKGROUND_TIMEOUT).await;
        }
    }

    async fn reread_periodically(self: Arc<Self>) {
        let mut ticks = ticks(self.config.check_interval);
        loop {
            ticks.tick().await;
            let _ = self.load_file();
        }
    }
}

/// A tick now and then every `period`; late ticks are not bunched up.
fn ticks(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// The link's thread: a current-thread runtime that makes the first load, reports it on
/// `ready`, then runs until stopped.
fn work(
    shared: Arc<Shared>,
    requests: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
    ready: std_mpsc::SyncSender<Result<(), LinkError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(_) => {
            let _ = ready.send(Err(LinkError::Stopped));
            return;
        }
    };
    runtime.block_on(async move {
        if let Err(e) = shared.first_load().await {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        shared.run(requests, stop).await;
    });
}

type Reply = std_mpsc::SyncSender<Result<(), LinkError>>;

/// Work a caller hands to the link's thread.
enum Request {
    RefreshKeys(Reply),
    CheckOnline(Reply),
}

/// Serializes key refreshes caused by unknown `kid`s.
#[derive(Default)]
struct KidGate {
    state: Mutex<KidGateState>,
    done: Condvar,
}

#[derive(Default)]
struct KidGateState {
    /// When the last refresh started.
    last: Option<Instant>,
    running: bool,
    /// Counts finished refreshes, so waiters know theirs is done.
    round: u64,
}
