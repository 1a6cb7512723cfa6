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

from cloudfree import layout, retry
from cloudfree.errors import TRANSIENT_ERRORS
from cloudfree.events import MODELS

REPO = Path(__file__).resolve().parents[2]
SAM_VENV = REPO / ".venv-sam" / "bin"
ASL = REPO / "statemachine" / "composite.asl.json"
FUNCTIONS = {"Plan": "plan", "Select": "select", "Decide": "decide", "Median": "median",
             "Assemble": "assemble", "Complete": "complete", "RecordFailure": "record_failure",
             "Report": "report", "Publish": "publish", "Reprocess": "reprocess"}
AWS_RETRY = {"Lambda.ServiceException", "Lambda.TooManyRequestsException",
             "Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException",
             "Lambda.AWSLambdaException", "Lambda.Unknown", "Sandbox.Timedout", "States.Timeout"}
#: AWS's default concurrent executions per account and region; the template's defaults must
#: leave room (100) for plan, report, reprocess and retries.
ACCOUNT_CONCURRENCY = 1000
CONCURRENCY_BUDGET = 900
LIMIT_BYTES = 250 * 1024 * 1024  # Lambda: code + layers, unzipped

needs_sam = pytest.mark.skipif(not (SAM_VENV / "sam").exists(), reason="no .venv-sam")
LINT_VENV = REPO / ".venv-lint" / "bin"
needs_lint = pytest.mark.skipif(not (LINT_VENV / "checkov").exists(), reason="no .venv-lint")


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
        value = "7" if name.endswith(("Concurrency", "Percentage", "Timeout")) else f"sub-{name}"
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
    for name in ("MedianTimeout", "AssembleTimeout"):  # each allowed value has a Task timeout
        assert {str(v) for v in p[name]["AllowedValues"]} <= set(
            template["Mappings"]["TaskTimeout"])
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


def _key_of(uri: str, bucket: str) -> str:
    assert uri.startswith(f"s3://{bucket}/"), uri
    return uri[len(f"s3://{bucket}/"):]


def test_s3_event_filters_are_derived_from_layout(resources):
    """The notification filters match exactly the keys Layout writes (and nothing else)."""
    lay = layout.Layout("w", "d", "c")
    done_key = _key_of(lay.tile_done(2023, "33UUP"), "w")
    prefix, suffix = done_key.split("/", 1)[0] + "/", done_key.rsplit("/", 1)[1]
    assert (prefix, suffix) == (layout.WORK_PREFIX, layout.DONE_MARKER)
    assert layout.Layout.parse_tile_done(done_key) == (2023, "33UUP")
    done = resources["PublishFunction"]["Properties"]["Events"]["TileDone"]["Properties"]
    assert done["Bucket"] == {"Ref": "WorkBucket"}
    assert done["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": prefix},
                                                {"Name": "suffix", "Value": suffix}]
    # no other work-bucket object ends like a marker (publish would fire on it)
    for uri in (lay.manifest(2023, "33UUP"), lay.tile_empty(2023, "33UUP"),
                lay.tile_failed(2023, "33UUP"), lay.band_stats(2023, "33UUP", "red"),
                lay.window_stats(2023, "33UUP", "red", 0, 0)):
        assert not uri.endswith(suffix) and layout.Layout.parse_tile_done(_key_of(uri, "w")) \
            is None
    req_key = _key_of(lay.request("r1.json"), "c")
    req = resources["ReprocessFunction"]["Properties"]["Events"]["Request"]["Properties"]
    assert req["Bucket"] == {"Ref": "ControlBucket"}
    assert req["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix",
                                                "Value": layout.REQUESTS_PREFIX}]
    assert req_key.startswith(layout.REQUESTS_PREFIX)
    # what reprocess and report write must never re-trigger reprocess
    for uri in (lay.rejected("r1.json"), lay.pending_request("e1"), lay.report("e1"),
                lay.plan_list("e1"), lay.results_prefix()):
        assert not _key_of(uri, "c").startswith(layout.REQUESTS_PREFIX), uri


def test_work_bucket_expires_work_prefix(resources):
    (rule,) = resources["WorkBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == layout.WORK_PREFIX
    assert rule["ExpirationInDays"] == {"Ref": "WorkExpirationDays"}
    lay = layout.Layout("w", "d", "c")
    assert _key_of(lay.manifest(2023, "33UUP"), "w").startswith(rule["Prefix"])


def test_data_bucket_is_public_only_under_the_product_prefix(resources):
    props = resources["DataBucket"]["Properties"]
    pab = props["PublicAccessBlockConfiguration"]
    assert pab["BlockPublicAcls"] is True and pab["IgnorePublicAcls"] is True
    assert pab["BlockPublicPolicy"] is False and pab["RestrictPublicBuckets"] is False
    (cors,) = props["CorsConfiguration"]["CorsRules"]
    assert "GET" in cors["AllowedMethods"]
    statements = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (stmt,) = [s for s in statements if s["Effect"] == "Allow"]
    assert stmt["Principal"] == "*"
    assert stmt["Action"] == "s3:GetObject"
    assert stmt["Resource"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{DataBucket}}/{layout.DATA_PREFIX}/*"}
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
def test_the_committed_definition_is_the_rendering_of_the_error_table():
    """Retry blocks are generated (``make asl``): a hand edit or an unrendered change fails."""
    text = ASL.read_text()
    assert retry.render_definition(text) == text, "run `make asl` and commit the result"


def test_every_task_retries_from_the_table_and_times_out_after_its_function():
    tasks = [(p + n, s) for p, n, s in walk_states(substituted_asl()["States"])
             if s["Type"] == "Task"]
    assert len(tasks) == 8
    for where, state in tasks:
        assert state["Retry"] == retry.retriers(), where
        assert state["TimeoutSeconds"] == 7, where  # ${<Function>TaskTimeout}, substituted
    placeholders_used = placeholders(ASL.read_text())
    assert {retry.task_timeout_placeholder(f) for f in FUNCTIONS
            if f not in ("Publish", "Reprocess")} <= placeholders_used


def test_error_table_covers_ours_and_aws_names():
    named = [e for rule in retry.TABLE for e in rule.errors]
    assert len(named) == len(set(named)), "an error name appears in two rules"
    assert retry.our_error_names() <= set(named)
    assert set(TRANSIENT_ERRORS) | AWS_RETRY <= {e for e in named if retry.policy(e)}
    # deterministic errors are never retried; the wildcard is last and not retried
    for name in ("InputError", "NoScenesError", "ConfigError", "ValidationError"):
        assert retry.policy(name) is None
    assert retry.TABLE[-1].errors == ("States.TaskFailed",) and retry.TABLE[-1].backoff is None
    # MiniStack's single name (TransientError included there) gets the transient budget
    assert retry.policy("Runtime.HandlerError") == retry.TRANSIENT.__class__(2, 2, 4, 30)
    # concurrency bursts: many jittered attempts, capped delay, minutes of patience
    burst = retry.policy("Lambda.TooManyRequestsException")
    assert burst.attempts >= 10 and burst.jitter and burst.max_delay
    assert burst.worst_wait() >= 600
    rendered = retry.retriers()
    assert rendered[0]["MaxAttempts"] == 0 and "InputError" in rendered[0]["ErrorEquals"]
    assert all(r.get("MaxDelaySeconds", 1) <= 120 for r in rendered)


def test_task_timeouts_exceed_each_function_timeout(template, resources):
    """TimeoutSeconds = the function's Timeout + margin, whatever the timeout parameters are."""
    mapping = template["Mappings"]["TaskTimeout"]
    assert {int(k) + retry.TASK_TIMEOUT_MARGIN for k in mapping} == {
        int(v["Seconds"]) for v in mapping.values()}
    for k, v in mapping.items():
        assert int(v["Seconds"]) == int(k) + retry.TASK_TIMEOUT_MARGIN
    subs = resources["CompositeStateMachine"]["Properties"]["DefinitionSubstitutions"]
    for fn in set(FUNCTIONS) - {"Publish", "Reprocess"}:
        timeout = resources[f"{fn}Function"]["Properties"]["Timeout"]
        key = timeout if isinstance(timeout, dict) else str(timeout)
        assert subs[retry.task_timeout_placeholder(fn)] == {
            "Fn::FindInMap": ["TaskTimeout", key, "Seconds"]}, fn


def test_fault_rate_is_a_parameter_off_by_default_passed_as_env(template, resources):
    p = template["Parameters"]["FaultRate"]
    assert float(p["Default"]) == 0 and (float(p["MinValue"]), float(p["MaxValue"])) == (0, 1)
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["FAULT_RATE"] == {"Ref": "FaultRate"}


def test_a_local_deploy_passes_every_parameter_so_none_keeps_a_previous_value(template):
    """``sam deploy`` keeps the previous value of a parameter it is not given (UsePreviousValue):
    a local deploy names them all, the template's default unless overridden, so the deploy
    after a ``FaultRate=0.2`` one turns faults off again."""
    from cloudfree.pipeline.deploy import local_parameters, template_defaults

    defaults = {k: str(v["Default"]) for k, v in template["Parameters"].items()}
    assert template_defaults() == defaults
    plain = local_parameters("http://127.0.0.1:4999", "http://stac.local")
    faulty = local_parameters("http://127.0.0.1:4999", "http://stac.local", {"FaultRate": "0.2"})
    assert set(plain) == set(faulty) == set(template["Parameters"])
    assert (plain["FaultRate"], faulty["FaultRate"]) == ("0", "0.2")
    assert (plain["Local"], plain["LocalS3Endpoint"]) == ("true", "127.0.0.1:4999")


def test_assemble_cannot_write_the_public_bucket(resources):
    """COGs are staged in the work bucket; only publish writes the data bucket's products."""
    text = json.dumps(resources["AssembleFunction"]["Properties"]["Policies"])
    assert "-data-" not in text and "-work-" in text


def test_a_failing_report_ends_the_execution_through_a_named_fail_state():
    states = substituted_asl()["States"]
    (catch,) = states["Report"]["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == "Outcome"
    assert catch["ResultPath"] == "$.report_error"
    nexts = {c["Variable"]: c["Next"] for c in states["Outcome"]["Choices"]}
    assert nexts == {"$.tiles_error": "TooManyFailures", "$.report_error": "ReportFailed"}
    assert states["ReportFailed"]["Type"] == "Fail"


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
    assert tiles["Type"] == "Map" and asl["States"]["Plan"]["Next"] == "Planned"
    planned = asl["States"]["Planned"]
    assert planned["Default"] == "Tiles" and planned["Choices"][0]["Next"] == "InvalidInput"
    assert asl["States"]["InvalidInput"] == {**asl["States"]["InvalidInput"], "Type": "Fail",
                                             "ErrorPath": "$.error", "CausePath": "$.cause"}
    assert tiles["ItemReader"]["Resource"].endswith(":states:::s3:getObject")
    assert tiles["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
    assert tiles["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED",
                                                         "ExecutionType": "STANDARD"}
    assert tiles["MaxConcurrency"] == 7 and tiles["ToleratedFailurePercentage"] == 7
    assert tiles["ResultWriter"]["Parameters"]["Prefix"] == layout.RESULTS_PREFIX
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
    # bytecode is shipped on purpose (tests/unit/test_layer.py: a cold start compiles nothing);
    # only tests and stray scripts are stripped
    assert not [p for p in site.rglob("tests") if p.is_dir()]
    assert list(site.glob("rasterio-1.4.3.dist-info"))
    numpy_version = next(site.glob("numpy-*.dist-info")).name.split("-")[1]
    assert tuple(int(x) for x in numpy_version.split(".")[:2]) < (2, 3)


# --- concurrency and security -------------------------------------------------------------------
def test_concurrency_defaults_fit_the_account(template):
    """Peak Lambdas = tiles x (bands x windows per band + one publish) <= the stated budget."""
    p = template["Parameters"]
    tiles, bands, windows = (int(p[n]["Default"]) for n in
                             ("TileConcurrency", "BandConcurrency", "WindowConcurrency"))
    peak = tiles * (bands * windows + 1)
    assert peak <= CONCURRENCY_BUDGET < ACCOUNT_CONCURRENCY, peak
    assert tiles >= 20, "too few tiles at once for a world year"
    text = (REPO / "template.yaml").read_text()
    assert f"= {tiles} x ({bands} x {windows} + 1) = {peak} <= {CONCURRENCY_BUDGET}" in text


def _statements(resource: dict) -> list[dict]:
    out = []
    for pol in resource["Properties"].get("Policies", []):
        if isinstance(pol, dict) and "Statement" in pol:
            out += pol["Statement"]
    return out


def test_every_bucket_denies_plain_http(resources):
    for bucket in ("WorkBucket", "DataBucket", "ControlBucket"):
        (policy,) = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"
                     and r["Properties"]["Bucket"] == {"Ref": bucket}]
        deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                if s["Effect"] == "Deny"]
        assert len(deny) == 1, bucket
        (d,) = deny
        assert d["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert d["Principal"] == "*" and d["Action"] == "s3:*"
        assert {json.dumps(r) for r in d["Resource"]} == {
            json.dumps({"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{bucket}}}"}),
            json.dumps({"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{{bucket}}}/*"})}


def test_functions_name_their_s3_actions_without_wildcards(resources):
    """No S3 policy templates (they add ACL and lifecycle rights) and no wildcard actions."""
    # DeleteObject (issue 11 publish): assemble removes a band's stale statistics before a
    # recompute, publish prunes asset versions older than the previous one
    allowed = {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:AbortMultipartUpload",
               "s3:DeleteObject"}
    for logical in [f"{f}Function" for f in FUNCTIONS] + ["CompositeStateMachine"]:
        policies = resources[logical]["Properties"]["Policies"]
        for pol in policies:
            assert not any(k.startswith("S3") for k in pol), (logical, pol)
        for s in _statements(resources[logical]):
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert s["Effect"] == "Allow"
            assert not any("*" in a for a in actions), (logical, s)
            s3 = [a for a in actions if a.startswith("s3:")]
            assert set(s3) <= allowed | {"s3:ListMultipartUploadParts"}, (logical, s3)
    # who may write the public bucket: publish (versioned COGs, items, index records) and
    # report (collection.json, rebuilt once per execution); assemble stages COGs in the work
    # bucket (intended change, issue 11)
    writers = {f for f in FUNCTIONS if any(
        "s3:PutObject" in s["Action"] and "-data-" in json.dumps(s["Resource"])
        for s in _statements(resources[f"{f}Function"]))}
    assert writers == {"Publish", "Report"}


def test_s3_triggered_functions_keep_failed_events(resources):
    queue = resources["FailedEventsQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert int(queue["Properties"]["MessageRetentionPeriod"]) == 14 * 24 * 3600
    for fn in ("PublishFunction", "ReprocessFunction"):
        cfg = resources[fn]["Properties"]["EventInvokeConfig"]
        assert cfg["DestinationConfig"]["OnFailure"] == {
            "Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
        assert cfg["MaximumRetryAttempts"] == 2


def test_checkov_skips_are_explained(template):
    for logical, res in template["Resources"].items():
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), logical
            assert len(skip.get("comment", "")) >= 20, (logical, skip)


@needs_lint
def test_checkov_passes_with_every_skip_explained():
    res = subprocess.run(
        [str(LINT_VENV / "checkov"), "-f", "template.yaml", "--framework", "cloudformation",
         "--compact", "--quiet", "--skip-download", "--output", "json"],
        cwd=REPO, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(res.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and summary["failed"] == 0, failed
    assert summary["passed"] >= 30 and summary["skipped"] >= 40, summary
    assert res.returncode == 0


def test_cost_plan_defaults_are_the_templates(template):
    """``cloudfree plan`` projects the deployed defaults: its hand-copied concurrency, memory and
    scene count (cloudfree.costs, its CLI) must follow template.yaml when that changes."""
    import inspect

    from cloudfree import costs

    p = {name: int(v["Default"]) for name, v in template["Parameters"].items()
         if name in ("TileConcurrency", "BandConcurrency", "WindowConcurrency", "SceneCount",
                     "MedianMemoryMB", "AssembleMemoryMB")}
    assert (costs.TILE_CONCURRENCY, costs.BAND_CONCURRENCY, costs.WINDOW_CONCURRENCY) == (
        p["TileConcurrency"], p["BandConcurrency"], p["WindowConcurrency"])
    project = inspect.signature(costs.project).parameters
    assert project["scenes"].default == p["SceneCount"]
    assert project["memory_mb"].default == p["MedianMemoryMB"] == p["AssembleMemoryMB"]
    assert inspect.signature(costs.tile_cost).parameters["memory_mb"].default == \
        p["MedianMemoryMB"]
    from cloudfree.cli import build_parser

    args = build_parser().parse_args(["plan", "--year", "2023", "--tiles", "33UUP"])
    assert (args.scenes, args.memory_mb, args.tile_concurrency) == (
        p["SceneCount"], p["MedianMemoryMB"], p["TileConcurrency"])


def test_public_storage_class_is_a_parameter_the_settings_accept(template):
    """PublicStorageClass: the values cloudfree.settings takes, Intelligent-Tiering by default,
    passed to every function as PUBLIC_STORAGE_CLASS (publish copies the COGs in it)."""
    from cloudfree.settings import PUBLIC_STORAGE_CLASSES

    p = template["Parameters"]["PublicStorageClass"]
    assert tuple(p["AllowedValues"]) == PUBLIC_STORAGE_CLASSES
    assert p["Default"] == "INTELLIGENT_TIERING" == PUBLIC_STORAGE_CLASSES[0]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["PUBLIC_STORAGE_CLASS"] == {"Ref": "PublicStorageClass"}


def test_cog_compression_is_a_parameter_the_settings_accept(template):
    """CogCompression: the codecs cloudfree.settings takes (each tested lossless on real
    pixels), DEFLATE by default (every TIFF reader), passed as COG_COMPRESSION; the plan has a
    calibration for every other one."""
    from cloudfree.costs import calibration
    from cloudfree.settings import COG_COMPRESSIONS

    p = template["Parameters"]["CogCompression"]
    assert tuple(p["AllowedValues"]) == COG_COMPRESSIONS
    assert p["Default"] == "DEFLATE" == COG_COMPRESSIONS[0]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["COG_COMPRESSION"] == {"Ref": "CogCompression"}
    assert set(calibration()["codecs"]) == set(COG_COMPRESSIONS) - {"DEFLATE"}
