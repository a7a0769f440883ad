//! Whole table copies in process, on the in-memory item store and a file journal: plan,
//! copy, verify and rollback; a kill at every write, then a rollback or a resumed copy;
//! edits between runs; a table that throttles. No services needed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use tempfile::TempDir;

use super::{plan, rollback, run, CopyCounts, CopySpec, ItemConflict};
use crate::copy::dynamodb::Table;
use crate::copy::item::Item;
use crate::copy::journal::Journal;
use crate::copy::progress::Silent;
use crate::copy::rewrite::Rewriter;
use crate::copy::store::memory::{Faults, MemoryItems, Reads};
use crate::copy::{until_killed, RolledBack};

const KEYS: [&str; 2] = ["PK", "SK"];

fn item(pk: &str, sk: &str, type_name: &str, body: &str) -> Item {
    [("PK", pk), ("SK", sk), ("TYPE", type_name), ("body", body)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
        .collect()
}

/// The item of image `n`; its lines are items under the same partition key.
fn image(n: u32, body: &str) -> Item {
    item(&format!("IMAGE#{n}"), "IMAGE", "IMAGE", body)
}

/// A dev table of 40 items (images and their lines) and a prod table holding 5 of those
/// keys with prod's own content and 3 keys of its own.
struct World {
    store: Arc<MemoryItems>,
    journal_dir: TempDir,
}

impl World {
    fn new() -> World {
        let store = MemoryItems::new();
        store.create("dev", &KEYS);
        store.create("prod", &KEYS);
        for n in 0..8 {
            store.put("dev", image(n, "dev image"));
            for line in 0..4 {
                let pk = format!("IMAGE#{n}");
                store.put(
                    "dev",
                    item(&pk, &format!("LINE#{line}"), "LINE", "dev line"),
                );
            }
        }
        for n in 0..5 {
            store.put("prod", image(n, "prod's own image"));
        }
        for other in 0..3 {
            store.put(
                "prod",
                item(&format!("USER#{other}"), "USER", "USER", "prod only"),
            );
        }
        World {
            store,
            journal_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn spec(&self, on_conflict: ItemConflict) -> CopySpec {
        let table = |name: &str| Table {
            store: self.store.clone(),
            name: name.to_string(),
        };
        CopySpec {
            source: table("dev"),
            target: table("prod"),
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            type_attribute: "TYPE".into(),
            include: None,
            exclude: HashSet::new(),
            rewriter: Rewriter::new(&BTreeMap::new()),
            set_attributes: Vec::new(),
            on_conflict,
            expire_by: None,
            write_order: Vec::new(),
            max_write_rate: None,
            segments: 4,
            mirror: None,
        }
    }

    /// The journal a run opens, as a new process (a resumed run, a destroy) opens it.
    async fn journal(&self) -> Journal {
        Journal::in_folder(self.journal_dir.path().join("prod/stack/copy")).await
    }

    /// A plan, as a resource's preview makes it; `compare_target`: as refresh does.
    async fn plan(&self, spec: &CopySpec, compare_target: bool) -> anyhow::Result<CopyCounts> {
        plan(spec, &self.journal().await, &Silent, compare_target).await
    }

    /// A whole copy, as a resource's up runs it.
    async fn copy(&self, spec: &CopySpec) -> anyhow::Result<CopyCounts> {
        run(spec, &self.journal().await, &Silent, |_| Ok(())).await
    }

    /// Undoes what the journal says the copies wrote.
    async fn roll_back(&self, spec: &CopySpec) -> RolledBack {
        rollback(
            &spec.target,
            &spec.keys,
            &self.journal().await,
            &[],
            &Silent,
        )
        .await
        .unwrap()
    }

    /// From now on the target throttles: a batch write applies at most `writes` of
    /// its requests.
    fn accept_per_batch(&self, writes: usize) {
        self.store.set_faults(Faults {
            accepted_per_batch: Some(writes),
            ..Faults::default()
        });
    }

    fn prod(&self) -> BTreeMap<String, Item> {
        self.store.items("prod")
    }

    /// Prod after a finished copy: dev's items over it, prod's own keys kept.
    fn copied(&self) -> BTreeMap<String, Item> {
        let mut expected = self.store.items("dev");
        expected.extend(
            self.prod()
                .into_iter()
                .filter(|(_, item)| item["TYPE"] == AttributeValue::S("USER".into())),
        );
        expected
    }

    /// Runs a copy that is killed once `writes` items are written: its future is
    /// dropped mid-write, as a SIGKILL leaves it. False when it finished first.
    async fn killed_copy(&self, on_conflict: ItemConflict, writes: u64) -> bool {
        self.store.set_faults(Faults {
            kill_after_writes: Some(writes),
            ..Faults::default()
        });
        let spec = self.spec(on_conflict);
        let killed = until_killed(self.copy(&spec), self.store.killed()).await;
        self.store.set_faults(Faults::default());
        killed
    }
}

#[tokio::test]
async fn a_copy_plans_writes_verifies_and_rolls_back_to_the_original() {
    let world = World::new();
    let original = world.prod();
    let spec = world.spec(ItemConflict::Overwrite);

    let planned = world.plan(&spec, false).await.unwrap();
    assert_eq!((planned.copied, planned.overwritten), (40, 5));
    assert_eq!(world.prod(), original, "a plan wrote");

    let done = world.copy(&spec).await.unwrap();
    assert_eq!((done.copied, done.overwritten), (40, 5));
    let expected = world.copied();
    assert_eq!(world.prod(), expected);
    let again = world.plan(&spec, true).await.unwrap();
    assert_eq!(again.copied, 0, "a second plan finds work: {again:?}");

    let report = world.roll_back(&spec).await;
    assert_eq!((report.deleted, report.restored), (35, 5));
    assert!(report.left_alone.is_empty(), "{:?}", report.left_alone);
    assert_eq!(world.prod(), original);
}

#[tokio::test]
async fn a_run_scans_the_source_once_and_reads_few_writes_back_by_key() {
    let world = World::new();
    let spec = world.spec(ItemConflict::Overwrite);
    world.copy(&spec).await.unwrap();
    let (dev, prod) = (world.store.reads("dev"), world.store.reads("prod"));
    assert_eq!(dev.scanned, 40, "the source is scanned once, by the plan");
    // The target's index (8 items), then the verification of 40 writes among 43 items:
    // one scan.
    assert_eq!(
        (prod.scanned, prod.got),
        (8 + 43, 5),
        "5 overwritten items backed up"
    );

    world.store.put("dev", image(100, "new on dev"));
    let done = world.copy(&spec).await.unwrap();
    assert_eq!(done.copied, 1);
    assert_eq!(world.store.reads("dev").scanned - dev.scanned, 41);
    let again = world.store.reads("prod");
    assert_eq!(
        (again.scanned - prod.scanned, again.got - prod.got),
        (43, 1),
        "one write among 44 items is read back by key, not by a scan"
    );
    assert_eq!(world.prod(), world.copied());
}

#[tokio::test]
async fn verification_sees_written_items_gone_whether_it_scans_or_reads_by_key() {
    // 40 of 43 items written, verified by a scan; before the last write, someone deletes
    // every key the copy writes.
    let world = World::new();
    let every_key: Vec<Item> = world.store.items("dev").into_values().collect();
    world.store.set_faults(Faults {
        deleted_by_others_after_writes: Some((39, every_key)),
        ..Faults::default()
    });
    let err = world.copy(&world.spec(ItemConflict::Overwrite)).await;
    let message = format!("{:#}", err.unwrap_err());
    assert!(
        message.contains("39 of the 40 items written to table \"prod\" do not read back"),
        "{message}"
    );
    assert_eq!(
        world.store.reads("prod"),
        Reads {
            scanned: 8 + 4,
            got: 5
        }
    );

    // 2 of 45 items written, verified by key; someone deletes both keys before the
    // second write.
    let world = World::new();
    let spec = world.spec(ItemConflict::Overwrite);
    world.copy(&spec).await.unwrap();
    let new = [image(100, "new on dev"), image(101, "new on dev")];
    for item in &new {
        world.store.put("dev", item.clone());
    }
    let before = world.store.reads("prod");
    world.store.set_faults(Faults {
        deleted_by_others_after_writes: Some((world.store.written() + 1, new.to_vec())),
        ..Faults::default()
    });
    let err = world.copy(&spec).await;
    let message = format!("{:#}", err.unwrap_err());
    assert!(
        message.contains("1 of the 2 items written to table \"prod\" do not read back"),
        "{message}"
    );
    let after = world.store.reads("prod");
    assert_eq!(
        (after.scanned - before.scanned, after.got - before.got),
        (43, 1)
    );
}

#[tokio::test]
async fn a_copy_killed_at_any_write_rolls_back_or_resumes_exactly() {
    for writes in 0..40 {
        let killed = World::new();
        let original = killed.prod();
        assert!(killed.killed_copy(ItemConflict::Overwrite, writes).await);
        assert_eq!(killed.store.written(), writes);
        let spec = killed.spec(ItemConflict::Overwrite);
        let report = rollback(
            &spec.target,
            &spec.keys,
            &killed.journal().await,
            &[],
            &Silent,
        )
        .await
        .unwrap();
        assert_eq!(
            killed.prod(),
            original,
            "rollback after a kill at write {writes}"
        );
        assert!(report.left_alone.is_empty(), "kill at {writes}: {report:?}");

        let resumed = World::new();
        assert!(resumed.killed_copy(ItemConflict::Overwrite, writes).await);
        let done = run(
            &spec_of(&resumed),
            &resumed.journal().await,
            &Silent,
            |_| Ok(()),
        )
        .await
        .unwrap();
        assert_eq!(
            resumed.prod(),
            resumed.copied(),
            "resume after write {writes}"
        );
        assert_eq!(done.copied, 40 - writes.min(40), "kill at {writes}");
        let spec = spec_of(&resumed);
        rollback(
            &spec.target,
            &spec.keys,
            &resumed.journal().await,
            &[],
            &Silent,
        )
        .await
        .unwrap();
        assert_eq!(
            resumed.prod(),
            original,
            "rollback of a resumed copy killed at write {writes}"
        );
    }
}

fn spec_of(world: &World) -> CopySpec {
    world.spec(ItemConflict::Overwrite)
}

#[tokio::test]
async fn an_item_prod_edits_after_the_copy_is_theirs_and_survives_rollback() {
    let world = World::new();
    let spec = world.spec(ItemConflict::Skip);
    world.copy(&spec).await.unwrap();
    let edited = item("IMAGE#6", "LINE#1", "LINE", "edited by the prod app");
    world.store.put("prod", edited.clone());
    world
        .store
        .put("dev", item("IMAGE#6", "LINE#1", "LINE", "new on dev"));

    let again = world.copy(&spec).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 40), "{again:?}");
    let report = world.roll_back(&spec).await;
    assert_eq!(report.left_alone.len(), 1, "{report:?}");
    let prod = world.prod();
    assert_eq!(prod.len(), 5 + 3 + 1, "{:?}", prod.keys());
    assert!(prod.values().any(|item| *item == edited));
}

#[tokio::test]
async fn a_throttling_table_is_retried_and_still_copied_exactly() {
    let world = World::new();
    world.accept_per_batch(3);
    let spec = world.spec(ItemConflict::Overwrite);
    let attempts = Arc::new(crate::copy::retry::Attempts::default());
    let done = crate::copy::retry::Attempts::count(attempts.clone(), world.copy(&spec))
        .await
        .unwrap();
    assert_eq!(done.copied, 40);
    assert_eq!(world.prod(), world.copied());
    assert!(attempts.throttles() > 0);
    assert_eq!(attempts.retries(), attempts.throttles());
}

#[tokio::test(start_paused = true)]
async fn a_table_that_accepts_no_write_fails_the_copy_instead_of_hanging() {
    let world = World::new();
    world.accept_per_batch(0);
    let spec = world.spec(ItemConflict::Overwrite);
    let err = world.copy(&spec).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("writing to table \"prod\""), "{message}");
    assert!(
        message.contains("unprocessed 12 times in a row"),
        "{message}"
    );
    assert_eq!(world.store.written(), 0);
}

#[tokio::test]
async fn items_grown_past_400_kb_fail_the_plan_before_anything_is_written() {
    let world = World::new();
    let original = world.prod();
    let mut big = image(9, "");
    // Just under DynamoDB's limit as the source holds it; the attribute set pushes it over.
    big.insert("ocr".into(), AttributeValue::S("x".repeat(400 * 1024 - 60)));
    assert!(crate::copy::item::item_size(&big) <= 400 * 1024);
    world.store.put("dev", big);
    let spec = CopySpec {
        set_attributes: vec![crate::copy::table::SetAttribute {
            types: vec!["IMAGE".into()],
            attribute: "embedding_status".into(),
            value: "NONE".repeat(20),
        }],
        ..world.spec(ItemConflict::Overwrite)
    };
    let err = world.plan(&spec, false).await.unwrap_err().to_string();
    assert!(
        err.starts_with("1 items would be larger than DynamoDB's 400 KB"),
        "{err}"
    );
    assert!(err.contains("IMAGE#9"), "{err}");
    let err = world.copy(&spec).await.unwrap_err();
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(world.prod(), original);
    assert_eq!(world.store.written(), 0);
}

/// A mirror world: dev's 8 images (an image item and 4 lines each) against a prod that
/// holds image 0 as dev has it (but for prod's own embedding status), images 1 to 4
/// with prod's own image item (image 1 with a line dev lacks), image 99 that dev no
/// longer has, and users and a job (not mirrored: only images and lines are selected).
fn mirror_world() -> World {
    let world = World::new();
    for line in 0..4 {
        let mut embedded = item("IMAGE#0", &format!("LINE#{line}"), "LINE", "dev line");
        embedded.insert(
            "embedding_status".into(),
            AttributeValue::S("SUCCESS".into()),
        );
        world.store.put("prod", embedded);
    }
    world.store.put("prod", image(0, "dev image"));
    world.store.put(
        "prod",
        item("IMAGE#1", "LINE#9", "LINE", "a line dev lacks"),
    );
    // Under a key dev's image 5 has, an item of a type not mirrored: overwritten, so
    // backed up first.
    world
        .store
        .put("prod", item("IMAGE#5", "LINE#0", "JOB", "prod's job"));
    world.store.put("prod", image(99, "gone from dev"));
    world
        .store
        .put("prod", item("IMAGE#99", "LINE#0", "LINE", "gone from dev"));
    world
}

fn mirror_spec(world: &World, allow_deletes: bool) -> CopySpec {
    CopySpec {
        include: Some(["IMAGE", "LINE"].map(String::from).into()),
        set_attributes: vec![super::SetAttribute {
            types: vec!["LINE".into()],
            attribute: "embedding_status".into(),
            value: "NONE".into(),
        }],
        mirror: Some(super::Mirror { allow_deletes }),
        ..world.spec(ItemConflict::Skip)
    }
}

/// Prod once mirrored: dev's groups (lines with embedding_status NONE), but image 0 as
/// prod had it, and the users.
fn mirrored(world: &World, original: &BTreeMap<String, Item>) -> BTreeMap<String, Item> {
    let mut expected: BTreeMap<String, Item> = world
        .store
        .items("dev")
        .into_iter()
        .filter(|(_, item)| item["PK"] != AttributeValue::S("IMAGE#0".into()))
        .map(|(id, mut item)| {
            if item["TYPE"] == AttributeValue::S("LINE".into()) {
                item.insert("embedding_status".into(), AttributeValue::S("NONE".into()));
            }
            (id, item)
        })
        .collect();
    expected.extend(
        original
            .iter()
            .filter(|(_, item)| {
                item["PK"] == AttributeValue::S("IMAGE#0".into())
                    || item["TYPE"] == AttributeValue::S("USER".into())
            })
            .map(|(id, item)| (id.clone(), item.clone())),
    );
    expected
}

#[tokio::test]
async fn a_mirror_adds_replaces_and_deletes_groups_and_rollback_restores_each() {
    let world = mirror_world();
    let original = world.prod();

    let err = world
        .plan(&mirror_spec(&world, false), false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 groups of the target are gone from the source, for example IMAGE#99"),
        "{err}"
    );
    assert!(world.copy(&mirror_spec(&world, false)).await.is_err());
    assert_eq!(world.prod(), original, "a refused mirror wrote");

    let spec = mirror_spec(&world, true);
    let planned = world.plan(&spec, false).await.unwrap();
    let groups = super::GroupCounts {
        added: 3,
        replaced: 4,
        deleted: 1,
        unchanged: 1,
    };
    assert_eq!(planned.groups, groups);
    // Images 1-7 and their lines; image 99's two items and image 1's extra line.
    assert_eq!((planned.copied, planned.deleted), (35, 3), "{planned:?}");

    let done = world.copy(&spec).await.unwrap();
    assert_eq!((done.groups, done.copied, done.deleted), (groups, 35, 3));
    assert_eq!(world.prod(), mirrored(&world, &original));
    let again = world.plan(&spec, true).await.unwrap();
    assert_eq!(
        (again.copied, again.deleted, again.groups.unchanged),
        (0, 0, 8),
        "{again:?}"
    );

    let report = world.roll_back(&spec).await;
    assert!(report.left_alone.is_empty(), "{:?}", report.left_alone);
    assert_eq!(world.prod(), original);
}

#[tokio::test]
async fn a_group_someone_else_deletes_during_the_mirror_is_not_counted_as_deleted() {
    let world = mirror_world();
    let original = world.prod();
    let gone: Vec<Item> = original
        .values()
        .filter(|item| item["PK"] == AttributeValue::S("IMAGE#99".into()))
        .cloned()
        .collect();
    assert_eq!(gone.len(), 2);
    // Planned as a group to delete; removed by prod's app while the copy writes.
    world.store.set_faults(Faults {
        deleted_by_others_after_writes: Some((1, gone)),
        ..Faults::default()
    });
    let spec = mirror_spec(&world, true);
    let done = world.copy(&spec).await.unwrap();
    assert_eq!(
        (done.groups.deleted, done.deleted),
        (0, 1),
        "only image 1's extra line was deleted by the mirror: {done:?}"
    );
    assert_eq!(world.prod(), mirrored(&world, &original));
}

#[tokio::test]
async fn a_mirror_killed_at_any_write_rolls_back_or_resumes_exactly() {
    // 35 puts and 3 deletes.
    for writes in 0..38 {
        let killed = mirror_world();
        let original = killed.prod();
        killed.store.set_faults(Faults {
            kill_after_writes: Some(writes),
            ..Faults::default()
        });
        let spec = mirror_spec(&killed, true);
        assert!(until_killed(killed.copy(&spec), killed.store.killed()).await);
        killed.store.set_faults(Faults::default());
        let report = killed.roll_back(&spec).await;
        assert_eq!(
            killed.prod(),
            original,
            "rollback after a kill at write {writes}"
        );
        assert!(report.left_alone.is_empty(), "kill at {writes}: {report:?}");

        let resumed = mirror_world();
        resumed.store.set_faults(Faults {
            kill_after_writes: Some(writes),
            ..Faults::default()
        });
        assert!(
            until_killed(
                resumed.copy(&mirror_spec(&resumed, true)),
                resumed.store.killed()
            )
            .await
        );
        resumed.store.set_faults(Faults::default());
        resumed.copy(&mirror_spec(&resumed, true)).await.unwrap();
        assert_eq!(
            resumed.prod(),
            mirrored(&resumed, &original),
            "resume after write {writes}"
        );
        resumed.roll_back(&mirror_spec(&resumed, true)).await;
        assert_eq!(
            resumed.prod(),
            original,
            "rollback of a resumed mirror killed at write {writes}"
        );
    }
}

/// Prod as two migrations sharing it leave it: A copies dev over prod, then B copies its
/// own 8 images over A's, both with `overwrite`.
struct Shared {
    world: World,
    original: BTreeMap<String, Item>,
    a: CopySpec,
    b: CopySpec,
}

impl Shared {
    async fn copied() -> Shared {
        let world = World::new();
        let original = world.prod();
        world.store.create("dev2", &KEYS);
        for n in 0..8 {
            world.store.put("dev2", image(n, "second dev's image"));
        }
        let a = world.spec(ItemConflict::Overwrite);
        let b = CopySpec {
            source: Table {
                store: world.store.clone(),
                name: "dev2".into(),
            },
            ..world.spec(ItemConflict::Overwrite)
        };
        let shared = Shared {
            world,
            original,
            a,
            b,
        };
        shared.world.copy(&shared.a).await.unwrap();
        run(&shared.b, &shared.journal_b().await, &Silent, |_| Ok(()))
            .await
            .unwrap();
        shared
    }

    async fn journal_b(&self) -> Journal {
        Journal::in_folder(self.world.journal_dir.path().join("prod/other-stack/copy")).await
    }

    /// A's destroy, B sharing the table.
    async fn destroy_a(&self) -> RolledBack {
        let sharers = [self.journal_b().await];
        rollback(
            &self.a.target,
            &self.a.keys,
            &self.world.journal().await,
            &sharers,
            &Silent,
        )
        .await
        .unwrap()
    }

    /// B's destroy, A sharing the table.
    async fn destroy_b(&self) -> RolledBack {
        let sharers = [self.world.journal().await];
        rollback(
            &self.b.target,
            &self.b.keys,
            &self.journal_b().await,
            &sharers,
            &Silent,
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn two_migrations_sharing_a_table_restore_the_original_in_either_destroy_order() {
    for a_first in [true, false] {
        let shared = Shared::copied().await;
        if a_first {
            let report = shared.destroy_a().await;
            // B's 8 images stand over A's: A's backups of them go to B's journal.
            assert_eq!((report.deleted, report.handed_over), (32, 8), "{report:?}");
            assert!(report.left_alone.is_empty(), "{report:?}");
            let report = shared.destroy_b().await;
            assert_eq!((report.deleted, report.restored), (3, 5), "{report:?}");
        } else {
            let report = shared.destroy_b().await;
            assert_eq!(report.restored, 8, "B puts back A's images: {report:?}");
            shared.destroy_a().await;
        }
        assert_eq!(
            shared.world.prod(),
            shared.original,
            "a destroyed first: {a_first}"
        );
    }
}

/// Copies a folder and everything in it.
fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_folder(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_destroy_killed_after_handing_over_hands_nothing_over_twice() {
    let shared = Shared::copied().await;
    // A's destroy runs to its end, but was killed before clearing its journal: the
    // journal is back as it was, and the destroy runs again.
    let a_folder = shared.world.journal_dir.path().join("prod/stack/copy");
    let kept = tempfile::tempdir().unwrap();
    copy_folder(&a_folder, kept.path());
    let first = shared.destroy_a().await;
    assert_eq!(first.handed_over, 8, "{first:?}");
    copy_folder(kept.path(), &a_folder);
    let again = shared.destroy_a().await;
    assert_eq!(again.handed_over, 0, "{again:?}");
    shared.destroy_b().await;
    assert_eq!(shared.world.prod(), shared.original);
}
