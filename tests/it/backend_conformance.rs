//! Backend conformance: the same tests run against every provisioning queue (file, Redis) and
//! every SCIM store (memory, file, Redis), one module per backend instantiated by a macro, so a
//! backend added later gets every case by adding one line, and a behaviour one backend lacks shows
//! up as a red test in that backend's module.
//!
//! The queue cases exercise what the reconciler and the executor rely on through [`WorkQueue`]:
//! batching per account, settling done / dead / changed items, and that an enqueued item survives
//! reopening the queue. Behaviours that differ by design are left to the backends' own tests
//! (pausing: the file queue's worker sleeps itself, the Redis queue pauses every replica; the pass
//! lease: only Redis refuses a second holder).
//!
//! The SCIM cases run [`ScimService`] over each store: create and read back, userName uniqueness,
//! a filtered list, delete, and (stores that persist: file, Redis) that an acknowledged change
//! survives a restart of the service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use storegate::clock::SystemClock;
use storegate::provisioning::queue::file::FileQueue;
use storegate::provisioning::queue::redis::RedisQueue;
use storegate::provisioning::queue::{BATCH, Item, WorkQueue};
use storegate::provisioning::reconcile::{Action, CustomerState};
use storegate::provisioning::scim::ScimService;
use storegate::provisioning::scim::redis_store::RedisScimStore;
use storegate::provisioning::scim::store::{FileStore, Kind, MemoryStore, ScimStore};
use storegate::provisioning::scim::wire::ListQuery;
use storegate::secret::Secret;
use storegate::store::RedisHandle;

use crate::support::redis::RedisServer;

const PREFIX: &str = "storegate:";
const ACCOUNTS: [&str; 2] = ["store1", "store2"];

/// A private folder per test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "storegate-conformance-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn redis_handle(server: &RedisServer) -> RedisHandle {
    RedisHandle::new(&Secret::new(server.url()), Duration::from_secs(2)).expect("redis handle")
}

// ---------------------------------------------------------------------------------------------
// Provisioning queues

/// Where a queue keeps its items; [`QueueHome::open`] opens a queue on it (again after a
/// "restart").
enum QueueHome {
    File(PathBuf),
    Redis(RedisServer),
}

impl QueueHome {
    fn file() -> QueueHome {
        QueueHome::File(scratch("queue").join("queue.json"))
    }

    fn redis() -> QueueHome {
        QueueHome::Redis(RedisServer::start())
    }

    fn open(&self) -> Box<dyn WorkQueue> {
        match self {
            QueueHome::File(path) => Box::new(FileQueue::open(path).expect("open file queue")),
            QueueHome::Redis(server) => Box::new(RedisQueue::new(
                redis_handle(server),
                PREFIX,
                ACCOUNTS.iter().map(|a| a.to_string()).collect(),
                Duration::from_secs(60),
            )),
        }
    }
}

fn delete(account: &str, id: u64) -> Action {
    Action::Delete {
        account: account.into(),
        id,
        email: format!("user{id}@corp.example"),
        before: CustomerState {
            first_name: "U".into(),
            last_name: format!("{id}"),
            channel_ids: Some(vec![1]),
            customer_group_id: 0,
        },
    }
}

fn ids(items: &[Item]) -> Vec<u64> {
    let mut v: Vec<u64> = items
        .iter()
        .map(|i| match &i.action {
            Action::Delete { id, .. } => *id,
            other => panic!("unexpected action {other:?}"),
        })
        .collect();
    v.sort();
    v
}

mod queue_cases {
    use super::*;

    pub async fn an_empty_queue_has_nothing_to_hand_out(home: QueueHome) {
        let q = home.open();
        assert_eq!(q.len().await.expect("len"), 0);
        assert!(q.is_empty().await.expect("is_empty"));
        assert!(q.accounts().await.expect("accounts").is_empty());
        assert!(q.next_batch("store1").await.expect("batch").is_empty());
        assert!(q.dead_letters().await.expect("dead").is_empty());
        assert_eq!(q.stats().await.expect("stats").dead_letters, 0);
    }

    pub async fn batches_hold_one_account_and_at_most_batch_items(home: QueueHome) {
        let q = home.open();
        let mut actions: Vec<Action> = (1..=12).map(|i| delete("store1", i)).collect();
        actions.push(delete("store2", 100));
        q.enqueue("run-1", actions).await.expect("enqueue");
        assert_eq!(q.len().await.expect("len"), 13);
        let mut accounts = q.accounts().await.expect("accounts");
        accounts.sort();
        assert_eq!(accounts, ["store1", "store2"]);
        let batch = q.next_batch("store1").await.expect("batch");
        assert_eq!(batch.len(), BATCH, "a full batch of one kind");
        assert!(batch.iter().all(|i| i.action.account() == "store1"));
        assert!(batch.iter().all(|i| i.run == "run-1"));
        let other = q.next_batch("store2").await.expect("batch");
        assert_eq!(ids(&other), [100]);
    }

    pub async fn settled_items_leave_and_dead_ones_keep_their_reason(home: QueueHome) {
        let q = home.open();
        q.enqueue("run-2", (1..=3).map(|i| delete("store1", i)).collect())
            .await
            .expect("enqueue");
        let batch = q.next_batch("store1").await.expect("batch");
        assert_eq!(ids(&batch), [1, 2, 3]);
        let (dead, done) = batch.split_at(1);
        q.settle(
            done,
            &[(dead[0].clone(), "refused: 422 email".into())],
            Vec::new(),
        )
        .await
        .expect("settle");
        assert_eq!(q.len().await.expect("len"), 0, "nothing left to do");
        assert!(q.next_batch("store1").await.expect("batch").is_empty());
        let letters = q.dead_letters().await.expect("dead");
        assert_eq!(letters.len(), 1);
        assert_eq!(ids(&[letters[0].0.clone()]), [1]);
        assert_eq!(letters[0].1, "refused: 422 email");
        assert_eq!(q.stats().await.expect("stats").dead_letters, 1);
    }

    pub async fn a_changed_item_comes_back_with_its_attempts(home: QueueHome) {
        let q = home.open();
        q.enqueue("run-3", vec![delete("store1", 7)])
            .await
            .expect("enqueue");
        let mut batch = q.next_batch("store1").await.expect("batch");
        assert_eq!(batch.len(), 1);
        let mut failed = batch.remove(0);
        failed.attempts += 1;
        q.settle(&[], &[], vec![failed]).await.expect("settle");
        assert_eq!(q.len().await.expect("len"), 1, "still queued");
        let again = q.next_batch("store1").await.expect("batch");
        assert_eq!(ids(&again), [7]);
        assert_eq!(again[0].attempts, 1, "one failed attempt remembered");
    }

    pub async fn queued_items_survive_reopening_the_queue(home: QueueHome) {
        {
            let q = home.open();
            q.enqueue("run-4", (1..=4).map(|i| delete("store2", i)).collect())
                .await
                .expect("enqueue");
            let batch = q.next_batch("store2").await.expect("batch");
            q.settle(&batch[..1], &[], Vec::new())
                .await
                .expect("settle");
        }
        let reopened = home.open();
        assert_eq!(reopened.len().await.expect("len"), 3);
        assert_eq!(reopened.accounts().await.expect("accounts"), ["store2"]);
    }
}

/// The queue cases against one backend: `$home` makes a fresh [`QueueHome`].
macro_rules! queue_conformance {
    ($backend:ident, $home:expr) => {
        mod $backend {
            use super::queue_cases as cases;
            use super::*;

            #[tokio::test]
            async fn an_empty_queue_has_nothing_to_hand_out() {
                cases::an_empty_queue_has_nothing_to_hand_out($home).await;
            }
            #[tokio::test]
            async fn batches_hold_one_account_and_at_most_batch_items() {
                cases::batches_hold_one_account_and_at_most_batch_items($home).await;
            }
            #[tokio::test]
            async fn settled_items_leave_and_dead_ones_keep_their_reason() {
                cases::settled_items_leave_and_dead_ones_keep_their_reason($home).await;
            }
            #[tokio::test]
            async fn a_changed_item_comes_back_with_its_attempts() {
                cases::a_changed_item_comes_back_with_its_attempts($home).await;
            }
            #[tokio::test]
            async fn queued_items_survive_reopening_the_queue() {
                cases::queued_items_survive_reopening_the_queue($home).await;
            }
        }
    };
}

queue_conformance!(file_queue, QueueHome::file());
queue_conformance!(redis_queue, QueueHome::redis());

// ---------------------------------------------------------------------------------------------
// SCIM stores

/// Where a SCIM store keeps its resources; [`StoreHome::open`] opens a store on it.
enum StoreHome {
    Memory,
    File(PathBuf),
    Redis(RedisServer),
}

impl StoreHome {
    fn memory() -> StoreHome {
        StoreHome::Memory
    }

    fn file() -> StoreHome {
        StoreHome::File(scratch("scim"))
    }

    fn redis() -> StoreHome {
        StoreHome::Redis(RedisServer::start())
    }

    fn persists(&self) -> bool {
        !matches!(self, StoreHome::Memory)
    }

    async fn open(&self) -> ScimService {
        let store: Arc<dyn ScimStore> = match self {
            StoreHome::Memory => Arc::new(MemoryStore),
            StoreHome::File(dir) => Arc::new(FileStore::open(dir).expect("file store")),
            StoreHome::Redis(server) => Arc::new(RedisScimStore::new(redis_handle(server), PREFIX)),
        };
        ScimService::open(store, Arc::new(SystemClock))
            .await
            .expect("open SCIM service")
    }
}

const BASE: &str = "https://gateway.corp.example/scim/v2";

fn mia() -> serde_json::Value {
    json!({
        "userName": "mia@corp.example",
        "externalId": "guid-mia",
        "name": {"givenName": "Mia", "familyName": "Merch"},
    })
}

fn filtered(filter: &str) -> ListQuery {
    serde_json::from_value(json!({ "filter": filter })).expect("query")
}

mod scim_cases {
    use super::*;

    pub async fn a_created_user_reads_back(home: StoreHome) {
        let scim = home.open().await;
        let (created, _) = scim.create(Kind::User, mia(), BASE).await.expect("create");
        let id = created["id"].as_str().expect("id");
        let read = scim.get(Kind::User, id, BASE).await.expect("get");
        assert_eq!(read["userName"], "mia@corp.example");
        assert_eq!(read["externalId"], "guid-mia");
        assert_eq!(read["name"]["givenName"], "Mia");
    }

    pub async fn a_taken_user_name_is_refused_with_409(home: StoreHome) {
        let scim = home.open().await;
        scim.create(Kind::User, mia(), BASE).await.expect("create");
        let mut twin = mia();
        twin["userName"] = json!("MIA@corp.example");
        twin["externalId"] = json!("guid-other");
        let err = scim
            .create(Kind::User, twin, BASE)
            .await
            .expect_err("a second mia");
        assert_eq!(err.status, 409, "{err:?}");
        let all = scim
            .list(Kind::User, &ListQuery::default(), BASE)
            .await
            .expect("list");
        assert_eq!(all.total_results, 1, "nothing stored for the refused twin");
    }

    pub async fn a_filtered_list_finds_exactly_the_user(home: StoreHome) {
        let scim = home.open().await;
        scim.create(Kind::User, mia(), BASE).await.expect("create");
        let mut other = mia();
        other["userName"] = json!("ola@corp.example");
        other["externalId"] = json!("guid-ola");
        scim.create(Kind::User, other, BASE).await.expect("create");
        let found = scim
            .list(
                Kind::User,
                &filtered("userName eq \"mia@corp.example\""),
                BASE,
            )
            .await
            .expect("list");
        assert_eq!(found.total_results, 1);
        assert_eq!(found.resources[0]["externalId"], "guid-mia");
    }

    pub async fn a_deleted_user_is_gone(home: StoreHome) {
        let scim = home.open().await;
        let (created, _) = scim.create(Kind::User, mia(), BASE).await.expect("create");
        let id = created["id"].as_str().expect("id");
        scim.delete(Kind::User, id, None).await.expect("delete");
        let err = scim
            .get(Kind::User, id, BASE)
            .await
            .expect_err("deleted user");
        assert_eq!(err.status, 404, "{err:?}");
    }

    pub async fn an_acknowledged_change_survives_a_restart(home: StoreHome) {
        assert!(home.persists(), "only for stores that persist");
        let id = {
            let scim = home.open().await;
            let (created, _) = scim.create(Kind::User, mia(), BASE).await.expect("create");
            created["id"].as_str().expect("id").to_owned()
        };
        let restarted = home.open().await;
        let read = restarted.get(Kind::User, &id, BASE).await.expect("get");
        assert_eq!(read["userName"], "mia@corp.example");
    }
}

/// The SCIM cases against one store: `$home` makes a fresh [`StoreHome`]. The restart case is
/// below, for the stores that persist (the memory store keeps nothing by design).
macro_rules! scim_store_conformance {
    ($backend:ident, $home:expr) => {
        mod $backend {
            use super::scim_cases as cases;
            use super::*;

            #[tokio::test]
            async fn a_created_user_reads_back() {
                cases::a_created_user_reads_back($home).await;
            }
            #[tokio::test]
            async fn a_taken_user_name_is_refused_with_409() {
                cases::a_taken_user_name_is_refused_with_409($home).await;
            }
            #[tokio::test]
            async fn a_filtered_list_finds_exactly_the_user() {
                cases::a_filtered_list_finds_exactly_the_user($home).await;
            }
            #[tokio::test]
            async fn a_deleted_user_is_gone() {
                cases::a_deleted_user_is_gone($home).await;
            }
        }
    };
}

scim_store_conformance!(memory_scim_store, StoreHome::memory());
scim_store_conformance!(file_scim_store, StoreHome::file());
scim_store_conformance!(redis_scim_store, StoreHome::redis());

/// The restart case, for the stores that persist.
mod restart {
    use super::scim_cases as cases;
    use super::*;

    #[tokio::test]
    async fn file_scim_store_keeps_an_acknowledged_change() {
        cases::an_acknowledged_change_survives_a_restart(StoreHome::file()).await;
    }
    #[tokio::test]
    async fn redis_scim_store_keeps_an_acknowledged_change() {
        cases::an_acknowledged_change_survives_a_restart(StoreHome::redis()).await;
    }
}
