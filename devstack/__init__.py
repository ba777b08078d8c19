"""Local doubles of the AWS services the product talks to, for development, tests, the demo and benchmarks.

``devstack`` is its own distribution (``devstack/pyproject.toml``, installed by ``scripts/install.sh`` with
the dev extra) and never ships in the wheel or the image: no product package imports it. It holds
``ahi_local`` (an AWS HealthImaging-compatible service), ``sagemaker_local`` (a SageMaker-runtime gateway in
front of ``container/serve``), ``processes`` (the one way to start a server process and wait for it),
``clients`` (boto3 clients for local endpoints) and ``stack`` (the whole offline stack used by the demo,
benchmarks and tests).
"""
