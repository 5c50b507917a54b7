"""Cloud Function entry point: ``handle_storage_event`` (deploy with ``deploy/deploy.sh``).

The pipeline is built once per instance, at import, so a configuration error stops the deploy
with a clear message instead of failing every event.
"""

import functions_framework

from notifier.http import error_response, sent_in_binary_mode
from notifier.pipeline import Pipeline

pipeline = Pipeline.from_environment()


@functions_framework.cloud_event
def handle_storage_event(cloud_event):
    pipeline.handle(cloud_event, percent_encoded=sent_in_binary_mode())


@functions_framework.errorhandler(Exception)
def _answer_error(error):
    return error_response(pipeline, error)
