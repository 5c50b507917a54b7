"""Cloud Function entry point: ``handle_storage_event`` (deploy with ``deploy/deploy.sh``).

The pipeline is built once per instance, at import, so a configuration error stops the deploy
with a clear message instead of failing every event.
"""

import functions_framework

from notifier.pipeline import Pipeline, error_response

pipeline = Pipeline.from_environment()


@functions_framework.cloud_event
def handle_storage_event(cloud_event):
    pipeline.handle(cloud_event)


@functions_framework.errorhandler(Exception)
def _answer_error(error):
    # Requests the framework cannot parse as events are acknowledged (2xx) after one ERROR line:
    # redelivering them could never succeed. Only RetryLater answers 500.
    return error_response(pipeline, error)
