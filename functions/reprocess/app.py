"""Reprocess (S3 event on requests/): start an execution per request, or reject it."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import S3Notification, s3_objects
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=S3Notification)
def lambda_handler(event: S3Notification, context: LambdaContext) -> dict:
    settings = Settings.from_env()
    results = [tasks.reprocess(bucket, key, settings) for bucket, key in s3_objects(event)]
    started = sum(1 for r in results if r["status"] == "started")
    metrics.add_metric(name="ReprocessStarted", unit=MetricUnit.Count, value=started)
    logger.info("requests handled", extra={"results": results})
    return {"results": results}
