"""``cleanup``: delete what ``ahi-spleen --name NAME`` created, and nothing else unless forced.

Tagged resources (the trigger's EventBridge rule, Lambda function and SQS queue, inference components via
their endpoint, endpoints, endpoint configs, models, alarms, SNS topics, ECR, CodeBuild, CodePipeline, IAM
roles) are deleted only when they carry ``ahi-spleen-project=NAME``; scaling policies and targets go with
their endpoint; the endpoints' CloudWatch dashboards when their body carries our marker; data (image sets,
datastores, S3 prefixes, buckets) only when listed in the state file. ``force`` drops both checks for the
name-derived resources (for a lost state file or resources created by hand).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from scripts.aws import monitoring
from scripts.aws.iam import PRINCIPALS
from scripts.aws.names import Names
from scripts.aws.scaling import DIMENSION, NAMESPACE, resource_id
from scripts.aws.session import Aws, error_code, is_ours, wait_for
from scripts.aws.state import State
from scripts.aws.storage import delete_bucket_if_empty, delete_prefix, parse_s3_uri

logger = logging.getLogger(__name__)

ENDPOINT_KINDS = ("mme", "rt", "async", "ic")
GONE_CODES = (
    "ValidationException",
    "ResourceNotFoundException",
    "NoSuchEntity",
    "NotFound",
    "404",
    "RepositoryNotFoundException",
    "PipelineNotFoundException",
    "ObjectNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
)


def _tags_of(call: Callable[..., Any], key: str, **params: Any) -> Callable[[], Iterable[Any]]:
    """A deferred tag lookup: ``call(**params)[key]`` when (and only if) the tags are needed."""
    return lambda: call(**params)[key]


def _constant(tags: Iterable[Any]) -> Callable[[], Iterable[Any]]:
    """Tags already at hand, in the deferred form :meth:`Cleaner._ours` takes."""
    return lambda: tags


@dataclass(frozen=True)
class CleanupOptions:
    pipeline: bool = False  # CodePipeline, CodeBuild project, ECR repository (with its images)
    roles: bool = False  # IAM roles created with --create-roles
    data: bool = False  # image sets, datastores, S3 prefixes and buckets from the state file
    force: bool = False  # also delete name-derived resources that lack our tag / state entry
    bucket: str | None = None  # with force+data: delete s3://bucket/<name>/ even if not in the state file
    wait: bool = True


@dataclass
class CleanupReport:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # found, but not ours: left alone


class Cleaner:
    def __init__(self, aws: Aws, names: Names, state: State, options: CleanupOptions) -> None:
        self.aws, self.names, self.state, self.options = aws, names, state, options
        self.report = CleanupReport()

    # ---- helpers -------------------------------------------------------------------------------------------
    def _ours(self, what: str, tags: Callable[[], Iterable[Any]]) -> bool:
        if self.options.force:
            return True
        try:
            mine = is_ours(list(tags()), self.names.name)
        except Exception as exc:
            if error_code(exc) in GONE_CODES:
                return False
            raise
        if not mine:
            logger.warning(
                "%s exists but has no %s tag; keeping it (use --force to delete)", what, self.names.name
            )
            self.report.kept.append(what)
        return mine

    def _delete(self, what: str, service: str, operation: str, **params: Any) -> None:
        try:
            self.aws.call(service, operation, **params)
        except Exception as exc:
            if error_code(exc) in GONE_CODES:
                logger.info("%s already gone", what)
                return
            raise
        self.report.deleted.append(what)

    def _sm_tags(self, arn: str) -> Callable[[], Iterable[Any]]:
        return lambda: self.aws.paginate("sagemaker", "list_tags", "Tags", ResourceArn=arn)

    # ---- SageMaker -----------------------------------------------------------------------------------------
    def endpoints(self) -> None:
        sm = self.aws.client("sagemaker")
        for kind in ENDPOINT_KINDS:
            name = self.names.endpoint(kind)
            try:
                arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]
            except Exception as exc:
                if error_code(exc) not in GONE_CODES:
                    raise
                self.scaling(name)  # orphaned scaling of an endpoint deleted elsewhere: only ours can match
                continue
            if not self._ours(f"endpoint {name}", self._sm_tags(arn)):
                continue
            self.scaling(name)
            self._delete(f"endpoint {name}", "sagemaker", "delete_endpoint", EndpointName=name)
            if self.options.wait and not self.aws.dry_run:
                self._wait_gone(name)

    def _wait_gone(self, endpoint_name: str) -> None:
        sm = self.aws.client("sagemaker")

        def status() -> str:
            try:
                return str(sm.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"])
            except Exception as exc:
                if error_code(exc) in GONE_CODES:
                    return "deleted"
                raise

        wait_for(
            status,
            what=f"delete endpoint {endpoint_name}",
            done={"deleted"},
            timeout_s=1800,
            interval_s=15.0,
            progress=self.aws.settings.progress_mode,
        )

    def scaling(self, endpoint_name: str) -> None:
        aas = self.aws.client("application-autoscaling")
        rid = resource_id(endpoint_name)
        policies = aas.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
        )["ScalingPolicies"]
        for policy in policies:
            self._delete(
                f"scaling policy {policy['PolicyName']}",
                "application-autoscaling",
                "delete_scaling_policy",
                PolicyName=policy["PolicyName"],
                ServiceNamespace=NAMESPACE,
                ResourceId=rid,
                ScalableDimension=DIMENSION,
            )
        targets = aas.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
        )["ScalableTargets"]
        if targets:
            self._delete(
                f"scalable target {rid}",
                "application-autoscaling",
                "deregister_scalable_target",
                ServiceNamespace=NAMESPACE,
                ResourceId=rid,
                ScalableDimension=DIMENSION,
            )

    def _sagemaker_named(
        self, list_op: str, result_key: str, name_key: str, arn_key: str, pattern: re.Pattern[str]
    ) -> list[tuple[str, str]]:
        found = self.aws.paginate("sagemaker", list_op, result_key, NameContains=self.names.name)
        return [(item[name_key], item[arn_key]) for item in found if pattern.match(item[name_key])]

    def configs_and_models(self) -> None:
        kinds = "|".join(ENDPOINT_KINDS)
        base = re.escape(self.names.name)
        for name, arn in self._sagemaker_named(
            "list_endpoint_configs",
            "EndpointConfigs",
            "EndpointConfigName",
            "EndpointConfigArn",
            re.compile(rf"^{base}-({kinds})-cfg-[0-9a-f]{{8}}$"),
        ):
            if self._ours(f"endpoint config {name}", self._sm_tags(arn)):
                self._delete(
                    f"endpoint config {name}", "sagemaker", "delete_endpoint_config", EndpointConfigName=name
                )
        for name, arn in self._sagemaker_named(
            "list_models", "Models", "ModelName", "ModelArn", re.compile(rf"^{base}-({kinds})-[0-9a-f]{{8}}$")
        ):
            if self._ours(f"model {name}", self._sm_tags(arn)):
                self._delete(f"model {name}", "sagemaker", "delete_model", ModelName=name)

    def inference_components(self) -> None:
        """Components of the ``<name>-ic`` endpoint (and their copy scaling) go before the endpoint itself."""
        sm = self.aws.client("sagemaker")
        endpoint = self.names.endpoint("ic")
        try:
            arn = sm.describe_endpoint(EndpointName=endpoint)["EndpointArn"]
        except Exception as exc:
            if error_code(exc) in GONE_CODES:
                return
            raise
        if not self._ours(f"endpoint {endpoint}", self._sm_tags(arn)):
            return
        from scripts.aws.components import DIMENSION as IC_DIMENSION

        aas = self.aws.client("application-autoscaling")
        found = self.aws.paginate(
            "sagemaker", "list_inference_components", "InferenceComponents", EndpointNameEquals=endpoint
        )
        names = [c["InferenceComponentName"] for c in found]
        for name in names:
            rid = f"inference-component/{name}"
            scope = {"ServiceNamespace": NAMESPACE, "ResourceId": rid, "ScalableDimension": IC_DIMENSION}
            for policy in aas.describe_scaling_policies(**scope)["ScalingPolicies"]:
                self._delete(
                    f"scaling policy {policy['PolicyName']}",
                    "application-autoscaling",
                    "delete_scaling_policy",
                    PolicyName=policy["PolicyName"],
                    **scope,
                )
            targets = aas.describe_scalable_targets(
                ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=IC_DIMENSION
            )["ScalableTargets"]
            if targets:
                self._delete(
                    f"scalable target {rid}", "application-autoscaling", "deregister_scalable_target", **scope
                )
            self._delete(
                f"inference component {name}",
                "sagemaker",
                "delete_inference_component",
                InferenceComponentName=name,
            )
        if names and self.options.wait and not self.aws.dry_run:
            self._wait_listing_empty(
                f"delete components of {endpoint}",
                ("sagemaker", "list_inference_components", "InferenceComponents"),
                {"EndpointNameEquals": endpoint},
                interval_s=15.0,
            )

    # ---- event trigger (EventBridge rule, Lambda function, SQS dead-letter queue) ------------------------
    def event_trigger(self) -> None:
        events, lam, sqs = (self.aws.client(s) for s in ("events", "lambda", "sqs"))
        rule = self.names.trigger_rule
        try:
            rule_arn = events.describe_rule(Name=rule)["Arn"]
        except Exception as exc:
            if error_code(exc) not in GONE_CODES:
                raise
        else:
            if self._ours(
                f"EventBridge rule {rule}",
                lambda: events.list_tags_for_resource(ResourceARN=rule_arn)["Tags"],
            ):
                ids = [t["Id"] for t in events.list_targets_by_rule(Rule=rule)["Targets"]]
                if ids:
                    self._delete(f"targets of rule {rule}", "events", "remove_targets", Rule=rule, Ids=ids)
                self._delete(f"EventBridge rule {rule}", "events", "delete_rule", Name=rule)
        function = self.names.trigger_function
        try:
            found = lam.get_function(FunctionName=function)
        except Exception as exc:
            if error_code(exc) not in GONE_CODES:
                raise
        else:
            if self._ours(
                f"Lambda function {function}",
                lambda: [{"Key": k, "Value": v} for k, v in (found.get("Tags") or {}).items()],
            ):
                self._delete(
                    f"Lambda function {function}", "lambda", "delete_function", FunctionName=function
                )
        try:
            url = sqs.get_queue_url(QueueName=self.names.trigger_dlq)["QueueUrl"]
        except Exception as exc:
            if error_code(exc) not in GONE_CODES:
                raise
            return
        if self._ours(
            f"SQS queue {self.names.trigger_dlq}",
            lambda: [
                {"Key": k, "Value": v} for k, v in sqs.list_queue_tags(QueueUrl=url).get("Tags", {}).items()
            ],
        ):
            self._delete(f"SQS queue {self.names.trigger_dlq}", "sqs", "delete_queue", QueueUrl=url)

    # ---- CloudWatch / SNS ----------------------------------------------------------------------------------
    def alarms_and_topics(self) -> None:
        cw = self.aws.client("cloudwatch")
        for alarm in cw.describe_alarms(AlarmNames=[self.names.scale_from_zero_alarm])["MetricAlarms"]:
            arn = alarm["AlarmArn"]
            if self._ours(
                f"alarm {alarm['AlarmName']}",
                _tags_of(cw.list_tags_for_resource, "Tags", ResourceARN=arn),
            ):
                self._delete(
                    f"alarm {alarm['AlarmName']}",
                    "cloudwatch",
                    "delete_alarms",
                    AlarmNames=[alarm["AlarmName"]],
                )
        sns = self.aws.client("sns")
        wanted = {self.names.topic("success"), self.names.topic("error")}
        for topic in self.aws.paginate("sns", "list_topics", "Topics"):
            arn = topic["TopicArn"]
            if arn.rsplit(":", 1)[-1] in wanted and self._ours(
                f"SNS topic {arn}", _tags_of(sns.list_tags_for_resource, "Tags", ResourceArn=arn)
            ):
                self._delete(f"SNS topic {arn}", "sns", "delete_topic", TopicArn=arn)

    def monitoring(self) -> None:
        """The endpoints' dashboards (ours by their marker: dashboards carry no tags) and alarms (by tag)."""
        cw = self.aws.client("cloudwatch")
        wanted = {
            monitoring.alarm_name(self.names, kind, what)
            for kind in ENDPOINT_KINDS
            for what in monitoring.ALARM_KINDS
        }
        for alarm in cw.describe_alarms(AlarmNames=sorted(wanted))["MetricAlarms"]:
            name, arn = alarm["AlarmName"], alarm["AlarmArn"]
            tags = lambda arn=arn: cw.list_tags_for_resource(ResourceARN=arn)["Tags"]  # noqa: E731
            if self._ours(f"alarm {name}", tags):
                self._delete(f"alarm {name}", "cloudwatch", "delete_alarms", AlarmNames=[name])
        for kind in ENDPOINT_KINDS:
            name = monitoring.dashboard_name(self.names, kind)
            try:
                body = cw.get_dashboard(DashboardName=name)["DashboardBody"]
            except Exception as exc:
                if error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException"):
                    continue
                raise
            if self.options.force or monitoring.is_our_dashboard(body, self.names):
                self._delete(f"dashboard {name}", "cloudwatch", "delete_dashboards", DashboardNames=[name])
            else:
                logger.warning("dashboard %s is not ours; keeping it (use --force to delete)", name)
                self.report.kept.append(f"dashboard {name}")

    # ---- build pipeline ------------------------------------------------------------------------------------
    def build_pipeline(self) -> None:
        cp, cb, ecr = (self.aws.client(s) for s in ("codepipeline", "codebuild", "ecr"))
        try:
            arn = cp.get_pipeline(name=self.names.pipeline)["metadata"]["pipelineArn"]
            if self._ours(
                f"pipeline {self.names.pipeline}", lambda: cp.list_tags_for_resource(resourceArn=arn)["tags"]
            ):
                self._delete(
                    f"pipeline {self.names.pipeline}",
                    "codepipeline",
                    "delete_pipeline",
                    name=self.names.pipeline,
                )
        except Exception as exc:
            if error_code(exc) not in GONE_CODES:
                raise
        for project in cb.batch_get_projects(names=[self.names.codebuild_project])["projects"]:
            if self._ours(f"CodeBuild project {project['name']}", _constant(project.get("tags") or [])):
                self._delete(
                    f"CodeBuild project {project['name']}",
                    "codebuild",
                    "delete_project",
                    name=project["name"],
                )
        try:
            repo = ecr.describe_repositories(repositoryNames=[self.names.ecr_repository])["repositories"][0]
        except Exception as exc:
            if error_code(exc) in GONE_CODES:
                return
            raise
        if self._ours(
            f"ECR repository {repo['repositoryName']}",
            lambda: ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"],
        ):
            self._delete(
                f"ECR repository {repo['repositoryName']} (with its images)",
                "ecr",
                "delete_repository",
                repositoryName=repo["repositoryName"],
                force=True,
            )

    def iam_roles(self) -> None:
        iam = self.aws.client("iam")
        for kind in PRINCIPALS:
            role = self.names.role(kind)
            try:
                iam.get_role(RoleName=role)
            except Exception as exc:
                if error_code(exc) in GONE_CODES:
                    continue
                raise
            if not self._ours(f"IAM role {role}", _tags_of(iam.list_role_tags, "Tags", RoleName=role)):
                continue
            for policy in self.aws.paginate("iam", "list_role_policies", "PolicyNames", RoleName=role):
                self._delete(
                    f"inline policy {policy} of {role}",
                    "iam",
                    "delete_role_policy",
                    RoleName=role,
                    PolicyName=policy,
                )
            for attached in self.aws.paginate(
                "iam", "list_attached_role_policies", "AttachedPolicies", RoleName=role
            ):
                self._delete(
                    f"attachment {attached['PolicyArn']} of {role}",
                    "iam",
                    "detach_role_policy",
                    RoleName=role,
                    PolicyArn=attached["PolicyArn"],
                )
            self._delete(f"IAM role {role}", "iam", "delete_role", RoleName=role)

    # ---- data ----------------------------------------------------------------------------------------------
    def ahi_data(self) -> None:
        datastores = set(self.state.items("datastores"))
        if self.options.force:
            from scripts.aws.ahi_import import find_datastore

            found = find_datastore(self.aws, self.names.datastore)
            datastores |= {found} if found else set()
        for entry in self.state.items("image_sets"):
            datastore_id, image_set_id = entry.split("/", 1)
            if datastore_id not in datastores:  # image sets in a datastore we keep: delete them one by one
                self._delete(
                    f"image set {image_set_id} (datastore {datastore_id})",
                    "medical-imaging",
                    "delete_image_set",
                    datastoreId=datastore_id,
                    imageSetId=image_set_id,
                )
            if not self.aws.dry_run:
                self.state.discard("image_sets", entry)
        for datastore_id in sorted(datastores):
            self._delete_datastore(datastore_id)

    def _delete_datastore(self, datastore_id: str) -> None:
        image_sets = [
            s["imageSetId"]
            for s in self.aws.paginate(
                "medical-imaging", "search_image_sets", "imageSetsMetadataSummaries", datastoreId=datastore_id
            )
        ]
        for image_set_id in image_sets:
            self._delete(
                f"image set {image_set_id} (datastore {datastore_id})",
                "medical-imaging",
                "delete_image_set",
                datastoreId=datastore_id,
                imageSetId=image_set_id,
            )
        if image_sets and not self.aws.dry_run and self.options.wait:
            self._wait_image_sets_gone(datastore_id)
        self._delete(
            f"datastore {datastore_id}", "medical-imaging", "delete_datastore", datastoreId=datastore_id
        )
        if not self.aws.dry_run:
            self.state.discard("datastores", datastore_id)

    def _wait_image_sets_gone(self, datastore_id: str) -> None:
        self._wait_listing_empty(
            f"empty datastore {datastore_id}",
            ("medical-imaging", "search_image_sets", "imageSetsMetadataSummaries"),
            {"datastoreId": datastore_id},
            interval_s=5.0,
        )

    def _wait_listing_empty(
        self, what: str, listing: tuple[str, str, str], params: dict[str, Any], interval_s: float
    ) -> None:
        """Poll a paginated listing (service, operation, result key) until it lists nothing."""
        service, operation, key = listing

        def status() -> str:
            left = sum(1 for _ in self.aws.paginate(service, operation, key, **params))
            return "empty" if left == 0 else f"{left} left"

        wait_for(
            status,
            what=what,
            done={"empty"},
            timeout_s=1800,
            interval_s=interval_s,
            progress=self.aws.settings.progress_mode,
        )

    def s3_data(self) -> None:
        prefixes = list(self.state.items("s3_prefixes"))
        if self.options.force and self.options.bucket:
            prefixes.append(f"s3://{self.options.bucket}/{self.names.s3_root}")
        for uri in dict.fromkeys(prefixes):
            bucket, prefix = parse_s3_uri(uri)
            count = delete_prefix(self.aws, bucket, prefix)
            if count:
                self.report.deleted.append(f"{count} S3 objects under {uri}")
            if not self.aws.dry_run:
                self.state.discard("s3_prefixes", uri)
        for bucket in self.state.items("buckets"):
            if delete_bucket_if_empty(self.aws, bucket):
                self.report.deleted.append(f"S3 bucket {bucket}")
                if not self.aws.dry_run:
                    self.state.discard("buckets", bucket)
        if not self.aws.dry_run:
            for job in self.state.items("import_jobs"):
                self.state.discard("import_jobs", job)

    def run(self) -> CleanupReport:
        self.event_trigger()
        self.inference_components()
        self.endpoints()
        self.configs_and_models()
        self.alarms_and_topics()
        self.monitoring()
        if self.options.pipeline:
            self.build_pipeline()
        if self.options.roles:
            self.iam_roles()
        if self.options.data:
            self.ahi_data()
            self.s3_data()
        return self.report


def cleanup(aws: Aws, names: Names, state: State, options: CleanupOptions) -> CleanupReport:
    return Cleaner(aws, names, state, options).run()
