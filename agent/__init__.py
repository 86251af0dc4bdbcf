"""The device agent: verified install, health-checked activation, rollback, inference API.

Importing this package loads only the standard library; the MQTT client, numpy and the
model runtimes are imported when first used, because the agent runs on 1 GB boards.
"""
