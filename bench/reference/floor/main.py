"""The floor: a bare functions-framework CloudEvent function that only returns."""

import functions_framework


@functions_framework.cloud_event
def handle_storage_event(cloud_event):
    return None
