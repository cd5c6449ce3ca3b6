//! A watch whose first state is listed in pages that resume where they failed.
//!
//! kube's watcher starts a list again from its first page whenever any page fails. On a
//! starved API server (100 speakers starting into 10,000 Services on two cores) pages fail
//! often — 386 answered 504 in one run, others were cut mid-body — and every failure threw
//! away the pages already read, until the list outlived the API server's etcd compaction and
//! its continue token expired as well. Here a failed page is asked again with the same
//! continue token; only an expired token starts the list again from its first page.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{Config, Error, Event, Result};

/// kube's margin past a watch's timeout after which a silent watch is taken as dead.
const IDLE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

enum State<K> {
    /// The next step starts a list from its first page.
    Empty,
    /// A list under way: `objects` of the last page still to hand out, then the page
    /// `continue_token` names, or the list's end when there is none and `resource_version`
    /// (the list's) is known.
    Listing {
        continue_token: Option<String>,
        objects: std::vec::IntoIter<K>,
        resource_version: Option<String>,
    },
    /// The next step opens a watch from `resource_version`.
    Listed { resource_version: String },
    Watching {
        resource_version: String,
        stream: BoxStream<'static, kube::Result<WatchEvent<K>>>,
    },
}

/// The API server's answer to a list's next page when etcd compacted the revision its continue
/// token reads at: 410 Gone, reason Expired ("The provided continue parameter is too old").
pub fn continue_expired(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 410 && status.reason == "Expired")
}

/// A watch of `api` whose first state is listed in pages of `config.page_size` (resumed
/// page by page, see the module), then watched as kube's watcher watches: from the list's
/// resource version, bookmarks moving it on, a 410 listing again, a watch silent past its
/// timeout opened again. Errors are yielded; the caller backs off before polling on.
pub(crate) fn watcher<K>(
    api: kube::Api<K>,
    config: Config,
) -> impl futures::Stream<Item = Result<Event<K>>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    // No resource version: a list at 0 is served whole whatever its limit, and kube drops it
    // with a limit anyway; each page is a consistent read.
    let list = ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        limit: config.page_size,
        ..ListParams::default()
    };
    let watch = WatchParams {
        label_selector: config.label_selector,
        field_selector: config.field_selector,
        timeout: config.timeout,
        bookmarks: config.bookmarks,
        send_initial_events: false,
    };
    let idle =
        std::time::Duration::from_secs(u64::from(config.timeout.unwrap_or(290))) + IDLE_MARGIN;
    futures::stream::unfold(State::Empty, move |mut state| {
        let (api, list, watch) = (api.clone(), list.clone(), watch.clone());
        async move {
            loop {
                let (item, next) = step(&api, &list, &watch, idle, state).await;
                state = next;
                if let Some(item) = item {
                    return Some((item, state));
                }
            }
        }
    })
}

/// One step: an item to yield, if any, and the state after it.
async fn step<K>(
    api: &kube::Api<K>,
    list: &ListParams,
    watch: &WatchParams,
    idle: std::time::Duration,
    state: State<K>,
) -> (Option<Result<Event<K>>>, State<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    match state {
        State::Empty => (
            Some(Ok(Event::Init)),
            State::Listing {
                continue_token: None,
                objects: Vec::new().into_iter(),
                resource_version: None,
            },
        ),
        State::Listing {
            continue_token,
            mut objects,
            resource_version,
        } => {
            if let Some(object) = objects.next() {
                let state = State::Listing {
                    continue_token,
                    objects,
                    resource_version,
                };
                return (Some(Ok(Event::InitApply(object))), state);
            }
            if continue_token.is_none()
                && let Some(resource_version) = resource_version
            {
                return (
                    Some(Ok(Event::InitDone)),
                    State::Listed { resource_version },
                );
            }
            let params = ListParams {
                continue_token: continue_token.clone(),
                ..list.clone()
            };
            match api.list(&params).await {
                Ok(page) => {
                    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
                    let resource_version = nonempty(page.metadata.resource_version);
                    let continue_token = nonempty(page.metadata.continue_);
                    if resource_version.is_none() && continue_token.is_none() {
                        return (Some(Err(Error::NoResourceVersion)), State::Empty);
                    }
                    let state = State::Listing {
                        continue_token,
                        objects: page.items.into_iter(),
                        resource_version,
                    };
                    (None, state)
                }
                Err(error) => {
                    // A failed page is asked again: the pages read so far stand. An expired
                    // token's revision is compacted away, so no later page reads consistently
                    // with the earlier ones: the list starts again.
                    let state = if continue_expired(&error) {
                        tracing::warn!(
                            kind = K::kind(&Default::default()).as_ref(),
                            "the list's continue token expired before its last page: listing again from its first page"
                        );
                        State::Empty
                    } else {
                        State::Listing {
                            continue_token,
                            objects,
                            resource_version: None,
                        }
                    };
                    (Some(Err(Error::InitialListFailed(error))), state)
                }
            }
        }
        State::Listed { resource_version } => match api.watch(watch, &resource_version).await {
            Ok(stream) => (
                None,
                State::Watching {
                    resource_version,
                    stream: stream.boxed(),
                },
            ),
            Err(error) => (
                Some(Err(Error::WatchStartFailed(error))),
                State::Listed { resource_version },
            ),
        },
        State::Watching {
            resource_version,
            mut stream,
        } => match tokio::time::timeout(idle, stream.next()).await {
            // Ended, or silent past its timeout: a dead connection.
            Err(_) | Ok(None) => (None, State::Listed { resource_version }),
            Ok(Some(Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)))) => {
                applied(object, stream, Event::Apply)
            }
            Ok(Some(Ok(WatchEvent::Deleted(object)))) => applied(object, stream, Event::Delete),
            Ok(Some(Ok(WatchEvent::Bookmark(bookmark)))) => (
                None,
                State::Watching {
                    resource_version: bookmark.metadata.resource_version,
                    stream,
                },
            ),
            Ok(Some(Ok(WatchEvent::Error(status)))) => {
                // 410: the resource version is gone from the server's window; list again.
                let state = if status.code == 410 {
                    State::Empty
                } else {
                    State::Watching {
                        resource_version,
                        stream,
                    }
                };
                (Some(Err(Error::WatchError(status.boxed()))), state)
            }
            Ok(Some(Err(error))) => (
                Some(Err(Error::WatchFailed(error))),
                State::Watching {
                    resource_version,
                    stream,
                },
            ),
        },
    }
}

/// A watched change of `object`, the watch going on from its resource version.
fn applied<K: kube::Resource>(
    object: K,
    stream: BoxStream<'static, kube::Result<WatchEvent<K>>>,
    event: fn(K) -> Event<K>,
) -> (Option<Result<Event<K>>>, State<K>) {
    match object
        .meta()
        .resource_version
        .clone()
        .filter(|v| !v.is_empty())
    {
        Some(resource_version) => (
            Some(Ok(event(object))),
            State::Watching {
                resource_version,
                stream,
            },
        ),
        None => (Some(Err(Error::NoResourceVersion)), State::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn failed(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            Status::failure("a page failed", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_an_expired_continue_token_starts_the_list_again() {
        assert!(continue_expired(&failed(410, "Expired")));
        // A page the server timed out, a server restarting, a 410 of another kind: the same
        // page is asked again.
        for (code, reason) in [(504, "Timeout"), (503, "ServiceUnavailable"), (410, "Gone")] {
            assert!(!continue_expired(&failed(code, reason)), "{code} {reason}");
        }
        let cut = kube::Error::Service(std::io::Error::other("error reading a body").into());
        assert!(!continue_expired(&cut));
    }
}
