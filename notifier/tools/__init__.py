"""Tooling around the function: the CLI, the demo, the sandbox and the local cloud, process helpers.

Never imported by the function's own path (main.py, the pipeline and what it uses), and not
uploaded by ``gcloud functions deploy`` (.gcloudignore): it imports the product, never the reverse.
"""
