"""storage-notifier: Cloud Storage events → email. The entry point is ``main.handle_storage_event``."""
