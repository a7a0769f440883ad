//! Whole bucket syncs in process, on the in-memory object store and a file journal:
//! plan, copy, verify and rollback, server side and streamed (multipart too); a kill at
//! every write, the write landing or not, then a rollback or a resumed sync; edits
//! between runs. No services needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tempfile::TempDir;

use super::{plan, rollback, run, Archived, OnConflict, SyncCounts, SyncSpec};
use crate::copy::filter::KeyFilter;
use crate::copy::journal::Journal;
use crate::copy::progress::Silent;
use crate::copy::s3::{Bucket, Headers, PART_SIZE};
use crate::copy::store::memory_objects::{Kill, MemoryObjects, Stored};
use crate::copy::store::CopyLimits;
use crate::copy::{until_killed, RolledBack};

/// A dev bucket of 12 images (one larger than a part, with tags and headers) and a prod
/// bucket holding 3 of those keys with prod's own content and 2 keys of its own.
struct World {
    store: Arc<MemoryObjects>,
    journal_dir: TempDir,
}

/// An object's bytes, compared in full and shown by size, so a failure prints short.
#[derive(PartialEq, Eq)]
struct Content(Arc<Vec<u8>>);

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = String::from_utf8_lossy(&self.0[..self.0.len().min(16)]).into_owned();
        write!(f, "{} bytes: {start:?}...", self.0.len())
    }
}

fn image(n: usize) -> Vec<u8> {
    format!("dev image {n} ").repeat(50 + n).into_bytes()
}

impl World {
    fn new() -> World {
        static DATA: std::sync::OnceLock<Arc<MemoryObjects>> = std::sync::OnceLock::new();
        World {
            store: DATA.get_or_init(World::data).fork(),
            journal_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn data() -> Arc<MemoryObjects> {
        let store = MemoryObjects::new();
        store.create("dev");
        store.create("prod");
        for n in 0..12 {
            store.put_object(
                "dev",
                &format!("img/{n:02}.png"),
                &image(n),
                Headers::default(),
            );
        }
        let tagged = Headers {
            content_type: Some("image/tiff".into()),
            tagging: Some("team=ml".into()),
            ..Headers::default()
        };
        let large = b"0123456789abcdef".repeat(PART_SIZE as usize / 16 + 100);
        store.put_object("dev", "img/large.tiff", &large, tagged);
        for n in 0..3 {
            store.put_object(
                "prod",
                &format!("img/{n:02}.png"),
                format!("prod's own {n}").as_bytes(),
                Headers::default(),
            );
        }
        for n in 0..2 {
            store.put_object(
                "prod",
                &format!("keep/{n}.txt"),
                b"prod only",
                Headers::default(),
            );
        }
        store
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket {
            store: self.store.clone(),
            name: name.to_string(),
            expected_owner: None,
        }
    }

    fn spec(&self, server_side: bool) -> SyncSpec {
        SyncSpec {
            source: self.bucket("dev"),
            source_prefix: "img/".into(),
            target: self.bucket("prod"),
            target_prefix: "img/".into(),
            server_side,
            filter: KeyFilter::default(),
            on_conflict: OnConflict::Overwrite,
            delete_extraneous: false,
            archived: Archived::Fail,
            write: Default::default(),
            verify_content: false,
        }
    }

    /// The journal a run opens, as a new process (a resumed run, a destroy) opens it.
    async fn journal(&self) -> Journal {
        Journal::in_folder(self.journal_dir.path().join("prod/stack/sync")).await
    }

    /// A plan against the journal, as a resource's preview makes it.
    async fn plan(&self, spec: &SyncSpec) -> anyhow::Result<SyncCounts> {
        plan(spec, Some(&self.journal().await), &Silent).await
    }

    /// A whole sync, as a resource's up runs it.
    async fn sync(&self, spec: &SyncSpec) -> anyhow::Result<SyncCounts> {
        run(spec, &self.journal().await, &Silent, |_| Ok(())).await
    }

    /// Undoes what the journal says the syncs wrote.
    async fn roll_back(&self, spec: &SyncSpec) -> RolledBack {
        rollback(&spec.target, &self.journal().await, &[], &Silent)
            .await
            .unwrap()
    }

    /// Each object's content and headers, by key.
    fn contents(&self, bucket: &str) -> BTreeMap<String, (Content, Headers)> {
        self.store
            .objects(bucket)
            .into_iter()
            .map(|(key, Stored { bytes, headers, .. })| (key, (Content(bytes), headers)))
            .collect()
    }

    /// Prod after a finished sync: dev's objects over it, prod's own keys kept.
    fn synced(&self) -> BTreeMap<String, (Content, Headers)> {
        let mut expected = self.contents("dev");
        expected.extend(
            self.contents("prod")
                .into_iter()
                .filter(|(key, _)| key.starts_with("keep/")),
        );
        expected
    }

    /// Runs a sync that is killed at write `kill.at`: its future is dropped mid-write,
    /// as a SIGKILL leaves it. False when it finished first.
    async fn killed_sync(&self, server_side: bool, kill: Kill) -> bool {
        self.store.set_kill(Some(kill));
        let spec = self.spec(server_side);
        let killed = until_killed(self.sync(&spec), self.store.killed()).await;
        self.store.set_kill(None);
        killed
    }
}

#[tokio::test]
async fn a_sync_plans_copies_verifies_and_rolls_back_to_the_original() {
    for server_side in [true, false] {
        let world = World::new();
        let original = world.contents("prod");
        let spec = world.spec(server_side);

        let planned = world.plan(&spec).await.unwrap();
        assert_eq!((planned.copied, planned.overwritten), (13, 3));
        assert_eq!(world.contents("prod"), original, "a plan wrote");

        let done = world.sync(&spec).await.unwrap();
        assert_eq!(
            (done.copied, done.overwritten),
            (13, 3),
            "server side: {server_side}"
        );
        assert_eq!(
            done.verified_by_size, 0,
            "server side: {server_side}: {done:?}"
        );
        assert_eq!(world.contents("prod"), world.synced());
        let again = world.plan(&spec).await.unwrap();
        assert_eq!(again.copied, 0, "a second plan finds work: {again:?}");

        let report = world.roll_back(&spec).await;
        assert_eq!((report.deleted, report.restored), (10, 3));
        assert!(report.left_alone.is_empty(), "{:?}", report.left_alone);
        assert_eq!(
            world.contents("prod"),
            original,
            "server side: {server_side}"
        );
    }
}

#[tokio::test]
async fn a_sync_killed_at_any_write_rolls_back_or_resumes_exactly() {
    for server_side in [true, false] {
        for lands in [false, true] {
            for at in 0..13 {
                let kill = Kill { at, lands };
                let case =
                    format!("server side {server_side}, kill at write {at}, landing {lands}");
                let killed = World::new();
                let original = killed.contents("prod");
                assert!(killed.killed_sync(server_side, kill).await, "{case}");
                assert_eq!(killed.store.writes(), at + u64::from(lands), "{case}");
                let spec = killed.spec(server_side);
                let report = rollback(&spec.target, &killed.journal().await, &[], &Silent)
                    .await
                    .unwrap();
                assert_eq!(killed.contents("prod"), original, "rollback: {case}");
                assert!(report.left_alone.is_empty(), "{case}: {report:?}");

                let resumed = World::new();
                assert!(resumed.killed_sync(server_side, kill).await, "{case}");
                let spec = resumed.spec(server_side);
                run(&spec, &resumed.journal().await, &Silent, |_| Ok(()))
                    .await
                    .unwrap();
                assert_eq!(resumed.contents("prod"), resumed.synced(), "resume: {case}");
                rollback(&spec.target, &resumed.journal().await, &[], &Silent)
                    .await
                    .unwrap();
                assert_eq!(
                    resumed.contents("prod"),
                    original,
                    "rollback after resume: {case}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_object_prod_edits_after_the_sync_is_theirs_and_survives_rollback() {
    let world = World::new();
    let spec = world.spec(true);
    world.sync(&spec).await.unwrap();
    world.store.put_object(
        "prod",
        "img/05.png",
        b"edited by the prod app",
        Headers::default(),
    );
    world
        .store
        .put_object("dev", "img/05.png", b"new on dev", Headers::default());
    let skip = SyncSpec {
        on_conflict: OnConflict::Skip,
        ..world.spec(true)
    };
    let again = world.sync(&skip).await.unwrap();
    assert_eq!(again.copied, 0, "{again:?}");
    let report = world.roll_back(&spec).await;
    assert_eq!(report.left_alone, ["img/05.png"]);
    let prod = world.contents("prod");
    assert_eq!(
        prod["img/05.png"].0 .0.as_slice(),
        b"edited by the prod app"
    );
    assert_eq!(prod.len(), 3 + 2 + 1, "{:?}", prod.keys());
}

#[tokio::test]
async fn keys_s3_cannot_hold_fail_the_plan_before_anything_is_written() {
    let world = World::new();
    let original = world.contents("prod");
    let long = format!("img/{}.png", "n".repeat(1100));
    world
        .store
        .put_object("dev", &long, b"long", Headers::default());
    world
        .store
        .put_object("dev", "img/", b"", Headers::default());
    let unprefixed = SyncSpec {
        target_prefix: String::new(),
        ..world.spec(true)
    };
    let err = world.plan(&unprefixed).await.unwrap_err().to_string();
    assert!(
        err.starts_with("2 source objects would get a target key S3 cannot hold"),
        "{err}"
    );
    assert!(
        err.contains("\"\" (0 bytes)") && err.contains("(1104 bytes)"),
        "{err}"
    );
    let err = world.sync(&unprefixed).await.unwrap_err();
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(world.contents("prod"), original);
    assert!(!world.journal().await.has_records().await.unwrap());
}

#[tokio::test]
async fn a_pointer_moved_by_someone_else_is_not_overwritten_and_survives_rollback() {
    let world = World::new();
    let prod = world.bucket("prod");
    let journal = world.journal().await;
    let pointer = "lines/snapshot/latest-pointer.txt";
    world
        .store
        .put_object("prod", pointer, b"v1", Headers::default());
    let read = world.store.objects("prod")[pointer].etag.clone();
    // The compactor promotes v3 between the read and the move.
    world
        .store
        .put_object("prod", pointer, b"v3", Headers::default());
    let moved = !super::put_journalled(&prod, pointer, b"v2".to_vec(), &journal, Some(Some(&read)))
        .await
        .unwrap();
    assert!(moved);
    let absent_then = super::put_journalled(&prod, pointer, b"v2".to_vec(), &journal, Some(None))
        .await
        .unwrap();
    assert!(
        !absent_then,
        "a pointer that appeared meanwhile was overwritten"
    );
    assert_eq!(world.contents("prod")[pointer].0 .0.as_slice(), b"v3");

    // The journal backed up what the pointer held at the move (v3): nothing of this
    // resource's is there to undo.
    let report = rollback(&prod, &world.journal().await, &[], &Silent)
        .await
        .unwrap();
    assert_eq!((report.deleted, report.restored), (0, 0), "{report:?}");
    assert_eq!(world.contents("prod")[pointer].0 .0.as_slice(), b"v3");

    // Unmoved, it moves.
    let current = world.store.objects("prod")[pointer].etag.clone();
    let journal = world.journal().await;
    assert!(super::put_journalled(
        &prod,
        pointer,
        b"v2".to_vec(),
        &journal,
        Some(Some(&current))
    )
    .await
    .unwrap());
    assert_eq!(world.contents("prod")[pointer].0 .0.as_slice(), b"v2");
}

#[tokio::test]
async fn what_no_checksum_covers_is_proven_by_reading_both_when_asked() {
    for verify_content in [false, true] {
        let world = World::new();
        world
            .store
            .put_multipart_object("dev", "img/uploaded-in-parts.bin", b"no checksum kept");
        let spec = SyncSpec {
            verify_content,
            ..world.spec(true)
        };
        let done = world.sync(&spec).await.unwrap();
        let (by_content, by_size) = (done.verified_by_content, done.verified_by_size);
        match verify_content {
            false => assert_eq!((by_content, by_size), (0, 1), "{done:?}"),
            true => assert_eq!((by_content, by_size), (1, 0), "{done:?}"),
        }
        assert_eq!(world.contents("prod"), world.synced());
    }
}

#[tokio::test]
async fn streamed_copies_are_proven_by_checksums_or_where_the_target_keeps_none_by_etags() {
    for target_keeps_checksums in [true, false] {
        let world = World::new();
        if !target_keeps_checksums {
            world.store.keep_no_checksums("prod");
        }
        let done = world.sync(&world.spec(false)).await.unwrap();
        let proven = (
            done.verified_by_checksum,
            done.verified_by_etag,
            done.verified_by_size,
        );
        match target_keeps_checksums {
            true => assert_eq!(proven, (13, 0, 0), "{done:?}"),
            false => assert_eq!(proven, (0, 13, 0), "{done:?}"),
        }
        assert_eq!(world.contents("prod"), world.synced());
    }
}

/// Copies above 4 KiB go in 1 MiB parts, so the 8 MiB image takes S3's path for objects
/// above 5 GiB.
const SMALL_COPY_LIMITS: CopyLimits = CopyLimits {
    single: 4096,
    part: 1024 * 1024,
};

#[tokio::test]
async fn a_copy_in_parts_keeps_headers_and_tags_and_is_proven_by_the_whole_checksum() {
    let world = World::new();
    world.store.set_copy_limits(SMALL_COPY_LIMITS);
    let original = world.contents("prod");
    let spec = world.spec(true);
    let done = world.sync(&spec).await.unwrap();
    assert_eq!(done.copied, 13, "{done:?}");
    // The 12 small ones by their MD5 ETags, the one in parts by its CRC64NVME.
    assert_eq!(
        (done.verified_by_checksum, done.verified_by_size),
        (1, 0),
        "{done:?}"
    );
    assert_eq!(world.contents("prod"), world.synced());
    let (source, copied) = (
        &world.store.objects("dev")["img/large.tiff"],
        &world.store.objects("prod")["img/large.tiff"],
    );
    assert!(copied.etag.ends_with("-9\""), "{}", copied.etag);
    assert!(copied.checksum.is_some() && copied.checksum == source.checksum);

    world.roll_back(&spec).await;
    assert_eq!(world.contents("prod"), original);
}

#[tokio::test]
async fn a_source_replaced_during_a_copy_in_parts_fails_it_and_nothing_spliced_is_left() {
    let world = World::new();
    world.store.set_copy_limits(SMALL_COPY_LIMITS);
    world
        .store
        .replace_after_part_copy("dev", "img/large.tiff", b"replaced by dev's app");
    let original = world.contents("prod");
    let spec = world.spec(true);
    let err = format!("{:#}", world.sync(&spec).await.unwrap_err());
    assert!(err.contains("PreconditionFailed"), "{err}");
    assert!(
        !world.contents("prod").contains_key("img/large.tiff"),
        "an object spliced from two versions was written"
    );

    // The next run copies the new version whole; a rollback undoes both runs.
    world.sync(&spec).await.unwrap();
    assert_eq!(world.contents("prod"), world.synced());
    assert_eq!(
        world.contents("prod")["img/large.tiff"].0 .0.as_slice(),
        b"replaced by dev's app"
    );
    world.roll_back(&spec).await;
    assert_eq!(world.contents("prod"), original);
}

/// Prod as two syncs sharing it leave it: A syncs dev over prod, then B syncs its own 12
/// images over A's, both with `overwrite`.
struct Shared {
    world: World,
    original: BTreeMap<String, (Content, Headers)>,
    a: SyncSpec,
    b: SyncSpec,
}

impl Shared {
    async fn synced() -> Shared {
        let world = World::new();
        let original = world.contents("prod");
        world.store.create("dev2");
        for n in 0..12 {
            world.store.put_object(
                "dev2",
                &format!("img/{n:02}.png"),
                format!("second dev's image {n}").as_bytes(),
                Headers::default(),
            );
        }
        let a = world.spec(true);
        let b = SyncSpec {
            source: world.bucket("dev2"),
            ..world.spec(true)
        };
        let shared = Shared {
            world,
            original,
            a,
            b,
        };
        shared.world.sync(&shared.a).await.unwrap();
        run(&shared.b, &shared.journal_b().await, &Silent, |_| Ok(()))
            .await
            .unwrap();
        shared
    }

    async fn journal_b(&self) -> Journal {
        Journal::in_folder(self.world.journal_dir.path().join("prod/other-stack/sync")).await
    }

    /// A's destroy, B sharing the bucket.
    async fn destroy_a(&self) -> RolledBack {
        let sharers = [self.journal_b().await];
        rollback(
            &self.a.target,
            &self.world.journal().await,
            &sharers,
            &Silent,
        )
        .await
        .unwrap()
    }

    /// B's destroy, A sharing the bucket.
    async fn destroy_b(&self) -> RolledBack {
        let sharers = [self.world.journal().await];
        rollback(&self.b.target, &self.journal_b().await, &sharers, &Silent)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn two_syncs_sharing_a_bucket_restore_the_original_in_either_destroy_order() {
    for a_first in [true, false] {
        let shared = Shared::synced().await;
        if a_first {
            let report = shared.destroy_a().await;
            // B's 12 images stand over A's: A's backups of prod's 3 go to B's journal.
            assert_eq!((report.deleted, report.handed_over), (1, 12), "{report:?}");
            assert!(report.left_alone.is_empty(), "{report:?}");
            let report = shared.destroy_b().await;
            assert_eq!((report.deleted, report.restored), (9, 3), "{report:?}");
        } else {
            let report = shared.destroy_b().await;
            assert_eq!(report.restored, 12, "B puts back A's images: {report:?}");
            shared.destroy_a().await;
        }
        assert_eq!(
            shared.world.contents("prod"),
            shared.original,
            "a destroyed first: {a_first}"
        );
    }
}

#[tokio::test]
async fn source_objects_encrypted_with_a_customer_key_fail_the_plan_before_anything_is_written() {
    let world = World::new();
    let original = world.contents("prod");
    world.store.encrypt_with_customer_key("dev", "img/07.png");
    world.store.encrypt_with_customer_key("dev", "img/04.png");
    let spec = world.spec(true);
    let err = world.plan(&spec).await.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "2 source objects are encrypted with a key their writer provided (SSE-C), \
             for example s3://dev/img/04.png, s3://dev/img/07.png"
        ),
        "{err}"
    );
    assert_eq!(world.contents("prod"), original);
    assert!(!world.journal().await.has_records().await.unwrap());

    // Only objects still to copy are asked about: one already copied stops nothing.
    let world = World::new();
    let spec = world.spec(true);
    world.sync(&spec).await.unwrap();
    world.store.encrypt_with_customer_key("dev", "img/04.png");
    assert_eq!(world.plan(&spec).await.unwrap().copied, 0);
}
