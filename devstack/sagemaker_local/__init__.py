"""``sagemaker-local``: a local SageMaker-runtime endpoint in front of the container (``container/serve``).

User code runs unchanged with ``boto3.client("sagemaker-runtime", endpoint_url="http://127.0.0.1:PORT")``:
InvokeEndpoint (multi-model, ``TargetModel``) and InvokeEndpointAsync (S3 input →
``<S3OutputPath>/<uuid>.out``).
"""
