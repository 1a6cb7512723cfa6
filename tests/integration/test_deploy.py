"""The SAM application deployed to MiniStack: outputs, buckets, triggers, state machine, Plan."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def physical_id(stack: str, logical: str) -> str:
    cfn = boto3.client("cloudformation")
    res = cfn.describe_stack_resource(StackName=stack, LogicalResourceId=logical)
    return res["StackResourceDetail"]["PhysicalResourceId"]


def test_stack_outputs(deployed_stack):
    assert deployed_stack.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    for key in ("WorkBucketName", "DataBucketName", "ControlBucketName", "StateMachineArn",
                "StateMachineName", "DataPublicUrl"):
        assert deployed_stack.outputs.get(key), key
    assert deployed_stack.data_public_url.endswith(f"/{deployed_stack.data_bucket}"
                                                   "/sentinel-2-annual-median/")


def test_buckets_exist(deployed_stack):
    s3 = boto3.client("s3")
    for bucket in (deployed_stack.work_bucket, deployed_stack.data_bucket,
                   deployed_stack.control_bucket):
        s3.head_bucket(Bucket=bucket)


def test_s3_notifications_trigger_publish_and_reprocess(deployed_stack):
    s3 = boto3.client("s3")
    stack = deployed_stack.stack_name
    cases = ((deployed_stack.work_bucket, "PublishFunction", {"suffix": "DONE.json"}),
             (deployed_stack.control_bucket, "ReprocessFunction", {"prefix": "requests/"}))
    for bucket, logical, rules in cases:
        (conf,) = s3.get_bucket_notification_configuration(
            Bucket=bucket)["LambdaFunctionConfigurations"]
        assert conf["LambdaFunctionArn"].endswith(":function:" + physical_id(stack, logical))
        assert "s3:ObjectCreated:*" in conf["Events"]
        got = {r["Name"].lower(): r["Value"] for r in conf["Filter"]["Key"]["FilterRules"]}
        assert rules.items() <= got.items()


def test_state_machine_has_the_distributed_map(deployed_stack):
    sfn = boto3.client("stepfunctions")
    desc = sfn.describe_state_machine(stateMachineArn=deployed_stack.state_machine_arn)
    assert desc["name"] == deployed_stack.state_machine_name
    assert "${" not in desc["definition"]  # every substitution applied
    asl = json.loads(desc["definition"])
    tiles = asl["States"]["Tiles"]
    assert tiles["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert tiles["MaxConcurrency"] == int(deployed_stack.parameters["TileConcurrency"])
    assert "ItemReader" in tiles


def test_local_s3_endpoint_only_because_local(deployed_stack):
    assert deployed_stack.parameters["Local"] == "true"
    lam = boto3.client("lambda")
    for logical in ("PlanFunction", "MedianFunction", "PublishFunction"):
        cfg = lam.get_function_configuration(FunctionName=physical_id(
            deployed_stack.stack_name, logical))
        env = cfg["Environment"]["Variables"]
        assert env["CLOUDFREE_LOCAL_S3"] == deployed_stack.parameters["LocalS3Endpoint"]
        assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
        assert "PUBLIC_BASE_URL" not in env  # local hrefs stay s3://
        assert env["WORK_BUCKET"] == deployed_stack.work_bucket
        assert cfg["Layers"], f"{logical} has no layer"


def test_plan_function_invoked_directly(deployed_stack):
    # GIVEN the deployed Plan function and the sample event
    lam = boto3.client("lambda")
    event = json.loads((REPO / "events" / "plan.json").read_text())
    # WHEN it is invoked
    res = lam.invoke(FunctionName=physical_id(deployed_stack.stack_name, "PlanFunction"),
                     Payload=json.dumps(event).encode())
    body = json.loads(res["Payload"].read())
    # THEN it answers the contract's small output and wrote the tile list for the ItemReader
    assert "FunctionError" not in res, body
    assert {"year", "options", "tiles_bucket", "tiles_key", "count"} <= set(body)
    assert (body["year"], body["count"]) == (2023, 1)
    assert body["tiles_bucket"] == deployed_stack.control_bucket
    obj = boto3.client("s3").get_object(Bucket=body["tiles_bucket"], Key=body["tiles_key"])
    assert json.loads(obj["Body"].read()) == [{"tile": "33UUP"}]


def test_plan_function_rejects_a_malformed_event(deployed_stack):
    lam = boto3.client("lambda")
    res = lam.invoke(FunctionName=physical_id(deployed_stack.stack_name, "PlanFunction"),
                     Payload=json.dumps({"year": "next"}).encode())
    assert res.get("FunctionError")
    assert "validation error for PlanEvent" in json.loads(res["Payload"].read())["errorMessage"]


def test_execution_of_a_year_without_scenes_reports_the_tile_empty(deployed_stack):
    """Plan -> Distributed Map (ItemReader) -> Select -> Choice -> Report, in MiniStack."""
    sfn = boto3.client("stepfunctions")
    name = f"test-empty-{int(time.time() * 1000)}"
    arn = sfn.start_execution(stateMachineArn=deployed_stack.state_machine_arn, name=name,
                              input=json.dumps({"year": 2016, "tiles": ["33UUP"], "aoi": None,
                                                "options": {}}))["executionArn"]
    deadline = time.monotonic() + 120
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still running after 120 s"
        time.sleep(1)
    assert desc["status"] == "SUCCEEDED", desc.get("why", desc)
    out = json.loads(desc["output"])
    assert (out["report"]["empty"], out["report"]["done"], out["report"]["failed"]) == (1, 0, 0)


def test_second_deploy_is_a_no_op(deployed_stack):
    from cloudfree.pipeline.deploy import deploy_local

    t0 = time.monotonic()
    again = deploy_local(stack_name=deployed_stack.stack_name)
    assert again.outputs == deployed_stack.outputs
    assert time.monotonic() - t0 < 10


def test_a_failing_tile_is_recorded_and_reported(deployed_stack):
    """Select fails (a corrupt manifest) -> Retry -> Catch -> RecordFailure -> child fails ->
    tolerated failures exceeded -> Catch -> Report (pending request) -> TooManyTileFailures."""
    s3, sfn = boto3.client("s3"), boto3.client("stepfunctions")
    work, control = deployed_stack.work_bucket, deployed_stack.control_bucket
    prefix = "work/2017/33UUP/"
    from cloudfree.layout import Layout

    failed_key = Layout(work, "unused-data", control).tile_failed(2017, "33UUP").split("/", 3)[3]
    s3.put_object(Bucket=work, Key=prefix + "manifest.json", Body=b"{not json")
    name = f"test-fail-{int(time.time() * 1000)}"
    try:
        arn = sfn.start_execution(stateMachineArn=deployed_stack.state_machine_arn, name=name,
                                  input=json.dumps({"year": 2017, "tiles": ["33UUP"],
                                                    "aoi": None, "options": {}}))["executionArn"]
        deadline = time.monotonic() + 120
        while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            assert time.monotonic() < deadline, "execution still running after 120 s"
            time.sleep(1)
        assert (desc["status"], desc["error"]) == ("FAILED", "TooManyTileFailures")
        failed = json.loads(s3.get_object(Bucket=work, Key=failed_key)["Body"].read())
        assert (failed["tile"], failed["year"]) == ("33UUP", 2017) and failed["error"]
        report = json.loads(s3.get_object(Bucket=control, Key=f"reports/{name}.json")["Body"]
                            .read())
        assert report["failed"] == 1
        pending = json.loads(s3.get_object(Bucket=control, Key=f"pending-requests/{name}.json")
                             ["Body"].read())
        assert pending["tiles"] == ["33UUP"] and pending["year"] == 2017
    finally:
        for key in (prefix + "manifest.json", failed_key,
                    f"pending-requests/{name}.json"):
            s3.delete_object(Bucket=control if key.startswith("pending") else work, Key=key)
