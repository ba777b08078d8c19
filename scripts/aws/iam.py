"""IAM service roles: check that a role exists and trusts the right AWS service, or create it
(``--create-roles``).

Role kinds and the service that assumes them: ``sagemaker`` (model containers: S3 model data, ECR pull, logs,
AHI reads), ``codebuild`` (docker build + ECR push), ``codepipeline`` (S3 artefacts + start CodeBuild),
``ahi-import`` (HealthImaging reads the DICOM input and writes the import output in S3), ``lambda`` (the event
trigger: AHI reads, request objects in S3, InvokeEndpointAsync, its dead-letter queue).

The SageMaker role reads AHI only, unless the deployment asks for write-back (``--allow-write-back``): then it
may also store the SEG with STOW-RS (``StoreDICOM``/``StoreDICOMStudy``), run the import-job route
(``StartDICOMImportJob``/``GetDICOMImportJob``) and pass the deployment's own ``ahi-import`` role to
HealthImaging, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.parse
from typing import Any

from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError, error_code, is_ours, tag_list

logger = logging.getLogger(__name__)

PRINCIPALS = {
    "sagemaker": "sagemaker.amazonaws.com",
    "codebuild": "codebuild.amazonaws.com",
    "codepipeline": "codepipeline.amazonaws.com",
    "ahi-import": "medical-imaging.amazonaws.com",
    "lambda": "lambda.amazonaws.com",
}

_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
_ECR_PULL = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
]
_ECR_PUSH = _ECR_PULL + [
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:DescribeRepositories",
    "ecr:DescribeImages",
]
_AHI_READ = [
    "medical-imaging:GetImageSet",
    "medical-imaging:GetImageSetMetadata",
    "medical-imaging:GetImageFrame",
    "medical-imaging:SearchImageSets",
    "medical-imaging:GetDatastore",
]
_AHI_WRITE_BACK = [
    "medical-imaging:StoreDICOM",
    "medical-imaging:StoreDICOMStudy",
    "medical-imaging:StartDICOMImportJob",
    "medical-imaging:GetDICOMImportJob",
]


def _write_back_statements(import_role: str) -> list[dict[str, Any]]:
    return [
        {"Effect": "Allow", "Action": _AHI_WRITE_BACK, "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": f"arn:aws:iam::*:role/{import_role}",
            "Condition": {"StringEquals": {"iam:PassedToService": PRINCIPALS["ahi-import"]}},
        },
    ]


def _bucket_statements(bucket: str, write: bool) -> list[dict[str, Any]]:
    actions = ["s3:GetObject", "s3:GetObjectVersion"] + (["s3:PutObject"] if write else [])
    return [
        {"Effect": "Allow", "Action": actions, "Resource": f"arn:aws:s3:::{bucket}/*"},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketVersioning"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
    ]


def role_policy(kind: str, bucket: str, write_back_import_role: str | None = None) -> dict[str, Any]:
    """The inline policy a role of ``kind`` gets when the CLI creates it (least privilege for our use).

    ``write_back_import_role`` (sagemaker roles only) adds the write-back actions, with PassRole limited to
    that role name.
    """
    if write_back_import_role is not None and kind != "sagemaker":
        raise ValueError(f"write-back actions are for the sagemaker role, not a {kind} role")
    statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": _LOGS, "Resource": "*"}]
    if kind == "sagemaker":
        statements += _bucket_statements(bucket, write=True)
        statements += [
            {"Effect": "Allow", "Action": _ECR_PULL, "Resource": "*"},
            {"Effect": "Allow", "Action": _AHI_READ, "Resource": "*"},
            {"Effect": "Allow", "Action": ["cloudwatch:PutMetricData", "sns:Publish"], "Resource": "*"},
        ]
        if write_back_import_role is not None:
            statements += _write_back_statements(write_back_import_role)
    elif kind == "codebuild":
        statements += _bucket_statements(bucket, write=True)
        statements += [{"Effect": "Allow", "Action": _ECR_PUSH, "Resource": "*"}]
    elif kind == "codepipeline":
        statements += _bucket_statements(bucket, write=True)
        statements += [
            {
                "Effect": "Allow",
                "Action": ["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                "Resource": "*",
            }
        ]
    elif kind == "ahi-import":
        statements += _bucket_statements(bucket, write=True)
    elif kind == "lambda":  # the event trigger: claims request objects, invokes the async endpoint
        statements += _bucket_statements(bucket, write=True)
        statements += [
            {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": f"arn:aws:s3:::{bucket}/*"},
            {"Effect": "Allow", "Action": _AHI_READ, "Resource": "*"},
            {"Effect": "Allow", "Action": ["sagemaker:InvokeEndpointAsync"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:*:*:*-trigger-dlq"},
        ]
    else:
        raise ValueError(f"unknown role kind {kind!r}; known: {sorted(PRINCIPALS)}")
    return {"Version": "2012-10-17", "Statement": statements}


def trust_policy(principal: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": principal}, "Action": "sts:AssumeRole"}],
    }


def _trusted_services(document: Any) -> set[str]:
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    services: set[str] = set()
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        service = statement.get("Principal", {}).get("Service", [])
        services.update([service] if isinstance(service, str) else service)
    return services


def role_name_of(role: str) -> str:
    """``arn:aws:iam::123:role/path/name`` or ``name`` → ``name``."""
    return role.rsplit("/", 1)[-1] if role.startswith("arn:") else role


def check_role(aws: Aws, role: str, kind: str) -> str:
    """Return the ARN of ``role`` (name or ARN) after checking that it trusts the service of ``kind``."""
    principal = PRINCIPALS[kind]
    try:
        found = aws.client("iam").get_role(RoleName=role_name_of(role))["Role"]
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            raise AwsCliError(
                f"IAM role {role!r} ({kind} role, assumed by {principal}) does not exist: create it, "
                "pass another role, or re-run with --create-roles"
            ) from exc
        raise
    trusted = _trusted_services(found.get("AssumeRolePolicyDocument", {}))
    if principal not in trusted:
        raise AwsCliError(
            f"IAM role {found['Arn']} does not trust {principal} (it trusts "
            f"{sorted(trusted) or 'no service'}): add {principal} to its trust policy or pass another role"
        )
    return str(found["Arn"])


def _role_exists(aws: Aws, role: str) -> bool:
    try:
        aws.client("iam").get_role(RoleName=role)
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise
    return True


def _role_is_ours(aws: Aws, role: str, names: Names) -> bool:
    tags = aws.client("iam").list_role_tags(RoleName=role).get("Tags", [])
    return is_ours(tags, names.name)


def ensure_role(
    aws: Aws,
    names: Names,
    kind: str,
    bucket: str,
    role: str | None = None,
    create: bool = False,
    write_back: bool = False,
) -> str:
    """Find (and check) the ``kind`` role; create it with its inline policy when missing and ``create`` is
    set.

    With ``write_back`` and ``create``, the deployment's own role (the default name and our tags, never one
    passed in) gets the write-back actions even when it already exists: its inline policy is put again, which
    is idempotent. Any other role is never changed; it needs those actions from its owner.
    """
    own = role is None
    role = role or names.role(kind)
    import_role = names.role("ahi-import") if write_back else None
    policy = json.dumps(role_policy(kind, bucket, import_role))
    try:
        arn = check_role(aws, role, kind)
    except AwsCliError:
        # never rewrite a role given by ARN or an existing role's trust policy
        if not create or role.startswith("arn:") or _role_exists(aws, role):
            raise
    else:
        if write_back and create and own and _role_is_ours(aws, role, names):
            aws.call(
                "iam", "put_role_policy", RoleName=role, PolicyName=f"{role}-policy", PolicyDocument=policy
            )
        elif write_back:
            logger.warning(
                "role %s is not managed here: it needs %s and iam:PassRole on %s for write-back",
                role,
                ", ".join(_AHI_WRITE_BACK),
                import_role,
            )
        return arn
    created = aws.call(
        "iam",
        "create_role",
        RoleName=role,
        AssumeRolePolicyDocument=json.dumps(trust_policy(PRINCIPALS[kind])),
        Description=f"ahi-spleen {kind} role for {names.name}",
        Tags=tag_list(names.name),
    )
    aws.call(
        "iam",
        "put_role_policy",
        RoleName=role,
        PolicyName=f"{role}-policy",
        PolicyDocument=policy,
    )
    return str(created["Role"]["Arn"]) if "Role" in created else f"<arn of new role {role}>"


def add_write_back_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-write-back",
        action="store_true",
        help="with --create-roles: the deployment's SageMaker role may also store SEGs in AHI (StoreDICOM, "
        "the import-job route, PassRole on <name>-ahi-import); without it the role reads AHI only",
    )
