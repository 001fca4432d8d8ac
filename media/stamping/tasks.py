"""Preparing uploaded files for stamped delivery ahead of the first download."""

import logging

from celery import shared_task

from ..exceptions import StorageUnavailable

logger = logging.getLogger(__name__)


@shared_task(
    autoretry_for=(StorageUnavailable,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
    acks_late=True,
)
def download_prepare(source_name: str) -> str:
    """Prepare one protected file; idempotent (a prepared version is only read). Returns
    the problem that stops stamping, "" when there is none."""
    from ..exceptions import SourceMissing
    from .prepare import prepared_get

    try:
        return prepared_get(source_name).problem
    except SourceMissing:
        # Deleted or replaced before the task ran: nothing to prepare.
        logger.info("Not preparing %s: it is no longer in the store", source_name)
        return ""
