"""template.yaml, statemachine/composite.asl.json and the layer build, checked offline.

The template is decoded with cfn-lint's YAML decoder (it knows the short-form intrinsics) in
``.venv-sam``; ``sam validate --lint`` and ``cfn-lint`` must be clean; the state machine's task
payloads must match the event models; the built layer must fit Lambda's 250 MB (unzipped, with
the largest function) and must not ship boto3/botocore.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cloudfree.errors import TRANSIENT_ERRORS
from cloudfree.events import MODELS

REPO = Path(__file__).resolve().parents[2]
SAM_VENV = REPO / ".venv-sam" / "bin"
ASL = REPO / "statemachine" / "composite.asl.json"
FUNCTIONS = {"Plan": "plan", "Select": "select", "Median": "median", "Assemble": "assemble",
             "Complete": "complete", "RecordFailure": "record_failure", "Report": "report",
             "Publish": "publish", "Reprocess": "reprocess"}
AWS_RETRY = {"Lambda.ServiceException", "Lambda.TooManyRequestsException",
             "Lambda.SdkClientException", "States.Timeout"}
LIMIT_BYTES = 250 * 1024 * 1024  # Lambda: code + layers, unzipped

needs_sam = pytest.mark.skipif(not (SAM_VENV / "sam").exists(), reason="no .venv-sam")


@pytest.fixture(scope="module")
def template() -> dict:
    if not (SAM_VENV / "python").exists():
        pytest.skip("no .venv-sam (cfn-lint decodes the template)")
    code = ("import json,sys; from cfnlint.decode import decode; t, m = decode(sys.argv[1]); "
            "assert not m, m; print(json.dumps(t))")
    out = subprocess.run([str(SAM_VENV / "python"), "-c", code, str(REPO / "template.yaml")],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))


def substituted_asl() -> dict:
    """The definition as CloudFormation would make it (numbers for the numeric parameters)."""
    text = ASL.read_text()
    for name in placeholders(text):
        value = "7" if name.endswith(("Concurrency", "Percentage")) else f"sub-{name}"
        text = text.replace("${" + name + "}", value)
    return json.loads(text)


def walk_states(states: dict, path: str = ""):
    """(path, name, state) of every state, nested Map processors included."""
    for name, state in states.items():
        yield path, name, state
        proc = state.get("ItemProcessor") or state.get("Iterator")
        if proc:
            yield from walk_states(proc["States"], f"{path}{name}/")


# --- linters ------------------------------------------------------------------------------------
@needs_sam
def test_sam_validate_lint_is_clean():
    res = subprocess.run([str(SAM_VENV / "sam"), "validate", "--lint", "--region", "us-west-2"],
                         cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SAM_CLI_TELEMETRY": "0", "HOME": "/tmp"})
    assert res.returncode == 0, res.stdout + res.stderr


@needs_sam
def test_cfn_lint_is_clean():
    res = subprocess.run([str(SAM_VENV / "cfn-lint"), "template.yaml"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# --- parameters, globals, functions -------------------------------------------------------------
def test_parameters_and_defaults(template):
    p = template["Parameters"]
    assert p["StacApiUrl"]["Default"] == "https://earth-search.aws.element84.com/v1"
    assert p["SourceCollection"]["Default"] == "sentinel-2-l2a"
    assert p["SourceBucket"]["Default"] == "sentinel-cogs"
    assert int(p["SceneCount"]["Default"]) == 16
    assert p["MaskClasses"]["Default"] == "0,1,3,8,9,10,11"
    assert int(p["MedianMemoryMB"]["Default"]) == 3008 == int(p["AssembleMemoryMB"]["Default"])
    assert int(p["MedianTimeout"]["Default"]) == 900 == int(p["AssembleTimeout"]["Default"])
    assert p["Local"]["AllowedValues"] == ["false", "true"] and p["Local"]["Default"] == "false"
    for name in ("TileConcurrency", "BandConcurrency", "ToleratedFailurePercentage",
                 "LocalS3Endpoint"):
        assert name in p
    assert template["Conditions"]["IsLocal"] == {"Fn::Equals": [{"Ref": "Local"}, "true"]}


def test_globals_set_powertools_and_settings_env(template):
    g = template["Globals"]["Function"]
    assert g["Runtime"] == "python3.11" and g["Handler"] == "app.lambda_handler"
    assert g["Layers"] == [{"Ref": "CloudfreeLayer"}]
    env = g["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL",
                 "WORK_BUCKET", "DATA_BUCKET", "CONTROL_BUCKET", "STAC_API_URL",
                 "SOURCE_COLLECTION", "SCENE_COUNT", "MASK_CLASSES", "MEDIAN_MEMORY_MB"):
        assert name in env, name
    # GDAL's local S3 endpoint exists only when the stack is local
    assert env["CLOUDFREE_LOCAL_S3"] == {"Fn::If": ["IsLocal", {"Ref": "LocalS3Endpoint"},
                                                    {"Ref": "AWS::NoValue"}]}
    assert env["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["IsLocal", "true", "false"]}


def test_every_function_has_its_folder_and_handler(resources):
    for logical, folder in FUNCTIONS.items():
        props = resources[f"{logical}Function"]["Properties"]
        assert props["CodeUri"] == f"functions/{folder}/"
        assert (REPO / "functions" / folder / "app.py").exists()
        assert props.get("Policies"), f"{logical}Function has no policies"


def test_median_and_assemble_memory_and_timeouts_are_parameters(resources):
    for fn in ("Median", "Assemble"):
        props = resources[f"{fn}Function"]["Properties"]
        assert props["MemorySize"] == {"Ref": f"{fn}MemoryMB"}
        assert props["Timeout"] == {"Ref": f"{fn}Timeout"}


def test_no_function_policy_or_env_refs_a_bucket_with_an_event_source(resources, template):
    """S3 event sources make the work/control buckets depend on the functions: a !Ref back is a
    circular dependency (the classic SAM one). Names are built with !Sub instead."""
    functions = {k: {p: v for p, v in r["Properties"].items() if p != "Events"}
                 for k, r in resources.items() if k.endswith("Function")}
    text = json.dumps(functions)
    text += json.dumps(template["Globals"])
    for bucket in ("WorkBucket", "ControlBucket"):
        assert json.dumps({"Ref": bucket}) not in text
        assert f'"{bucket}.' not in text  # no GetAtt either


def test_bucket_names_agree_between_buckets_policies_and_env(resources, template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    for bucket, var in (("WorkBucket", "WORK_BUCKET"), ("DataBucket", "DATA_BUCKET"),
                        ("ControlBucket", "CONTROL_BUCKET")):
        assert resources[bucket]["Properties"]["BucketName"] == env[var]


def test_s3_event_sources(resources):
    done = resources["PublishFunction"]["Properties"]["Events"]["TileDone"]["Properties"]
    assert done["Bucket"] == {"Ref": "WorkBucket"}
    assert {"Name": "suffix", "Value": "DONE.json"} in done["Filter"]["S3Key"]["Rules"]
    req = resources["ReprocessFunction"]["Properties"]["Events"]["Request"]["Properties"]
    assert req["Bucket"] == {"Ref": "ControlBucket"}
    assert req["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "requests/"}]


def test_work_bucket_expires_work_prefix(resources):
    (rule,) = resources["WorkBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == "work/" and rule["ExpirationInDays"] == {"Ref": "WorkExpirationDays"}


def test_data_bucket_is_public_only_under_the_product_prefix(resources):
    props = resources["DataBucket"]["Properties"]
    pab = props["PublicAccessBlockConfiguration"]
    assert pab["BlockPublicAcls"] is True and pab["IgnorePublicAcls"] is True
    assert pab["BlockPublicPolicy"] is False and pab["RestrictPublicBuckets"] is False
    (cors,) = props["CorsConfiguration"]["CorsRules"]
    assert "GET" in cors["AllowedMethods"]
    (stmt,) = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert stmt["Effect"] == "Allow" and stmt["Principal"] == "*"
    assert stmt["Action"] == "s3:GetObject"
    assert stmt["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}/sentinel-2-annual-median/*"}
    for other in ("WorkBucket", "ControlBucket"):
        assert all(resources[other]["Properties"]["PublicAccessBlockConfiguration"].values())


def test_arns_use_the_partition(template):
    text = json.dumps(template)
    assert "arn:aws:" not in text
    assert "arn:aws:" not in ASL.read_text()


def test_outputs(template):
    assert {"WorkBucketName", "DataBucketName", "ControlBucketName", "StateMachineArn",
            "StateMachineName", "DataPublicUrl"} <= set(template["Outputs"])


def test_state_machine_substitutions_match_the_definition(resources):
    props = resources["CompositeStateMachine"]["Properties"]
    assert props["DefinitionUri"] == "statemachine/composite.asl.json"
    assert set(props["DefinitionSubstitutions"]) == placeholders(ASL.read_text())
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"] for p in props["Policies"]
               if "LambdaInvokePolicy" in p}
    arns = {v["Fn::GetAtt"][0] for v in props["DefinitionSubstitutions"].values()
            if isinstance(v, dict) and "Fn::GetAtt" in v}
    assert invoked == arns
    actions = {a for p in props["Policies"] for s in p.get("Statement", [])
               for a in s["Action"]}
    assert {"states:StartExecution", "states:DescribeExecution", "states:StopExecution",
            "s3:PutObject"} <= actions


# --- the state machine --------------------------------------------------------------------------
def test_every_task_retries_transient_errors_with_backoff_and_a_local_fallback():
    for path, name, state in walk_states(substituted_asl()["States"]):
        if state["Type"] != "Task":
            continue
        transient, fallback = state["Retry"]
        assert set(TRANSIENT_ERRORS) | AWS_RETRY <= set(transient["ErrorEquals"]), path + name
        assert (transient["IntervalSeconds"], transient["BackoffRate"],
                transient["MaxAttempts"], transient["JitterStrategy"]) == (2, 2, 4, "FULL")
        assert fallback["ErrorEquals"] == ["Runtime.HandlerError"]
        assert fallback["MaxAttempts"] == 1


def test_task_payloads_match_the_event_models():
    """Every Lambda task sends exactly what its handler's model accepts (and all it requires)."""
    seen = set()
    for path, name, state in walk_states(substituted_asl()["States"]):
        if state["Type"] != "Task":
            continue
        params = state["Parameters"]
        fn = params["FunctionName"].removeprefix("sub-").removesuffix("FunctionArn")
        model = MODELS[FUNCTIONS[fn]]
        sent = {k.removesuffix(".$") for k in params["Payload"]}
        required = {k for k, f in model.model_fields.items() if f.is_required()}
        assert required <= sent <= set(model.model_fields), f"{path}{name}: {sent}"
        assert state["ResultSelector"], f"{path}{name} must keep its output small"
        seen.add(fn)
    assert seen == set(FUNCTIONS) - {"Publish", "Reprocess"}


def test_next_targets_exist_in_scope():
    def check(states: dict):
        for name, state in states.items():
            targets = [state.get("Next"), state.get("Default")]
            targets += [c["Next"] for c in state.get("Choices", [])]
            targets += [c["Next"] for c in state.get("Catch", [])]
            for t in filter(None, targets):
                assert t in states, f"{name} -> {t}"
            proc = state.get("ItemProcessor")
            if proc:
                assert proc["StartAt"] in proc["States"]
                check(proc["States"])

    asl = substituted_asl()
    assert asl["StartAt"] == "Plan"
    check(asl["States"])


def test_distributed_map_over_tiles():
    asl = substituted_asl()
    tiles = asl["States"]["Tiles"]
    assert tiles["Type"] == "Map" and asl["States"]["Plan"]["Next"] == "Tiles"
    assert tiles["ItemReader"]["Resource"].endswith(":states:::s3:getObject")
    assert tiles["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert tiles["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED",
                                                         "ExecutionType": "STANDARD"}
    assert tiles["MaxConcurrency"] == 7 and tiles["ToleratedFailurePercentage"] == 7
    assert tiles["ResultWriter"]["Parameters"]["Prefix"] == "results/"
    assert tiles["ResultPath"] is None and tiles["Next"] == "Report"
    assert set(tiles["ItemSelector"]) == {"tile.$", "year.$", "options.$", "execution.$"}
    child = tiles["ItemProcessor"]["States"]
    assert tiles["ItemProcessor"]["StartAt"] == "Select"
    bands = child["Bands"]
    assert bands["ItemsPath"] == "$.selected.work" and bands["ResultPath"] is None
    windows = bands["ItemProcessor"]["States"]["Windows"]
    assert windows["ItemsPath"] == "$.batches" and windows["ResultPath"] is None
    assert windows["ItemSelector"]["batch.$"] == "$$.Map.Item.Value"
    assert windows["Next"] == "Assemble" and bands["Next"] == "Complete"
    # every child failure is recorded, then the child fails
    for name in ("Select", "Bands", "Complete"):
        (catch,) = child[name]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == "RecordFailure"
    assert child["RecordFailure"]["Next"] == "TileFailed"
    assert child["TileFailed"]["Type"] == "Fail"


def test_plan_gets_the_execution_name_and_report_follows_the_map():
    states = substituted_asl()["States"]
    assert states["Plan"]["Parameters"]["Payload"]["execution.$"] == "$$.Execution.Name"
    assert states["Report"]["Parameters"]["Payload"]["execution.$"] == "$$.Execution.Name"
    assert states["Tiles"]["Catch"][0]["Next"] == "Report"


# --- the layer ----------------------------------------------------------------------------------
def _bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


@needs_sam
def test_layer_fits_lambda_and_ships_no_boto():
    from cloudfree.pipeline.deploy import build

    build(REPO)  # cached: only rebuilds when template/functions/layers/src changed
    root = REPO / ".aws-sam" / "build"
    layer = root / "CloudfreeLayer"
    functions = {p.name: _bytes(p) for p in root.iterdir() if p.name.endswith("Function")}
    assert set(functions) == {f"{k}Function" for k in FUNCTIONS}
    layer_bytes = _bytes(layer)
    total = layer_bytes + max(functions.values())
    print(f"\nlayer {layer_bytes / 2**20:.1f} MiB unzipped; with the largest function "
          f"{total / 2**20:.1f} MiB (limit 250 MiB)")
    assert total < LIMIT_BYTES
    site = layer / "python"
    for pkg in ("boto3", "botocore", "s3transfer"):
        assert not (site / pkg).exists(), f"{pkg} must come from the Lambda runtime"
    for pkg in ("cloudfree", "numpy", "rasterio", "rio_cogeo", "pystac", "pystac_client",
                "aws_lambda_powertools", "pydantic", "aws_xray_sdk"):
        assert (site / pkg).is_dir(), f"{pkg} missing from the layer"
    assert (site / "cloudfree" / "events.py").exists()
    assert not list(site.rglob("__pycache__"))
    assert list(site.glob("rasterio-1.4.3.dist-info"))
    numpy_version = next(site.glob("numpy-*.dist-info")).name.split("-")[1]
    assert tuple(int(x) for x in numpy_version.split(".")[:2]) < (2, 3)
