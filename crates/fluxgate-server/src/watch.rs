//! Shared feeds for `WatchChangeRequest`: one database read per change of a request, however
//! many watch it.
//!
//! The first watcher of a request starts its feed: a task that hears the directory's request
//! changes ([`crate::directory::Directory::watch_requests`]), reads the request once per change
//! (as stored, for no one in particular) and publishes it on a `tokio::sync::watch` channel.
//! Each watcher holds the feed and decides on its own, in memory, whether it may still see what
//! the feed published (its principal active, [`uc::may_view`] on the snapshot in force). The
//! feed ends when its last watcher leaves, when the request is final, or when the server stops.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fluxgate_core::change_requests::{self as uc, RequestView};
use fluxgate_domain::ChangeRequestId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::db::Db;
use crate::directory::{ANY_REQUEST, Directory};
use crate::error::ApiError;
use crate::incoming::Bursts;
use crate::metrics::Metrics;

/// A feed reads its request again at least this often, whatever it heard (a change another
/// replica made while this one's change stream lagged, say).
pub const RECHECK: Duration = Duration::from_secs(30);

/// A change for at least this many watchers is announced as a burst of writes ...
const BURST_WATCHERS: usize = 16;
/// ... that the connections gather for this long (a change reaches 1,500 streams in a few
/// milliseconds).
const BURST_WINDOW: Duration = Duration::from_millis(10);

/// What a feed last published.
#[derive(Debug, Clone)]
pub enum Latest {
    /// Nothing read yet.
    Pending,
    /// The request as read after its latest change.
    View(Arc<Published>),
    /// The request can no longer be read (not for want of a database: that is retried).
    Gone(tonic::Status),
}

/// A version of the request, as read once for all its watchers.
#[derive(Debug)]
pub struct Published {
    pub view: RequestView,
    /// Its message, made by the first watcher that sends it and cloned by the others (it does
    /// not depend on who watches).
    pub message: std::sync::OnceLock<fluxgate_proto::v1::WatchChangeRequestResponse>,
}

/// One request's feed, kept running while someone holds it.
#[derive(Debug)]
pub struct Feed {
    latest: watch::Receiver<Latest>,
}

/// One watcher's hold on a feed.
#[derive(Debug)]
pub struct Watcher {
    latest: watch::Receiver<Latest>,
    _feed: Arc<Feed>,
    /// When the watcher is woken next even if the feed publishes nothing; one timer for the
    /// watcher's life, moved on only when it fires, so that a publication costs no timer.
    recheck: Pin<Box<tokio::time::Sleep>>,
    every: Duration,
}

impl Watcher {
    /// Waits until the feed publishes, or until the re-check `every` (of
    /// [`RequestFeeds::watch`]) is due: what the feed holds then, and whether it still runs (it
    /// stops short of a final state only when the server stops).
    pub async fn next(&mut self) -> (Latest, bool) {
        let running = tokio::select! {
            changed = self.latest.changed() => changed.is_ok(),
            () = self.recheck.as_mut() => {
                let next = tokio::time::Instant::now() + self.every;
                self.recheck.as_mut().reset(next);
                true
            }
        };
        (self.latest.borrow_and_update().clone(), running)
    }
}

/// What a feed needs from the server.
#[derive(Debug, Clone)]
struct Sources {
    db: Db,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
    bursts: Arc<Bursts>,
}

/// The feeds running now, by request.
#[derive(Debug, Clone)]
pub struct RequestFeeds {
    feeds: Arc<Mutex<HashMap<ChangeRequestId, Weak<Feed>>>>,
    sources: Sources,
}

impl RequestFeeds {
    pub fn new(
        db: Db,
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            feeds: Arc::default(),
            sources: Sources {
                db,
                directory,
                metrics,
                stopping,
                bursts: Arc::default(),
            },
        }
    }

    /// The bursts of writes the feeds announce (for the connections, to gather them).
    pub fn bursts(&self) -> Arc<Bursts> {
        self.sources.bursts.clone()
    }

    /// Joins the running feed of request `id`, or starts one; the watcher wakes at least
    /// `recheck` apart. Call it before the watcher's own first read, so that no change slips
    /// between the two.
    pub fn watch(&self, id: ChangeRequestId, recheck: Duration) -> Watcher {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let feed = match feeds.get(&id).and_then(Weak::upgrade) {
            Some(feed) => feed,
            None => {
                // Hear changes from now on, before the feed's first read.
                let changes = self.sources.directory.watch_requests();
                let (tx, rx) = watch::channel(Latest::Pending);
                let feed = Arc::new(Feed { latest: rx });
                let mine = Arc::downgrade(&feed);
                feeds.insert(id, mine.clone());
                self.sources.metrics.watch_feeds(feeds.len());
                tokio::spawn(self.clone().run(id, mine, changes, tx));
                feed
            }
        };
        Watcher {
            latest: feed.latest.clone(),
            _feed: feed,
            recheck: Box::pin(tokio::time::sleep(recheck)),
            every: recheck,
        }
    }

    /// Forgets the feed `mine` of `id` (its task ended).
    fn forget(&self, id: ChangeRequestId, mine: &Weak<Feed>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if feeds.get(&id).is_some_and(|w| w.ptr_eq(mine)) {
            feeds.remove(&id);
        }
        self.sources.metrics.watch_feeds(feeds.len());
    }

    /// A feed's task: reads the request, publishes it, and waits for its next change.
    async fn run(
        self,
        id: ChangeRequestId,
        mine: Weak<Feed>,
        mut changes: tokio::sync::broadcast::Receiver<Arc<str>>,
        tx: watch::Sender<Latest>,
    ) {
        let mut stopping = self.sources.stopping.clone();
        let key = id.to_string();
        while let Some(latest) = read(&self.sources, id, &tx, &mut stopping).await {
            let done = match &latest {
                Latest::View(v) => v.view.request.state.is_final(),
                Latest::Pending => false,
                Latest::Gone(_) => true,
            };
            publish(&tx, latest, &self.sources.bursts);
            if done {
                break;
            }
            let heard = async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if *changed == *key || *changed == *ANY_REQUEST => return true,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return true,
                        Err(RecvError::Closed) => return false,
                    }
                }
            };
            tokio::select! {
                () = tx.closed() => break,
                _ = stopping.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(RECHECK) => {}
                more = heard => if !more { break },
            }
        }
        drop(tx);
        self.forget(id, &mine);
    }
}

/// Publishes only what moved, so that watchers wake for changes of their request alone; a
/// change for many watchers is announced as a burst, so that each connection sends its
/// watchers' messages together.
fn publish(tx: &watch::Sender<Latest>, latest: Latest, bursts: &Bursts) {
    let many = tx.receiver_count() >= BURST_WATCHERS;
    tx.send_if_modified(|old| {
        let moved = match (&*old, &latest) {
            (Latest::View(a), Latest::View(b)) => a.view.request.version != b.view.request.version,
            _ => true,
        };
        if moved {
            *old = latest;
            if many {
                bursts.expect(BURST_WINDOW);
            }
        }
        moved
    });
}

/// One read of the request. While the database is unavailable (a failover, say) it waits and
/// tries again, for as long as someone watches and the server runs: `None` when they stop.
async fn read(
    sources: &Sources,
    id: ChangeRequestId,
    tx: &watch::Sender<Latest>,
    stopping: &mut watch::Receiver<bool>,
) -> Option<Latest> {
    let mut pause = Duration::from_millis(100);
    loop {
        sources.metrics.watch_read();
        match sources.db.read(move |conn| Ok(uc::read(conn, id)?)).await {
            Ok(view) => {
                return Some(Latest::View(Arc::new(Published {
                    view,
                    message: Default::default(),
                })));
            }
            Err(ApiError::Unavailable(_)) => {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = tx.closed() => return None,
                    _ = stopping.wait_for(|stop| *stop) => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Some(Latest::Gone(e.into())),
        }
    }
}
