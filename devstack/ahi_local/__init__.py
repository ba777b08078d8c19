"""``ahi-local``: a local AWS HealthImaging-compatible service (Starlette + uvicorn).

Start it with ``ahi-local serve --data-dir DIR`` and talk to it with the standard
``boto3.client("medical-imaging", endpoint_url=..., config=Config(inject_host_prefix=False))``.
This package imports nothing heavy at import time; the server lives in :mod:`devstack.ahi_local.server`.
"""
