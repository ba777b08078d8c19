"""S3 helpers: buckets, idempotent uploads (skip objects whose content is already there), prefix deletion."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ahi_connector.s3uri import S3Uri
from scripts.aws.session import Aws, AwsCliError, Call, error_code, tag_map
from scripts.aws.state import State

logger = logging.getLogger(__name__)

SHA256_META = "sha256"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``, parsed by :class:`ahi_connector.s3uri.S3Uri`.

    A URI ending in ``/`` names a prefix and keeps its trailing ``/``, so a prefix never matches a sibling
    (``s3://b/spleen/`` is not ``s3://b/spleen-old``).
    """
    parsed = S3Uri.parse(uri)
    return parsed.bucket, parsed.prefix if uri.strip().endswith("/") else parsed.key


def read_object(aws: Aws, uri: str) -> bytes | None:
    """The bytes of the S3 object ``uri``, or None when it does not exist (yet)."""
    bucket, key = parse_s3_uri(uri)
    try:
        return bytes(aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def bucket_exists(aws: Aws, bucket: str) -> bool:
    try:
        aws.client("s3").head_bucket(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied"):
            raise AwsCliError(
                f"S3 bucket {bucket!r} exists but this account cannot access it; choose another --bucket"
            ) from exc
        raise
    return True


def ensure_bucket(aws: Aws, bucket: str, name: str, state: State, versioned: bool = False) -> None:
    """Create ``bucket`` (recorded in the state file) when missing; turn on versioning when asked."""
    if not bucket_exists(aws, bucket):
        params: dict[str, object] = {"Bucket": bucket}
        if aws.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
        aws.call("s3", "create_bucket", **params)
        aws.call(
            "s3",
            "put_bucket_tagging",
            Bucket=bucket,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tag_map(name).items()]},
        )
        if not aws.dry_run:
            state.add("buckets", bucket)
        current = ""
    else:
        current = aws.client("s3").get_bucket_versioning(Bucket=bucket).get("Status", "")
    if versioned and current != "Enabled":
        aws.call("s3", "put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Upload:
    key: str
    uploaded: bool  # False when the same content was already there


def upload_file(aws: Aws, path: Path, bucket: str, key: str, digest: str | None = None) -> Upload:
    """Upload ``path`` to ``s3://bucket/key`` unless an object with the same SHA-256 (our metadata) is
    there."""
    digest = digest or file_sha256(path)
    try:
        head = aws.client("s3").head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get(SHA256_META) == digest:
            logger.debug("s3://%s/%s already holds %s", bucket, key, path)
            return Upload(key, False)
    except Exception as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise
    if aws.dry_run:
        aws.call("s3", "upload_file", Filename=str(path), Bucket=bucket, Key=key)
        return Upload(key, True)
    aws.calls.append(Call("s3", "upload_file", {"Filename": str(path), "Bucket": bucket, "Key": key}))
    aws.client("s3").upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {SHA256_META: digest}})
    return Upload(key, True)


def list_keys(aws: Aws, bucket: str, prefix: str) -> list[str]:
    return [
        obj["Key"] for obj in aws.paginate("s3", "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)
    ]


def delete_prefix(aws: Aws, bucket: str, prefix: str) -> int:
    """Delete every object (and every version, for versioned buckets) under ``prefix``; return the count."""
    if not prefix or not prefix.endswith("/"):
        raise ValueError(
            f"refusing to delete S3 prefix {prefix!r}: it must be a non-empty folder ending in '/'"
        )
    if not bucket_exists(aws, bucket):
        return 0
    objects = [
        {"Key": v["Key"], "VersionId": v["VersionId"]}
        for kind in ("Versions", "DeleteMarkers")
        for v in aws.paginate("s3", "list_object_versions", kind, Bucket=bucket, Prefix=prefix)
    ]
    for start in range(0, len(objects), 1000):
        aws.call(
            "s3",
            "delete_objects",
            Bucket=bucket,
            Delete={"Objects": objects[start : start + 1000], "Quiet": True},
        )
    return len(objects)


def delete_bucket_if_empty(aws: Aws, bucket: str) -> bool:
    if not bucket_exists(aws, bucket):
        return False
    if any(True for _ in _first(aws.paginate("s3", "list_object_versions", "Versions", Bucket=bucket))):
        logger.info("bucket %s is not empty; keeping it", bucket)
        return False
    aws.call("s3", "delete_bucket", Bucket=bucket)
    return True


def _first(items: Iterable[object]) -> list[object]:
    for item in items:
        return [item]
    return []
