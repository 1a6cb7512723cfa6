"""Publish (S3 event on a tile's DONE.json): build, validate and write its STAC item."""

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
    results = [tasks.publish(bucket, key, settings) for bucket, key in s3_objects(event)]
    metrics.add_metric(name="ItemsPublished", unit=MetricUnit.Count, value=len(results))
    logger.info("published", extra={"results": results})
    return {"results": results}
