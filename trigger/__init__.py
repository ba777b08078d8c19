"""Event-driven and batch submission of image sets to the spleen segmentation endpoint.

Runs in an AWS Lambda function (``trigger.handler.lambda_handler``, packaged by ``ahi-spleen deploy-trigger``)
and in the ``ahi-spleen batch`` back-fill; needs only boto3, so the Lambda zip holds this package and nothing
else.
"""
