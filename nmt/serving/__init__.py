"""The HTTP API: the dynamic batching service, the FastAPI app, the load test."""
