"""Names from the stacks' outputs: sourceStack / targetStack, `output`, the derived
rewrite, getStackOutputs, and the errors at preview."""


from conftest import both_sides, listing, s3_client, unique
from portfolio_items import S, create_table, dynamodb, put_items, scan_all


def infra_stack(project, table, raw_bucket, cdn_bucket):
    """A stack that only exports outputs, as the infra project's dev or prod stack would."""
    outputs = {
        "dynamodb_table_name": table,
        "raw_bucket_name": raw_bucket,
        "cdn_bucket_name": cdn_bucket,
        "api_token": {"fn::secret": "token-" + table},
    }
    p = project({}, outputs)
    p.up()
    return p, f"organization/{p.name}/{p.stack}"


def test_names_and_rewrite_come_from_the_stacks(project):
    client, s3 = dynamodb(), s3_client("a")
    dev_table, prod_table = create_table(client, unique("dev")), create_table(client, unique("prod"))
    dev_raw, prod_raw = unique("raw-dev"), unique("raw-prod")
    dev_cdn, prod_cdn = unique("cdn-dev"), unique("cdn-prod")
    for bucket in (dev_raw, prod_raw, dev_cdn, prod_cdn):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=dev_raw, Key="raw/a.png", Body=b"png")
    put_items(client, dev_table, [
        {"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE"), "raw_s3_bucket": S(dev_raw),
         "cdn_s3_bucket": S(dev_cdn), "uri": S(f"s3://{dev_raw}/raw/a.png")},
    ])
    _, dev = infra_stack(project, dev_table, dev_raw, dev_cdn)
    _, prod = infra_stack(project, prod_table, prod_raw, prod_cdn)

    resources = {
        "receipts": {"type": "stackmigrate:DynamoCopy", "properties": {}},
        "rawImages": {"type": "stackmigrate:BucketSync", "properties": {"output": "raw_bucket_name"}},
    }
    variables = {"devOutputs": {"fn::invoke": {"function": "stackmigrate:index:getStackOutputs",
                                               "arguments": {"stack": dev}, "return": "outputs"}}}
    outputs = {
        "targetTable": "${receipts.targetTable}",
        "rewrites": "${receipts.rewrites}",
        "targetBucket": "${rawImages.targetBucket}",
        "devRaw": "${devOutputs.raw_bucket_name}",
        "devToken": "${devOutputs.api_token}",
    }
    config = {**both_sides(), "stackmigrate:sourceStack": dev, "stackmigrate:targetStack": prod}
    p = project(resources, outputs, config=config, variables=variables)
    p.up()

    out = p.outputs()
    assert out["targetTable"] == prod_table and out["targetBucket"] == prod_raw
    assert out["rewrites"] == {dev_raw: prod_raw, dev_cdn: prod_cdn}
    assert out["devRaw"] == dev_raw and out["devToken"] == "token-" + dev_table
    assert "token-" + dev_table not in p.run("stack", "output", "--json"), "secret outputs stay secret"
    item = scan_all(client, prod_table)[("IMAGE#1", "IMAGE")]
    assert item["raw_s3_bucket"] == S(prod_raw) and item["cdn_s3_bucket"] == S(prod_cdn)
    assert item["uri"] == S(f"s3://{prod_raw}/raw/a.png")
    assert set(listing(s3, prod_raw)) == {"raw/a.png"}

    p.destroy()
    assert scan_all(client, prod_table) == {} and listing(s3, prod_raw) == {}


def test_a_name_from_a_secret_stack_output_stays_secret_in_the_state_and_the_preview(project):
    client = dynamodb()
    dev_table, prod_table = create_table(client, unique("dev")), create_table(client, unique("prod-secret"))
    put_items(client, dev_table, [{"PK": S("IMAGE#1"), "SK": S("IMAGE"), "TYPE": S("IMAGE")}])
    _, dev = infra_stack(project, dev_table, unique("raw-dev"), unique("cdn-dev"))
    prod_project = project({}, {"dynamodb_table_name": {"fn::secret": prod_table}})
    prod_project.up()
    prod = f"organization/{prod_project.name}/{prod_project.stack}"

    resources = {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": {"rewrite": {}}}}
    config = {**both_sides(), "stackmigrate:sourceStack": dev, "stackmigrate:targetStack": prod}
    p = project(resources, {"targetTable": "${receipts.targetTable}"}, config=config)
    preview = p.preview()
    assert prod_table not in preview and "[secret]" in preview, preview
    out = p.up()
    assert prod_table not in out, out
    assert ("IMAGE#1", "IMAGE") in scan_all(client, prod_table)
    assert prod_table not in p.run("stack", "export"), "the state holds the secret name in plaintext"
    assert p.outputs()["targetTable"] == prod_table
    p.destroy()
    assert scan_all(client, prod_table) == {}


def test_an_error_naming_a_secret_name_masks_it(project):
    client = dynamodb()
    dev_table = create_table(client, unique("dev"))
    _, dev = infra_stack(project, dev_table, unique("raw-dev"), unique("cdn-dev"))
    missing = unique("prod-secret-missing")
    prod_project = project({}, {"dynamodb_table_name": {"fn::secret": missing}})
    prod_project.up()
    prod = f"organization/{prod_project.name}/{prod_project.stack}"

    resources = {"receipts": {"type": "stackmigrate:DynamoCopy", "properties": {"rewrite": {}}}}
    config = {**both_sides(), "stackmigrate:sourceStack": dev, "stackmigrate:targetStack": prod}
    p = project(resources, config=config)
    code, out = p.preview(check=False)
    assert code != 0 and "[secret]" in out, out
    assert missing not in out, out


def test_unknown_stack_and_missing_output_fail_at_preview_naming_what_exists(project):
    s3 = s3_client("a")
    _, dev = infra_stack(project, "t-dev", unique("raw-dev"), unique("cdn-dev"))
    _, prod = infra_stack(project, "t-prod", unique("raw-prod"), unique("cdn-prod"))

    missing_key = project(
        {"images": {"type": "stackmigrate:BucketSync", "properties": {"output": "layoutlm_training_bucket"}}},
        config={**both_sides(), "stackmigrate:sourceStack": dev, "stackmigrate:targetStack": prod},
    )
    code, out = missing_key.preview(check=False)
    assert code != 0 and "no output \"layoutlm_training_bucket\"" in out, out
    assert "cdn_bucket_name, dynamodb_table_name, raw_bucket_name" in out, out

    missing_stack = project(
        {"images": {"type": "stackmigrate:BucketSync", "properties": {"output": "raw_bucket_name"}}},
        config={**both_sides(), "stackmigrate:sourceStack": "organization/nope/dev", "stackmigrate:targetStack": prod},
    )
    code, out = missing_stack.preview(check=False)
    assert code != 0 and "organization/nope/dev" in out and dev.split("/", 1)[1] in out, out

    no_stack = project(
        {"images": {"type": "stackmigrate:BucketSync", "properties": {"output": "raw_bucket_name"}}},
        config=both_sides(),
    )
    code, out = no_stack.preview(check=False)
    assert code != 0 and "stackmigrate:sourceStack is not configured" in out, out

    neither = project({"images": {"type": "stackmigrate:BucketSync", "properties": {}}}, config=both_sides())
    code, out = neither.preview(check=False)
    assert code != 0 and "set a bucket name, or `output`" in out, out
    assert s3.list_buckets()  # the servers are still answering
