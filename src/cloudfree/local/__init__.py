"""The local stack: MiniStack (S3, Lambda, Step Functions, CloudFormation) and a STAC API
(stac-fastapi-pgstac on PostgreSQL 15 + PostGIS), all on 127.0.0.1, state under one run folder."""

from .services import Endpoints, LocalStack, stack

__all__ = ["LocalStack", "Endpoints", "stack"]
