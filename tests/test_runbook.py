"""The runbook's steps around the copies through the pulumi CLI: the queue gate, workflow
runs and the CDN invalidation, with moto's server playing SQS, Step Functions (running
the state machines' definitions) and CloudFront."""

import json
import os

import boto3

from conftest import connection, listing, s3_client, unique


def aws(service):
    return boto3.client(service, endpoint_url=os.environ["STACKMIGRATE_MOTO_B"], region_name="us-east-1",
                        aws_access_key_id="runbook", aws_secret_access_key="runbook")


def runbook_config():
    """Buckets on S3 "a"; SQS, Step Functions and CloudFront on moto "b"."""
    moto = os.environ["STACKMIGRATE_MOTO_B"]
    target = {**connection("a"), "sqsEndpoint": moto, "sfnEndpoint": moto, "cloudfrontEndpoint": moto}
    return {"stackmigrate:source": connection("a"), "stackmigrate:target": target}


def state_machine(name, states, start):
    definition = {"StartAt": start, "States": states}
    return aws("stepfunctions").create_state_machine(
        name=unique(name), definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/runbook")["stateMachineArn"]


def executions(machine, status=None):
    extra = {"statusFilter": status} if status else {}
    return aws("stepfunctions").list_executions(stateMachineArn=machine, **extra)["executions"]


def drain(sqs, url):
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_the_gate_refuses_at_preview_and_at_up_and_nothing_behind_it_runs_until_it_opens(project):
    sqs, s3 = aws("sqs"), s3_client("a")
    dlq = sqs.create_queue(QueueName=unique("lines-dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    lines_name = unique("lines")
    lines = sqs.create_queue(QueueName=lines_name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})["QueueUrl"]
    busy = state_machine("compaction", {"Hold": {"Type": "Wait", "Seconds": 600, "End": True}}, "Hold")
    dev, prod = unique("dev"), unique("prod")
    for bucket in (dev, prod):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=dev, Key="a.png", Body=b"png")
    resources = {
        "gate": {"type": "stackmigrate:QueueGate", "properties": {
            "queues": [lines_name], "maxBacklog": 2, "idleStateMachines": [busy]}},
        "images": {"type": "stackmigrate:BucketSync",
                   "properties": {"sourceBucket": dev, "targetBucket": prod},
                   "options": {"dependsOn": ["${gate}"]}},
    }
    p = project(resources, {"queues": "${gate.queues}"}, config=runbook_config())

    for body in ("1", "2", "3"):
        sqs.send_message(QueueUrl=lines, MessageBody=body)
    execution = aws("stepfunctions").start_execution(stateMachineArn=busy, input="{}")["executionArn"]
    code, out = p.preview(check=False)
    assert code != 0
    assert f"queue {lines_name} has a backlog of 3 messages (3 visible, 0 in flight), above maxBacklog 2" in out, out
    assert "has a running execution" in out, out

    drain(sqs, lines)
    aws("stepfunctions").stop_execution(executionArn=execution)
    out = p.preview()
    assert f"queue {lines_name}: 0 visible, 0 in flight" in out, out

    # A message lands in the dead-letter queue between the preview and the up.
    sqs.send_message(QueueUrl=dlq, MessageBody="poison")
    code, out = p.up(check=False)
    assert code != 0
    assert "holds 1 messages (1 visible, 0 in flight, 0 delayed); it must be empty" in out, out
    assert listing(s3, prod) == {}, "a resource behind a closed gate ran"

    drain(sqs, dlq)
    p.up()
    assert set(listing(s3, prod)) == {"a.png"}
    checked = {q["url"]: q for q in p.outputs()["queues"]}
    assert checked[lines]["deadLetter"] is False and checked[dlq]["deadLetter"] is True

    # Checked again at every up: a backlog stops the next one.
    for body in ("1", "2", "3"):
        sqs.send_message(QueueUrl=lines, MessageBody=body)
    code, out = p.up(check=False)
    assert code != 0 and "backlog of 3 messages" in out, out
    drain(sqs, lines)
    p.destroy()
    assert listing(s3, prod) == {}


def test_a_missing_queue_or_state_machine_stops_the_preview(project):
    config = runbook_config()
    missing_queue = unique("nothing")
    p = project({"gate": {"type": "stackmigrate:QueueGate", "properties": {"queues": [missing_queue]}}},
                config=config)
    code, out = p.preview(check=False)
    assert code != 0 and f'finding queue "{missing_queue}"' in out, out

    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:" + unique("absent")
    p = project({"run": {"type": "stackmigrate:WorkflowRun", "properties": {"stateMachineArn": machine}}},
                config=config)
    code, out = p.preview(check=False)
    assert code != 0 and f"reading state machine {machine}" in out, out


def test_a_workflow_starts_once_per_trigger_change_and_a_failing_one_fails_the_up(project):
    ok = state_machine("embed-lines", {
        "Work": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
        "Done": {"Type": "Succeed"}}, "Work")
    run = {"type": "stackmigrate:WorkflowRun", "properties": {
        "stateMachineArn": ok, "input": {"batch": "all"}, "wait": True, "triggers": [1]}}
    p = project({"lines": run}, {"execution": "${lines.executionArn}", "status": "${lines.status}"},
                config=runbook_config())

    out = p.preview()
    assert f'would start {ok} with input {{"batch":"all"}} and wait for it' in out, out
    assert executions(ok) == []

    p.up()
    out = p.outputs()
    assert out["status"] == "SUCCEEDED"
    assert [e["executionArn"] for e in executions(ok)] == [out["execution"]]
    described = aws("stepfunctions").describe_execution(executionArn=out["execution"])
    assert json.loads(described["input"]) == {"batch": "all"}

    p.up()
    assert len(executions(ok)) == 1, "an up with unchanged inputs started the workflow again"

    run["properties"]["triggers"] = [2]
    p.write({"lines": run}, {"execution": "${lines.executionArn}", "status": "${lines.status}"})
    p.up()
    assert len(executions(ok)) == 2 and p.outputs()["execution"] != out["execution"]

    bad = state_machine("embed-words", {"Boom": {"Type": "Fail", "Error": "EmbeddingFailed", "Cause": "no model"}},
                        "Boom")
    failing = {"type": "stackmigrate:WorkflowRun",
               "properties": {"stateMachineArn": bad, "wait": True}}
    p.write({"lines": run, "words": failing}, {})
    code, out = p.up(check=False)
    assert code != 0
    assert "ended FAILED (EmbeddingFailed: no model)" in out, out
    p.write({"lines": run}, {})
    p.destroy()


def test_a_new_trigger_starts_another_execution_and_destroy_stops_the_running_one(project):
    slow = state_machine("slow", {"Hold": {"Type": "Wait", "Seconds": 600, "End": True}}, "Hold")
    run = {"type": "stackmigrate:WorkflowRun", "properties": {"stateMachineArn": slow, "triggers": [1]}}
    p = project({"run": run}, {"execution": "${run.executionArn}"}, config=runbook_config())
    p.up()
    first = p.outputs()["execution"]
    sfn = aws("stepfunctions")
    assert sfn.describe_execution(executionArn=first)["status"] == "RUNNING"

    # The first still runs: a new trigger starts another rather than taking it over.
    run["properties"]["triggers"] = [2]
    p.write({"run": run}, {"execution": "${run.executionArn}"})
    p.up()
    second = p.outputs()["execution"]
    assert second != first and len(executions(slow, "RUNNING")) == 2

    out = p.destroy()
    assert "stopped execution" in out, out
    assert sfn.describe_execution(executionArn=second)["status"] == "ABORTED"
    # The state held only the last execution; the earlier one is left to run.
    assert sfn.describe_execution(executionArn=first)["status"] == "RUNNING"
    sfn.stop_execution(executionArn=first)


def distribution():
    config = {
        "CallerReference": unique("cdn"), "Comment": "", "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [{"Id": "cdn", "DomainName": "cdn.s3.amazonaws.com",
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "cdn", "ViewerProtocolPolicy": "allow-all",
                                 "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                                 "MinTTL": 0, "TrustedSigners": {"Enabled": False, "Quantity": 0}},
    }
    return aws("cloudfront").create_distribution(DistributionConfig=config)["Distribution"]["Id"]


def invalidated_paths(distribution_id):
    """Each invalidation's paths, oldest first."""
    cloudfront = aws("cloudfront")
    items = cloudfront.list_invalidations(DistributionId=distribution_id)["InvalidationList"].get("Items", [])
    found = []
    for item in items:
        batch = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
        found.append((batch["Invalidation"]["CreateTime"], sorted(batch["Invalidation"]["InvalidationBatch"]["Paths"]["Items"])))
    return [paths for _, paths in sorted(found)]


def test_the_cdn_is_invalidated_for_the_keys_the_sync_changed(project):
    s3, cdn = s3_client("a"), distribution()
    dev, prod = unique("cdn-dev"), unique("cdn-prod")
    for bucket in (dev, prod):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=dev, Key="img/a.png", Body=b"a")
    s3.put_object(Bucket=dev, Key="img/b c.png", Body=b"b")
    resources = {
        "cdnImages": {"type": "stackmigrate:BucketSync", "properties": {"sourceBucket": dev, "targetBucket": prod}},
        "cdnCache": {"type": "stackmigrate:CdnInvalidation",
                     "properties": {"distributionId": cdn, "keys": "${cdnImages.changedKeys}"}},
    }
    p = project(resources, {"paths": "${cdnCache.paths}", "status": "${cdnCache.status}"}, config=runbook_config())

    out = p.preview()
    assert f"would invalidate 2 paths on distribution {cdn}" in out, out
    assert invalidated_paths(cdn) == []

    p.up()
    assert invalidated_paths(cdn) == [["/img/a.png", "/img/b%20c.png"]]
    assert p.outputs()["status"].lower() == "completed"

    p.up()
    assert len(invalidated_paths(cdn)) == 1, "an up that changed nothing invalidated again"

    s3.put_object(Bucket=dev, Key="img/new.png", Body=b"n")
    p.up()
    assert invalidated_paths(cdn)[1:] == [["/img/new.png"]]
    p.destroy()
    assert listing(s3, prod) == {}


def test_more_paths_than_cloudfront_takes_invalidate_everything_and_a_missing_distribution_stops_preview(project):
    cdn = distribution()
    keys = [f"img/{i}.png" for i in range(3001)]
    p = project({"cache": {"type": "stackmigrate:CdnInvalidation", "properties": {"distributionId": cdn, "keys": keys}}},
                {"paths": "${cache.paths}"}, config=runbook_config())
    p.up()
    assert invalidated_paths(cdn) == [["/*"]] and p.outputs()["paths"] == ["/*"]

    p = project({"cache": {"type": "stackmigrate:CdnInvalidation", "properties": {"distributionId": "ENOSUCHDIST"}}},
                config=runbook_config())
    code, out = p.preview(check=False)
    assert code != 0 and "reading CloudFront distribution ENOSUCHDIST" in out, out
