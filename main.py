"""Cloud Function entry points: ``handle_storage_event`` (deploy with ``deploy/deploy.sh``),
``flush_digests``, which Cloud Scheduler calls every minute (``deploy/deploy.sh flush``), and
``sendgrid_events``, SendGrid's signed Event Webhook (``deploy/deploy.sh events``).

The pipeline is built once per instance, at import, so a configuration error stops the deploy
with a clear message instead of failing every event. functions-framework imports this module
inside its Flask app context, so the HTTP edge is installed on that app here.
"""

import gc

import functions_framework
from flask import current_app

# Start-up allocates much and frees little: the collections it would trigger are wasted work
# (about 3 ms of every cold start). Collection resumes as soon as the pipeline is built.
_collecting = gc.isenabled()
gc.disable()
try:
    from notifier import http
    from notifier.pipeline import Pipeline

    pipeline = Pipeline.from_environment()
    http.install(current_app, pipeline)
finally:
    if _collecting:
        gc.enable()


@functions_framework.cloud_event
def handle_storage_event(cloud_event):
    http.handle(pipeline, cloud_event)


@functions_framework.http
def flush_digests(request):
    # Imported here, not above: the event function's cold start never loads the flush.
    from notifier.scheduled_flush import answer

    return answer(pipeline, request.method)


@functions_framework.http
def sendgrid_events(request):
    # Imported here, not above: the event function's cold start never loads the webhook.
    from notifier.webhook import answer as webhook_answer

    return webhook_answer(pipeline, request)
