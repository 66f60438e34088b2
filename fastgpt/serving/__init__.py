"""Serving: many clients share one model over HTTP (``fastgpt serve``).

``engine`` (continuous batching, no HTTP), ``protocol`` (OpenAI's request and response shapes),
``app`` (the ASGI routes) and ``static/`` (the web page). Only ``engine`` works without the
``serve`` extra (starlette, uvicorn, pydantic, prometheus-client).
"""
