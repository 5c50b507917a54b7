"""The textbook handler, as Cloud Functions samples write it: a SendGrid client and a Mail built
per event, then send(). SENDGRID_API_HOST points it at the benchmark's stand-in."""

import os

import functions_framework
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail


@functions_framework.cloud_event
def handle_storage_event(cloud_event):
    data = cloud_event.data
    message = Mail(
        from_email=os.environ["NOTIFY_FROM"],
        to_emails=os.environ["NOTIFY_TO"],
        subject=f"New file: {data['name']}",
        html_content=(
            f"<p>Bucket: {data['bucket']}</p><p>File: {data['name']}</p>"
            f"<p>Created: {data['timeCreated']}</p><p>Event: {cloud_event['id']} ({cloud_event['type']})</p>"
        ),
    )
    client = SendGridAPIClient(os.environ["SENDGRID_API_KEY"], host=os.environ["SENDGRID_API_HOST"])
    client.send(message)
