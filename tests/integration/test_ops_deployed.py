"""The deployed stack (MiniStack) carries the error table, the Task timeouts and the security bits.

GIVEN template.yaml deployed locally,
THEN every Task of the running state machine retries exactly the table's rendering and times out
30 s after its deployed function does; every bucket has the TLS-only policy; and WHEN a publish
fails every attempt (a completion marker for a tile that has no outputs), THEN the S3 event is
kept in the failed-events queue with the error and the original key.
"""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest

from cloudfree import layout, retry

pytestmark = pytest.mark.integration


def _physical(stack: str, logical: str) -> str:
    res = boto3.client("cloudformation").describe_stack_resource(StackName=stack,
                                                                 LogicalResourceId=logical)
    return res["StackResourceDetail"]["PhysicalResourceId"]


def _tasks(states: dict):
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        if "ItemProcessor" in state:
            yield from _tasks(state["ItemProcessor"]["States"])


def test_deployed_tasks_retry_from_the_table_and_time_out_after_their_function(deployed_stack):
    sfn, lam = boto3.client("stepfunctions"), boto3.client("lambda")
    asl = json.loads(sfn.describe_state_machine(
        stateMachineArn=deployed_stack.state_machine_arn)["definition"])
    tasks = dict(_tasks(asl["States"]))
    assert set(tasks) == {"Plan", "Select", "Decide", "Median", "Assemble", "Complete",
                          "RecordFailure", "Report"}
    for name, state in tasks.items():
        assert state["Retry"] == retry.retriers(), name
        fn = lam.get_function_configuration(FunctionName=_physical(
            deployed_stack.stack_name, f"{name}Function"))
        assert state["TimeoutSeconds"] == fn["Timeout"] + retry.TASK_TIMEOUT_MARGIN, name


def test_deployed_buckets_deny_plain_http(deployed_stack):
    s3 = boto3.client("s3")
    for bucket in (deployed_stack.work_bucket, deployed_stack.data_bucket,
                   deployed_stack.control_bucket):
        stmts = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
        deny = [s for s in stmts if s["Effect"] == "Deny"]
        assert [d["Condition"] for d in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
    public = json.loads(s3.get_bucket_policy(Bucket=deployed_stack.data_bucket)["Policy"])
    (allow,) = [s for s in public["Statement"] if s["Effect"] == "Allow"]
    assert allow["Resource"].endswith(f":{deployed_stack.data_bucket}/{layout.DATA_PREFIX}/*")


def test_a_publish_that_fails_every_attempt_is_kept_in_the_failed_events_queue(deployed_stack):
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    url = deployed_stack.outputs["FailedEventsQueueUrl"]
    queue = sqs.get_queue_url(QueueName=url.rsplit("/", 1)[1])["QueueUrl"]
    lay = layout.Layout(deployed_stack.work_bucket, deployed_stack.data_bucket,
                        deployed_stack.control_bucket)
    # a tile with a completion marker and no outputs: publish fails on every attempt
    tile, year = "31UDQ", 2016
    marker = lay.tile_done(year, tile)
    key = marker.split("/", 3)[3]
    s3.put_object(Bucket=deployed_stack.work_bucket, Key=key,
                  Body=json.dumps({"tile": tile, "year": year,
                                   "execution": f"ops-{uuid.uuid4().hex[:8]}"}).encode())
    try:
        t0, found = time.monotonic(), None
        while found is None and time.monotonic() - t0 < 240:
            for m in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10,
                                         MaxNumberOfMessages=10).get("Messages", []):
                body = json.loads(m["Body"])
                keys = [r["s3"]["object"]["key"] for r in
                        body.get("requestPayload", {}).get("Records", [])]
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                if key in keys:
                    found = body
        print(f"\nfailed publish event queued after {time.monotonic() - t0:.0f}s")
        assert found is not None, "the failed S3 event was not kept"
        ctx = found["requestContext"]
        assert ctx["condition"] == "RetriesExhausted" and ctx["approximateInvokeCount"] == 3
        assert ctx["functionArn"].endswith(_physical(deployed_stack.stack_name,
                                                     "PublishFunction"))
    finally:
        s3.delete_object(Bucket=deployed_stack.work_bucket, Key=key)
