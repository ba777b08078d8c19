"""``upload-model``: build ``model.tar.gz`` with ``model.package`` (when asked or missing) and upload it under
the MME model prefix ``s3://<bucket>/<name>/models/`` so it is addressable as ``TargetModel="model.tar.gz"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from scripts.aws.names import Names
from scripts.aws.session import Aws, AwsCliError
from scripts.aws.state import State
from scripts.aws.storage import bucket_exists, ensure_bucket, list_keys, parse_s3_uri, upload_file

logger = logging.getLogger(__name__)

DEFAULT_ARCHIVE = Path("build/model.tar.gz")


@dataclass(frozen=True)
class UploadedModel:
    archive: Path
    s3_uri: str
    model_prefix_uri: str
    target_model: str
    uploaded: bool


def package_archive(output: Path) -> Path:
    """Build the archive with the model package's own builder (reproducible, byte-identical for same
    inputs)."""
    from model.package import build_archive  # heavy-ish import only when packaging is asked for

    return build_archive(output)


def upload_model(
    aws: Aws,
    names: Names,
    bucket: str,
    state: State,
    archive: Path = DEFAULT_ARCHIVE,
    build: bool = False,
    target_model: str | None = None,
) -> UploadedModel:
    """Upload ``archive`` (building it first when ``build`` is set or it does not exist)."""
    if build or not archive.is_file():
        logger.info("packaging %s with model.package", archive)
        package_archive(archive)
    target = target_model or archive.name
    if not target.endswith(".tar.gz"):
        raise ValueError(
            f"--target-model {target!r} must end in .tar.gz (SageMaker MME loads tar.gz archives)"
        )
    ensure_bucket(aws, bucket, names.name, state)
    key = names.model_key(target)
    result = upload_file(aws, archive, bucket, key)
    if not aws.dry_run:
        state.add("s3_prefixes", f"s3://{bucket}/{names.s3_root}")
    return UploadedModel(
        archive, f"s3://{bucket}/{key}", f"s3://{bucket}/{names.model_prefix}", target, result.uploaded
    )


def require_model_data(aws: Aws, model_data_url: str) -> None:
    """Fail early, with the fix, when the archive (or, for a prefix, any archive) is not in S3."""
    bucket, key = parse_s3_uri(model_data_url)
    found = (
        any(k.endswith(".tar.gz") if key.endswith("/") else k == key for k in list_keys(aws, bucket, key))
        if bucket_exists(aws, bucket)
        else False
    )
    if not found and aws.dry_run:
        logger.warning("no model archive at %s yet; a real run would stop here", model_data_url)
    elif not found:
        raise AwsCliError(
            f"no model archive at {model_data_url}: run `ahi-spleen upload-model --bucket {bucket}` first"
        )
