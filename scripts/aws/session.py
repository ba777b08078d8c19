"""boto3 clients for the ``ahi-spleen`` CLI, the dry-run/change recorder and polling with progress.

Every AWS call that changes something goes through :meth:`Aws.call`: it is recorded (so a command can report
what it changed, and a second run can prove it changed nothing) and, in dry-run mode, not sent. Read calls go
straight to the client, so a dry run still reports accurately what *would* be created or updated.

Endpoints: a per-service override (``service_endpoints["sagemaker"]``) wins over ``endpoint_url`` (all
services), which wins over boto3's own chain (``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_ENDPOINT_URL``, config
file).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
from botocore.exceptions import ClientError
from tqdm import tqdm

from ahi_connector.client import make_client

logger = logging.getLogger(__name__)

PROGRESS_STYLES = ("auto", "bar", "lines", "json", "off")

#: Services the CLI talks to; the keys accepted by ``service_endpoints``.
SERVICES = (
    "s3",
    "ecr",
    "iam",
    "sts",
    "sagemaker",
    "sagemaker-runtime",
    "codebuild",
    "codepipeline",
    "application-autoscaling",
    "cloudwatch",
    "sns",
    "medical-imaging",
    "lambda",
    "events",
    "sqs",
)

#: Tag put on everything the CLI creates; cleanup deletes only resources carrying it (unless forced).
PROJECT_TAG = "ahi-spleen-project"
MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "ahi-spleen"


#: A new IAM role is not assumable everywhere at once; calls that validate one are retried this often.
ROLE_PROPAGATION_ATTEMPTS = 7
#: (error code, lower-case message fragment) pairs AWS answers while a new role propagates.
ROLE_PROPAGATION_ERRORS = (
    (
        "InvalidInputException",
        "assumerole",
    ),  # CodeBuild: "CodeBuild is not authorized to perform: sts:AssumeRole"
    (
        "InvalidStructureException",
        "assumerole",
    ),  # CodePipeline: "... not authorized to perform AssumeRole ..."
    ("ValidationException", "could not assume role"),  # SageMaker CreateModel
    ("ValidationException", "not authorized to assume"),
    ("AccessDeniedException", "assumerole"),  # HealthImaging StartDICOMImportJob
    ("InvalidParameterValueException", "cannot be assumed by lambda"),  # Lambda CreateFunction
)


def is_role_propagation_error(exc: BaseException) -> bool:
    """Whether ``exc`` is AWS refusing a role that was probably created seconds ago."""
    code, message = error_code(exc), str(exc).lower().replace(" ", "").replace("sts:", "")
    return any(code == c and fragment.replace(" ", "") in message for c, fragment in ROLE_PROPAGATION_ERRORS)


class AwsCliError(RuntimeError):
    """A step of the CLI failed; the message says which resource and what to do."""


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS (or moto / local services): validated once, at creation."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    service_endpoints: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False
    max_attempts: int = 8
    progress: bool = True
    #: How waiting shows on stderr (see :class:`Progress`): ``auto`` (a bar on a terminal, else lines),
    #: ``bar``, ``lines``, ``json`` or ``off``; ``progress=False`` means ``off``.
    progress_style: str = "auto"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.service_endpoints) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown service(s) in endpoint overrides: {unknown}; known: {list(SERVICES)}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.progress_style not in PROGRESS_STYLES:
            raise ValueError(f"progress_style must be one of {PROGRESS_STYLES}, got {self.progress_style!r}")

    @property
    def progress_mode(self) -> str:
        """The resolved style: ``bar``, ``lines``, ``json`` or ``off``."""
        if not self.progress or self.progress_style == "off":
            return "off"
        if self.progress_style == "auto":
            return "bar" if sys.stderr.isatty() else "lines"
        return self.progress_style

    def endpoint_for(self, service: str) -> str | None:
        """Explicit endpoint for ``service``, or None to let boto3's chain decide."""
        return self.service_endpoints.get(service) or self.endpoint_url or None


@dataclass(frozen=True)
class Call:
    """One mutating API call, as made (or as it would be made in a dry run)."""

    service: str
    operation: str
    params: Mapping[str, Any]

    def render(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{self.service}.{self.operation}({args})"


def _short(value: Any, limit: int = 2000) -> str:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Planned(dict):  # type: ignore[type-arg]
    """Response stand-in for a call not sent in dry-run mode: any key reads as a placeholder string."""

    def __init__(self, call: Call) -> None:
        super().__init__()
        self._call = call

    def __missing__(self, key: str) -> str:
        return f"<{self._call.operation}.{key}>"


_LOADER: Any = None


def _new_session(settings: AwsSettings) -> boto3.Session:
    """A boto3 session whose botocore data loader (read-only service models) is shared in this process."""
    global _LOADER
    core = botocore.session.Session(profile=settings.profile)
    if _LOADER is None:
        _LOADER = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _LOADER)
    return boto3.Session(botocore_session=core, region_name=settings.region)


class Aws:
    """Cached boto3 clients plus the record of mutating calls."""

    def __init__(self, settings: AwsSettings, session: boto3.Session | None = None) -> None:
        self.settings = settings
        self.session = session or _new_session(settings)
        self._clients: dict[str, Any] = {}
        self.calls: list[Call] = []
        self._account_id: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise AwsCliError(
                "no AWS region configured: pass --region or set AWS_DEFAULT_REGION / a profile region"
            )
        return region

    def client(self, service: str) -> Any:
        """A client for ``service`` with retries configured (and no host prefix for a local AHI endpoint)."""
        if service not in self._clients:
            self._clients[service] = make_client(
                service,
                endpoint_url=self.settings.endpoint_for(service),
                region_name=self.region,
                session=self.session,
                max_attempts=self.settings.max_attempts + 1,  # retries (botocore max_attempts) + first try
                read_timeout=120.0,
            )
        return self._clients[service]

    def account_id(self) -> str:
        if self._account_id is None:
            self._account_id = str(self.client("sts").get_caller_identity()["Account"])
        return self._account_id

    def call(self, service: str, operation: str, **params: Any) -> Any:
        """Make (or, in dry-run mode, only record) a mutating call; return its response."""
        call = Call(service, operation, params)
        self.calls.append(call)
        if self.dry_run:
            logger.info("dry-run: would call %s", call.render())
            return Planned(call)
        logger.info("calling %s.%s", service, operation)
        method = getattr(self.client(service), operation)
        delay = 2.0
        for attempt in range(1, ROLE_PROPAGATION_ATTEMPTS + 1):
            try:
                return method(**params)
            except ClientError as exc:
                if attempt == ROLE_PROPAGATION_ATTEMPTS or not is_role_propagation_error(exc):
                    raise
                logger.info(
                    "%s.%s: the IAM role is not usable yet (new roles take seconds to propagate); "
                    "attempt %d/%d, retrying in %.0f s",
                    service,
                    operation,
                    attempt,
                    ROLE_PROPAGATION_ATTEMPTS,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
        raise AssertionError("unreachable")

    def paginate(self, service: str, operation: str, result_key: str, **params: Any) -> Iterable[Any]:
        """Items of ``result_key`` over every page of a list call."""
        paginator = self.client(service).get_paginator(operation)
        for page in paginator.paginate(**params):
            yield from page.get(result_key, [])

    def changes_since(self, mark: int) -> list[Call]:
        return self.calls[mark:]


def tag_list(name: str, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    """The project tags in the ``[{"Key":..,"Value":..}]`` shape (key names vary by service)."""
    return [{key: PROJECT_TAG, value: name}, {key: MANAGED_BY_TAG, value: MANAGED_BY_VALUE}]


def tag_map(name: str) -> dict[str, str]:
    return {PROJECT_TAG: name, MANAGED_BY_TAG: MANAGED_BY_VALUE}


def is_ours(tags: Iterable[Mapping[str, str]] | Mapping[str, str], name: str) -> bool:
    """Whether a resource's tags (list of Key/Value or key/value dicts, or a plain map) carry our project
    tag."""
    if isinstance(tags, Mapping):
        return tags.get(PROJECT_TAG) == name
    for tag in tags:
        key = tag.get("Key", tag.get("key"))
        if key == PROJECT_TAG and tag.get("Value", tag.get("value")) == name:
            return True
    return False


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def subset_equal(desired: Any, actual: Any) -> bool:
    """True when every field we set in ``desired`` has the same value in ``actual`` (extra fields ignored)."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and subset_equal(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(desired) == len(actual)
            and all(subset_equal(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, float | int) and isinstance(actual, float | int) and not isinstance(desired, bool):
        return float(desired) == float(actual)
    return bool(desired == actual)


class Progress:
    """What one wait shows on stderr, with the elapsed time and the current AWS state.

    ``bar``: a tqdm status bar (``endpoint x: Creating [02:13]``), for a terminal; ``lines``: one line per
    state change (``[  133 s] endpoint x: Creating``), for logs and CI; ``json``: one JSON object per state
    change (``{"event": "progress", "what": ..., "status": ..., "elapsedSeconds": ...}``), for scripts;
    ``off``.
    """

    def __init__(self, what: str, mode: str) -> None:
        self.what, self.mode = what, mode
        self.start = time.monotonic()
        self.last: str | None = None
        self.bar = (
            tqdm(desc=what, bar_format="{desc}: {postfix} [{elapsed}]", leave=False, file=sys.stderr)
            if mode == "bar"
            else None
        )

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start

    def update(self, status: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(0)
            self.bar.refresh()
        changed, self.last = status != self.last, status
        if not changed:
            return
        if self.mode == "lines":
            print(f"[{self.elapsed_s:5.0f} s] {self.what}: {status}", file=sys.stderr, flush=True)
        elif self.mode == "json":
            event = {
                "event": "progress",
                "what": self.what,
                "status": status,
                "elapsedSeconds": round(self.elapsed_s, 1),
            }
            print(json.dumps(event), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(
    describe: Callable[[], str],
    *,
    what: str,
    done: Iterable[str],
    failed: Iterable[str] = (),
    timeout_s: float = 3600.0,
    interval_s: float = 15.0,
    progress: bool | str = True,
    failure_detail: Callable[[], str] | None = None,
) -> str:
    """Poll ``describe()`` (returns a status string) until it is in ``done``, showing elapsed time and status
    (``progress``: a :class:`Progress` mode, or True for ``lines``/``bar`` by terminal, False for none).

    Raises :class:`AwsCliError` when the status is in ``failed`` (with ``failure_detail()`` if given) or on
    timeout.
    """
    done_set, failed_set = set(done), set(failed)
    if isinstance(progress, bool):
        progress = AwsSettings(progress=progress).progress_mode
    delay = min(0.2, interval_s)
    with Progress(what, progress) as shown:
        while True:
            status = describe()
            shown.update(status)
            logger.debug("%s: %s", what, status)
            if status in done_set:
                return status
            if status in failed_set:
                detail = failure_detail() if failure_detail else ""
                raise AwsCliError(f"{what}: status {status}{': ' + detail if detail else ''}")
            if shown.elapsed_s > timeout_s:
                raise AwsCliError(
                    f"{what}: still {status} after {shown.elapsed_s:.0f} s; check the AWS console or re-run "
                    "the command (it resumes where it stopped)"
                )
            time.sleep(delay)
            delay = min(delay * 2, interval_s)
