//! The lifecycle policy of the real resources, through the gRPC service: what preview
//! writes (nothing), what Diff answers for each kind of change, what Create and Update
//! copy, and what Delete restores.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;

use super::{unique, Harness};

fn urn(kind: &str) -> String {
    format!(
        "urn:pulumi:test::harness::stackmigrate:index:{kind}::{}",
        unique("r")
    )
}

#[tokio::test]
async fn bucket_sync_previews_copies_diffs_replaces_and_rolls_back() {
    let h = Harness::new().await;
    let (source, target) = (h.bucket("dev").await, h.bucket("prod").await);
    for key in ["a.png", "b.png", "skip.json"] {
        h.put(&source, key, &format!("dev {key}")).await;
    }
    h.put(&target, "a.png", "prod's own a").await;
    let before = h.contents(&target).await;
    let urn = urn("BucketSync");
    let inputs = json!({"sourceBucket": source, "targetBucket": target, "exclude": ["*.json"]});

    let bad = json!({"sourceBucket": source, "targetBucket": target, "exclude": ["[ab"]});
    let failures = h.check(&urn, bad).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "exclude[0]");
    assert!(h.check(&urn, inputs.clone()).await.is_empty());

    let (id, planned) = h.create(&urn, inputs.clone(), true).await.unwrap();
    assert!(id.is_empty(), "a preview has no ID");
    assert_eq!(planned["objectsCopied"], 2);
    assert_eq!(planned["objectsOverwritten"], 1);
    assert_eq!(planned["objectsExcluded"], 1);
    assert_eq!(h.contents(&target).await, before, "preview wrote");

    let (id, state) = h.create(&urn, inputs.clone(), false).await.unwrap();
    assert_eq!(
        id,
        crate::resources::journal_path(&urn),
        "the ID names the journal"
    );
    assert_eq!(state["verified"], true);
    assert_eq!(
        h.contents(&target).await,
        [
            ("a.png".to_string(), "dev a.png".to_string()),
            ("b.png".to_string(), "dev b.png".to_string())
        ]
    );

    let unchanged = h.diff(&urn, (&inputs, &state), inputs.clone()).await;
    assert!(!unchanged.changed, "{unchanged:?}");

    h.put(&source, "c.png", "dev c.png").await;
    let lagging = h.diff(&urn, (&inputs, &state), inputs.clone()).await;
    assert!(
        lagging.changed && lagging.replaces.is_empty(),
        "{lagging:?}"
    );
    assert_eq!(
        lagging.detailed,
        [("objectsCopied".to_string(), false, false)]
    );
    let planned = h.update(&urn, &state, inputs.clone(), true).await.unwrap();
    assert_eq!(planned["objectsCopied"], 1);
    assert_eq!(h.contents(&target).await.len(), 2, "preview wrote");
    let state = h.update(&urn, &state, inputs.clone(), false).await.unwrap();
    assert_eq!(state["objectsCopied"], 1);
    assert_eq!(h.contents(&target).await.len(), 3);

    let filters = json!({"sourceBucket": source, "targetBucket": target, "exclude": []});
    let updated = h.diff(&urn, (&inputs, &state), filters).await;
    assert_eq!(updated.detailed, [("exclude".to_string(), false, true)]);
    let moved = json!({"sourceBucket": source, "targetBucket": target, "exclude": ["*.json"], "targetPrefix": "v2/"});
    let replaced = h.diff(&urn, (&inputs, &state), moved).await;
    assert_eq!(replaced.replaces, ["targetPrefix"]);

    h.delete(&urn, &state).await.unwrap();
    assert_eq!(h.contents(&target).await, before, "rollback restores prod");
}

#[tokio::test]
async fn a_run_the_engine_never_got_stops_a_destroy_until_this_deployment_declares_it() {
    let h = Harness::new().await;
    let (source, target) = (h.bucket("dev").await, h.bucket("prod").await);
    h.put(&source, "a.png", "dev a").await;
    let finished = urn("BucketSync");
    let inputs = json!({"sourceBucket": source, "targetBucket": target});
    let (_, state) = h.create(&finished, inputs.clone(), false).await.unwrap();
    let runs = h.journal.path().join("%runs/harness/test");
    let announced = || {
        std::fs::read_dir(&runs)
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    assert_eq!(
        announced(),
        0,
        "a Create the engine got is no longer announced"
    );

    // A run of this stack that another deployment started and never answered.
    let lost = urn("BucketSync");
    std::fs::create_dir_all(&runs).unwrap();
    let note = json!({"urn": lost, "journal": "file:///elsewhere", "deployment": "ci-runner/4242"});
    std::fs::write(runs.join("lost.json"), note.to_string()).unwrap();
    let refused = h.delete(&finished, &state).await.unwrap_err();
    assert!(refused.contains("nothing was rolled back"), "{refused}");
    let import = format!(
        "pulumi import stackmigrate:index:BucketSync {} {}",
        lost.rsplit("::").next().unwrap(),
        crate::resources::journal_path(&lost)
    );
    assert!(refused.contains(&import), "{refused}");
    assert_eq!(
        h.contents(&target).await,
        [("a.png".to_string(), "dev a".to_string())],
        "a refused destroy undoes nothing"
    );

    // This deployment declares that resource, so it adopts the run: the destroy goes on.
    assert!(h.check(&lost, inputs).await.is_empty());
    h.delete(&finished, &state).await.unwrap();
    assert!(h.contents(&target).await.is_empty(), "rolled back");
}

#[tokio::test]
async fn a_note_an_answered_create_could_not_remove_goes_when_the_engine_hands_its_state_back() {
    let h = Harness::new().await;
    let source = h.bucket("dev").await;
    let (prod_a, prod_b) = (h.bucket("prod").await, h.bucket("prod").await);
    h.put(&source, "a.png", "dev a").await;
    let (held, other) = (urn("BucketSync"), urn("BucketSync"));
    let held_inputs = json!({"sourceBucket": source, "targetBucket": prod_a});
    let (_, held_state) = h.create(&held, held_inputs.clone(), false).await.unwrap();
    let (_, other_state) = h
        .create(
            &other,
            json!({"sourceBucket": source, "targetBucket": prod_b}),
            false,
        )
        .await
        .unwrap();

    // `held`'s Create answered, but its note stayed: the journals were unreachable then.
    let runs = h.journal.path().join("%runs/harness/test");
    let stale = runs.join(crate::resources::note_name(&held));
    let put_stale = || {
        std::fs::create_dir_all(&runs).unwrap();
        let note =
            json!({"urn": held, "journal": "file:///elsewhere", "deployment": "ci-runner/4242"});
        std::fs::write(&stale, note.to_string()).unwrap();
    };
    put_stale();
    let refused = h.delete(&other, &other_state).await.unwrap_err();
    assert!(
        refused.contains("run `pulumi refresh`, which removes the note"),
        "{refused}"
    );

    // A refresh hands the state back: the note goes, and the destroy goes on.
    h.refresh(&held, &held_state, held_inputs.clone())
        .await
        .unwrap();
    assert!(
        !stale.exists(),
        "a refresh removes the resource's stale note"
    );
    // So does an update.
    put_stale();
    h.update(&held, &held_state, held_inputs, false)
        .await
        .unwrap();
    assert!(
        !stale.exists(),
        "an update removes the resource's stale note"
    );
    h.delete(&other, &other_state).await.unwrap();
    assert!(h.contents(&prod_b).await.is_empty(), "rolled back");
}

fn item(pk: &str, sk: &str, kind: &str, value: &str) -> BTreeMap<String, AttributeValue> {
    [("PK", pk), ("SK", sk), ("TYPE", kind), ("value", value)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
        .collect()
}

async fn items(h: &Harness, table: &str) -> Vec<BTreeMap<String, AttributeValue>> {
    let out = h
        .clients
        .dynamodb()
        .await
        .expect("clients")
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan");
    let mut items: Vec<BTreeMap<String, AttributeValue>> = out
        .items()
        .iter()
        .map(|i| i.clone().into_iter().collect())
        .collect();
    items.sort_by_key(|i| format!("{:?}{:?}", i["PK"], i["SK"]));
    items
}

#[tokio::test]
async fn dynamo_copy_refuses_unknown_types_copies_and_restores_overwritten_items() {
    let h = Harness::new().await;
    let (source, target) = (h.table("dev").await, h.table("prod").await);
    let dynamodb = h.clients.dynamodb().await.expect("clients");
    let put = |table: &str, item: BTreeMap<String, AttributeValue>| {
        dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(item.into_iter().collect()))
            .send()
    };
    for (table, row) in [
        (&source, item("R#1", "RECEIPT", "RECEIPT", "dev 1")),
        (&source, item("R#2", "RECEIPT", "RECEIPT", "dev 2")),
        (&source, item("J#1", "JOB", "JOB", "job")),
        (&target, item("R#1", "RECEIPT", "RECEIPT", "prod 1")),
    ] {
        put(table, row).await.unwrap();
    }
    let before = items(&h, &target).await;
    let urn = urn("DynamoCopy");

    let typo = json!({"sourceTable": source, "targetTable": target, "excludeTypes": ["JOBS"]});
    let err = h.create(&urn, typo, true).await.unwrap_err();
    assert!(err.contains("\"JOBS\" in excludeTypes"), "{err}");

    let inputs = json!({"sourceTable": source, "targetTable": target, "excludeTypes": ["JOB"], "onConflict": "overwrite"});
    let (_, planned) = h.create(&urn, inputs.clone(), true).await.unwrap();
    assert_eq!(
        (
            &planned["itemsCopied"],
            &planned["itemsOverwritten"],
            &planned["itemsFiltered"]
        ),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(items(&h, &target).await, before, "preview wrote");

    let (_, state) = h.create(&urn, inputs.clone(), false).await.unwrap();
    assert_eq!(state["verified"], true);
    let copied = items(&h, &target).await;
    assert_eq!(copied.len(), 2);
    assert!(copied
        .iter()
        .all(|i| i["value"].as_s().unwrap().starts_with("dev")));

    assert!(
        !h.diff(&urn, (&inputs, &state), inputs.clone())
            .await
            .changed
    );
    let retarget =
        json!({"sourceTable": source, "targetTable": "elsewhere", "excludeTypes": ["JOB"]});
    let replaced = h.diff(&urn, (&inputs, &state), retarget).await;
    assert_eq!(replaced.replaces, ["targetTable"]);

    h.delete(&urn, &state).await.unwrap();
    assert_eq!(items(&h, &target).await, before, "rollback restores prod");
}
