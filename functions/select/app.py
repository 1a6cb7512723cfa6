"""Select: search, rank and harmonize one tile's scenes; return a small reference."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import SelectEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=SelectEvent)
def lambda_handler(event: SelectEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year)
    result = tasks.select(event.tile, event.year, event.options, Settings.from_env())
    metrics.add_metric(name="ScenesSelected", unit=MetricUnit.Count, value=result["scenes"])
    logger.info("selected", extra={"status": result["status"], "scenes": result["scenes"]})
    return result
