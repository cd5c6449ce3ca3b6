//! Plumbing the ferrolb binaries share: logging flags and set-up, the API client, signals,
//! the metrics and health endpoint.

pub mod events;
pub mod health;
pub mod http;
mod listed;
pub mod memory;

pub use listed::continue_expired;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Logging flags of every ferrolb binary.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level (trace, debug, info, warn, error) or a full tracing filter such as
    /// `info,kube=debug`; `RUST_LOG` overrides it.
    #[arg(long, env = "FERROLB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("no Kubernetes configuration (in-cluster or KUBECONFIG): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("the API server at {url} did not answer /version for {patience:?}: {source}")]
    Unreachable {
        url: String,
        patience: std::time::Duration,
        #[source]
        source: kube::Error,
    },
}

impl LogArgs {
    /// Installs the global tracing subscriber.
    pub fn init(&self) -> Result<(), Error> {
        let filter = match std::env::var("RUST_LOG") {
            Ok(env) if !env.is_empty() => env,
            _ => self.log_level.clone(),
        };
        let filter = EnvFilter::try_new(&filter).map_err(|source| Error::LogFilter {
            filter: filter.clone(),
            source,
        })?;
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
        Ok(())
    }
}

/// How long [`connect`] waits for the API server. A pod may start before its node's kube-proxy
/// has the `kubernetes` Service's rules (no route to its ClusterIP yet) or while the API server
/// restarts; both pass within seconds. Short enough that a process that cannot connect exits,
/// saying why, before its liveness probe (from 10 s on, three failures) kills it silently.
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a request may go without a byte from the API server. Longer than a quiet watch
/// lasts ([`WATCH_TIMEOUT_SECS`]), so that only a dead connection reaches it.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);

/// How long the API server keeps a watch open before the watcher opens the next. kube's
/// watcher takes a watch that stays silent 5 s past this as dead and opens another; kube's
/// default (290 s) left a speaker or controller blind to changes for five minutes after a
/// silent connection loss. A watch a minute costs a request per kind and minute; bookmarks
/// keep its resource version fresh, so it does not list again.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// A client for the cluster the process runs in (or `KUBECONFIG`), once the API server answers
/// `/version` (retried for [`CONNECT_PATIENCE`]).
pub async fn connect() -> Result<kube::Client, Error> {
    // kube's rustls needs a process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::infer().await?;
    // A connection can die without a word: the API server restarts, or the load balancer in
    // front of it fails over, while the path is cut, and the reset is lost. A request waiting
    // on such a connection (a list, say) would wait forever, since kube sets no read timeout
    // by default; with one, it fails and is retried on a new connection.
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(Error::Client)?;
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut pause = std::time::Duration::from_millis(100);
    let version = loop {
        match client.apiserver_version().await {
            Ok(version) => break version,
            Err(source) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(%url, error = %source, "the API server does not answer yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(source) => {
                return Err(Error::Unreachable {
                    url,
                    patience: CONNECT_PATIENCE,
                    source,
                });
            }
        }
    };
    tracing::info!(%url, version = %version.git_version, "connected to the API server");
    Ok(client)
}

/// SIGTERM or SIGINT, listened for from [`Shutdown::listen`] on for the rest of the process.
/// Once a listener is installed the signal no longer ends the process by itself, so one that
/// came while nothing waited for it (a start-up step between two waits) was lost; this one
/// keeps it for whoever asks.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Installs the listeners now (inside a Tokio runtime).
    pub fn listen() -> Shutdown {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            tx.send_replace(true);
        });
        Shutdown(rx)
    }

    /// Resolves once a signal has come (at once if one came before).
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Whether a signal has come, as a watch.
    pub fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.clone()
    }
}

/// Retries a failing watch every 100 ms to 2 s. kube's default climbs to 30 s and resets only
/// after 2 quiet minutes, so after an API server flap a watcher could miss changes for half a
/// minute and go into the next outage with a stale view; a few cheap retries per second are
/// worth that.
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    kube::runtime::utils::ResetTimerBackoff::new(
        kube::runtime::watcher::ExponentialBackoff::from(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(100))
                .with_max_delay(std::time::Duration::from_secs(2))
                .with_factor(2.0)
                .without_max_times()
                .with_jitter(),
        ),
        std::time::Duration::from_secs(10),
    )
}

/// A watch of `api` as both binaries keep one: its first state streamed as watch events
/// (`sendInitialEvents`) where the API server takes that, else listed; renewed every
/// [`WATCH_TIMEOUT_SECS`], retried with [`watch_backoff`], and without managed fields, which
/// nothing of ours reads and which are most of a cached object's bytes (10,000 Services held
/// 117 MiB of controller memory with them, 49 MiB without).
///
/// Streamed, the API server sends each object from its watch cache, encoded once for every
/// watcher, instead of building a list per page and client: a DaemonSet of speakers
/// starting at once (a rollout) asks for the cluster's Services a hundred times over. The
/// WatchList feature is on by default in Kubernetes 1.32 and from 1.34; a server without it
/// refuses the parameter (422), and the watch then lists for good.
///
/// A streamed first state is one response: cut before its end, it starts again from nothing.
/// A loaded API server cuts it for a client that reads slower than the cluster changes (it
/// closes a watcher whose buffer stays full, "due to unresponsiveness"), and again on the next
/// try: of 100 speakers starting into 10,000 Services, 5 had no first state 25 minutes after
/// they started. So a first state cut short is listed from then on, as client-go falls back
/// to a list.
///
/// A listed first state comes in pages of [`LIST_PAGE`], each a request; a page that fails is
/// asked again, and only a continue token that expired starts the list again ([`listed`]).
/// kube's watcher started it again on any failure: on a starved API server no list of 10,000
/// Services then ended before the server's etcd compaction expired its token (172 times in 73
/// of 100 speakers, 26 of which had no first state 30 minutes after they started). Listing
/// whole after an expiry, as client-go's pager does, ended more lists, but lists of 10,000
/// Services were cut mid-body (190 times in 55 speakers) and one speaker decoding one held
/// 113 MiB.
pub fn watch<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = kube::runtime::watcher::Result<kube::runtime::watcher::Event<K>>>
+ Send
+ 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::WatchStreamExt;
    let config = config.timeout(WATCH_TIMEOUT_SECS);
    let mut current = kube::runtime::watcher(api.clone(), config.clone().streaming_lists()).boxed();
    // In pages of LIST_PAGE: a page's objects are decoded at once, and a speaker that read
    // pages of 500 Services kept 4.4 MiB more resident than one that read them streamed. Each
    // page is a consistent read: the API server (1.36.3 here) serves a list at
    // resourceVersion 0 from its watch cache whole, whatever the limit (6 of 6 ConfigMaps for
    // limit=2), so kube sends no resourceVersion with a limit, and neither do we.
    let mut paged = Some((api, config.page_size(LIST_PAGE)));
    let mut first_state = FirstState::default();
    futures::stream::poll_fn(move |cx| {
        loop {
            let item = std::task::ready!(current.poll_next_unpin(cx));
            let refused = matches!(&item, Some(Err(e)) if refuses_streamed_lists(e));
            let cut_short = matches!(&item, Some(Ok(event)) if first_state.cut_short(event));
            if (refused || cut_short)
                && let Some((api, config)) = paged.take()
            {
                let kind = K::kind(&K::DynamicType::default()).into_owned();
                if refused {
                    tracing::info!(
                        kind = kind.as_str(),
                        "the API server does not stream a watch's first state (WatchList off): listing it"
                    );
                } else {
                    tracing::warn!(
                        kind = kind.as_str(),
                        "the watch's streamed first state was cut before its end: listing it from now on"
                    );
                }
                // The listing watcher begins with its own Init: whoever reads this stream
                // drops what the cut one had sent.
                current = listed::watcher(api, config).boxed();
                continue;
            }
            return std::task::Poll::Ready(item);
        }
    })
    .backoff(watch_backoff())
    .modify(|o| o.managed_fields_mut().clear())
}

/// Whether a watch is between a first state's start and its end.
#[derive(Debug, Default)]
struct FirstState {
    under_way: bool,
}

impl FirstState {
    /// Follows `event`; whether it starts a first state while one was under way, which is
    /// how kube's watcher shows a first state cut before its end (it starts again).
    fn cut_short<K>(&mut self, event: &kube::runtime::watcher::Event<K>) -> bool {
        use kube::runtime::watcher::Event;
        match event {
            Event::Init => std::mem::replace(&mut self.under_way, true),
            Event::InitDone => {
                self.under_way = false;
                false
            }
            _ => false,
        }
    }
}

/// Objects per page of a watch's list, when its first state is listed (not streamed).
const LIST_PAGE: u32 = 100;

/// The API server's answer to `sendInitialEvents` when its WatchList feature is off: the
/// request is invalid.
fn refuses_streamed_lists(error: &kube::runtime::watcher::Error) -> bool {
    matches!(
        error,
        kube::runtime::watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 422
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    #[test]
    fn only_a_first_state_started_again_before_its_end_was_cut_short() {
        let mut first = FirstState::default();
        let seen: Vec<bool> = [
            Event::Init,
            Event::InitApply(1),
            Event::InitDone,
            Event::Apply(2),
            // A relist after the first state was whole.
            Event::Init,
            Event::InitApply(1),
            // Started again before its end.
            Event::Init,
            Event::InitApply(1),
            Event::InitDone,
            Event::Delete(1),
        ]
        .iter()
        .map(|event| first.cut_short(event))
        .collect();
        assert_eq!(
            seen,
            [
                false, false, false, false, false, false, true, false, false, false
            ]
        );
    }
}
