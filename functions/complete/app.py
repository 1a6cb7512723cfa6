"""Complete: write the tile's DONE marker (its S3 event triggers publish)."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import CompleteEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=CompleteEvent)
def lambda_handler(event: CompleteEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year)
    result = tasks.complete(event.tile, event.year, event.execution, Settings.from_env())
    metrics.add_metric(name="TilesCompleted", unit=MetricUnit.Count, value=1)
    logger.info("tile complete")
    return result
