"""Plan: validate the execution input, write the tile list the Distributed Map reads."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import PlanEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=PlanEvent)
def lambda_handler(event: PlanEvent, context: LambdaContext) -> dict:
    result = tasks.plan(event.model_dump(), Settings.from_env())
    metrics.add_metric(name="TilesPlanned", unit=MetricUnit.Count, value=result["count"])
    logger.info("planned", extra={"count": result["count"], "year": result["year"]})
    return result
