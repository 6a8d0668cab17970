"""``loraclf serve``: finished runs behind one HTTP endpoint, many adapters over one copy of each backbone.

registry.py (the runs by name, loading, new runs in a served folder), sharing.py (one copy of each backbone's
pretrained tensors), batching.py (the queue and dynamic batcher), wire.py (request and response formats),
metrics.py (Prometheus text), app.py (FastAPI routes on uvicorn, the key, the limits, the drain). FastAPI, uvicorn and
prometheus-client come with the ``serve`` extra and are imported only by ``loraclf serve``.
"""
