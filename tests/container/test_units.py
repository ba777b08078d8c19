"""Plain-function tests of the container pieces (no MMS, no servers)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from ahi_connector.errors import ImageSetNotFoundError
from ahi_connector.s3uri import S3Uri
from container.errors import ModelLoadError
from container.handler import ModelHandler, header, request_body
from container.invocation import error_body
from container.model_server import mms_properties
from container.payload import PayloadError, parse_invocation
from container.settings import Settings, SettingsError
from devstack.sagemaker_local.errors import RuntimeApiError
from devstack.sagemaker_local.models import check_target_model, extract_archive, model_key

ROOT = Path(__file__).resolve().parents[2]
DS = "a" * 32
IS = "b" * 32


# --- settings
# -----------------------------------------------------------------------------------------------------


def test_settings_defaults_bind_localhost_single_cpu_worker():
    s = Settings.from_env({"SPLEEN_NUM_GPUS": "0"})
    assert (s.host, s.port, s.multi_model, s.worker_count) == ("127.0.0.1", 8080, False, 1)
    assert s.max_request_size > 6 * 1024 * 1024  # MMS must admit a full 6 MB SageMaker payload
    assert s.handler == "container.handler_service"
    assert s.model_dir == Path("/opt/ml/model")


def test_settings_parse_sagemaker_variables():
    s = Settings.from_env(
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "900",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "10",
            "SAGEMAKER_BASE_DIR": "/srv/ml",
            "SPLEEN_BIND_HOST": "0.0.0.0",
            "SPLEEN_NUM_GPUS": "0",
        }
    )
    assert (s.multi_model, s.port, s.workers, s.timeout_s) == (True, 9090, 3, 900)
    assert s.max_request_size == 10 * 1024 * 1024
    assert s.model_dir == Path("/srv/ml/model")
    assert s.host == "0.0.0.0"


def test_timeout_seconds_win_over_the_legacy_minutes_variable():
    assert Settings.from_env({"SPLEEN_NUM_GPUS": "0", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5"}).timeout_s == 300
    both = {
        "SPLEEN_NUM_GPUS": "0",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "42",
    }
    assert Settings.from_env(both).timeout_s == 42
    assert Settings.from_env({"SPLEEN_NUM_GPUS": "0"}).timeout_s == 600


def test_one_worker_per_gpu_unless_configured():
    assert Settings.from_env({"SPLEEN_NUM_GPUS": "4"}).worker_count == 4
    assert (
        Settings.from_env({"SPLEEN_NUM_GPUS": "4", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}).worker_count == 1
    )


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"SAGEMAKER_BIND_TO_PORT": "40000"},
            r"SAGEMAKER_BIND_TO_PORT=40000: multi-model-server 1\.1\.11 only",
        ),
        (
            {"SAGEMAKER_MODEL_SERVER_WORKERS": "two"},
            r"SAGEMAKER_MODEL_SERVER_WORKERS='two' is not an integer",
        ),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, r"SAGEMAKER_MODEL_SERVER_WORKERS=0 is below the minimum 1"),
        ({"SAGEMAKER_MULTI_MODEL": "maybe"}, r"SAGEMAKER_MULTI_MODEL='maybe' is not a boolean"),
    ],
)
def test_bad_settings_name_the_variable(env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({"SPLEEN_NUM_GPUS": "0", **env})


def test_mms_properties_bind_handler_and_limits():
    s = Settings.from_env(
        {
            "SPLEEN_NUM_GPUS": "2",
            "SAGEMAKER_BIND_TO_PORT": "8081",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "120",
        }
    )
    props = mms_properties(s)
    assert props["inference_address"] == props["management_address"] == "http://127.0.0.1:8081"
    assert props["model_store"] == "/" and props["load_models"] == ""
    assert (props["default_workers_per_model"], props["number_of_gpu"]) == ("2", "2")
    assert props["default_response_timeout_seconds"] == "120"
    assert props["max_request_size"] == str(s.max_request_size)
    single = mms_properties(s, Path("/opt/ml/model"))
    assert single["load_models"] == "model=/opt/ml/model"


def test_serve_rejects_bad_configuration_before_starting_mms(tmp_path):
    serve = str(ROOT / "container" / "serve")
    done = subprocess.run(
        [serve, "--single-model", "--model-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "model directory" in done.stderr and "does not exist" in done.stderr
    done = subprocess.run(
        [serve],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "SAGEMAKER_BIND_TO_PORT": "50000"},
    )
    assert done.returncode == 2
    assert "only accepts ports" in done.stderr


# --- payload
# ------------------------------------------------------------------------------------------------------


def test_envelope_and_bare_input_are_parsed():
    inv = parse_invocation(
        json.dumps(
            {
                "inputs": [
                    {"datastoreId": DS, "imageSetId": IS},
                    {"datastoreId": DS, "studyInstanceUid": "1.2.3"},
                ],
                "output": {"s3Uri": "s3://bucket/some/prefix/", "inlineSeg": True},
            }
        ).encode()
    )
    assert [r.image_set_id for r in inv.requests] == [IS, None]
    assert inv.requests[1].study_instance_uid == "1.2.3"
    assert inv.output.s3 == S3Uri("bucket", "some/prefix")
    assert inv.output.inline_seg is True
    bare = parse_invocation(bytearray(json.dumps({"datastoreId": DS, "imageSetId": IS}).encode()))
    assert bare.raw_inputs == ({"datastoreId": DS, "imageSetId": IS},)
    assert bare.output.s3 is None and bare.output.write_back is None


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", r"empty request body"),
        (b"{oops", r"not valid JSON"),
        (b"[1, 2]", r"must be a JSON object, not list"),
        (json.dumps({"inputs": [], "output": {}}).encode(), r'"inputs" must be a non-empty list'),
        (json.dumps({"inputs": [{}] * 17}).encode(), r"17 items; at most 16"),
        (
            json.dumps({"inputs": [{"datastoreId": DS, "imageSetId": IS}], "extra": 1}).encode(),
            r"unknown top-level field\(s\) \['extra'\]",
        ),
        (json.dumps({"inputs": ["x"]}).encode(), r"inputs\[0\] must be an object, not str"),
        (json.dumps({"inputs": [{"dicomFolder": "/etc"}]}).encode(), r"inputs\[0\] needs datastoreId"),
        (
            json.dumps({"inputs": [{"datastoreId": "short", "imageSetId": IS}]}).encode(),
            r"inputs\[0\]: 'datastoreId' must be an AWS HealthImaging ID",
        ),
        (
            json.dumps({"datastoreId": DS, "imageSetId": IS, "output": {"s3Uri": "bucket/key"}}).encode(),
            r"output\.s3Uri='bucket/key' is not an S3 URI",
        ),
        (
            json.dumps({"datastoreId": DS, "imageSetId": IS, "output": {"inlineSeg": "yes"}}).encode(),
            r"output\.inlineSeg must be true or false",
        ),
        (
            json.dumps({"datastoreId": DS, "imageSetId": IS, "output": {"colour": 1}}).encode(),
            r"output: unknown field\(s\) \['colour'\]",
        ),
        (
            json.dumps(
                {
                    "datastoreId": DS,
                    "imageSetId": IS,
                    "output": {
                        "writeBackToAHI": {
                            "method": "import-job",
                            "dataAccessRoleArn": "arn:aws:iam::123456789012:role/r",
                        }
                    },
                }
            ).encode(),
            r"writeBackToAHI method import-job needs output\.s3Uri",
        ),
        (
            json.dumps(
                {
                    "datastoreId": DS,
                    "imageSetId": IS,
                    "output": {"writeBackToAHI": {"dataAccessRoleArn": "arn:aws:iam::123456789012:role/r"}},
                }
            ).encode(),
            r"\['dataAccessRoleArn'\] belong to method import-job",
        ),
        (
            json.dumps(
                {"datastoreId": DS, "imageSetId": IS, "output": {"writeBackToAHI": {"method": "s3"}}}
            ).encode(),
            r"writeBackToAHI\.method='s3' is not one of \['stow-rs', 'import-job'\]",
        ),
        (
            json.dumps(
                {
                    "datastoreId": DS,
                    "imageSetId": IS,
                    "output": {
                        "s3Uri": "s3://bkt/p",
                        "writeBackToAHI": {"method": "import-job", "dataAccessRoleArn": "role"},
                    },
                }
            ).encode(),
            r"dataAccessRoleArn='role' is not an IAM role ARN",
        ),
    ],
)
def test_bad_payloads_are_400_with_the_reason(body, match):
    with pytest.raises(PayloadError, match=match) as info:
        parse_invocation(body)
    assert info.value.http_status == 400


def test_s3_location_children_and_uri():
    loc = S3Uri.parse("s3://results/a/b/", "x")
    assert loc.child("req", "00-id", "seg.dcm").uri == "s3://results/a/b/req/00-id/seg.dcm"
    assert S3Uri.parse("s3://results", "x").child("k").uri == "s3://results/k"


# --- errors and handler edge
# --------------------------------------------------------------------------------------


def test_error_body_keeps_product_status_and_hides_unknown_errors(caplog):
    status, err = error_body(ImageSetNotFoundError(f"image set {IS} not found in datastore {DS}"), "rid-1")
    assert status == 404 and err["type"] == "ImageSetNotFoundError" and IS in err["message"]
    status, err = error_body(KeyError("secret internals"), "rid-2")
    assert status == 500
    assert err["message"] == "internal error while serving request rid-2; the endpoint's log has the details"
    assert "secret" not in json.dumps(err)
    assert "secret internals" in caplog.text  # the trace goes to the log


def test_request_body_and_headers_from_mms_data():
    assert request_body([{"body": bytearray(b"{}")}]) == b"{}"
    assert request_body([{"data": "text"}]) == b"text"
    assert request_body([{"some-form-field": b"x"}]) == b"x"
    assert request_body([]) is None
    assert (
        header({"x-amzn-sagemaker-custom-attributes": "a=1"}, "X-Amzn-SageMaker-Custom-Attributes") == "a=1"
    )


def test_initialize_without_a_bundle_is_a_model_load_error(tmp_path):
    context = SimpleNamespace(system_properties={"model_dir": str(tmp_path), "gpu_id": None}, model_name="m")
    with pytest.raises(ModelLoadError, match=r"cannot load model from .*BundleNotFoundError"):
        ModelHandler(Settings.from_env({"SPLEEN_NUM_GPUS": "0"})).initialize(context)


def test_handler_answers_400_without_a_loaded_model():
    handler = ModelHandler(Settings.from_env({"SPLEEN_NUM_GPUS": "0"}))
    result = handler.serve(b"not json", "rid")
    assert result.status == 400 and result.body["error"]["type"] == "PayloadError"
    result = handler.serve(json.dumps({"datastoreId": DS, "imageSetId": IS}).encode(), "rid")
    assert result.status == 500 and "model is not loaded" in result.body["error"]["message"]


# --- gateway helpers
# ----------------------------------------------------------------------------------------------


def test_target_model_names_are_checked():
    assert check_target_model("v2/model.tar.gz") == "v2/model.tar.gz"
    for bad in ("", "/abs.tar.gz", "../up.tar.gz", "a/../../b"):
        with pytest.raises(RuntimeApiError, match="must be a relative path"):
            check_target_model(bad)
    assert model_key("model.tar.gz") != model_key("model2.tar.gz") and len(model_key("x")) == 32


def test_archive_with_path_traversal_is_rejected(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeApiError, match="is not a readable tar.gz") as info_:
        extract_archive(archive, tmp_path / "out")
    assert info_.value.status == 400
    assert not (tmp_path.parent / "escape.txt").exists()


def test_gpu_id_maps_onto_the_visible_devices():
    from container.handler import _device_for

    assert _device_for(1, None) == "1"
    assert _device_for(1, "4,5,6") == "5"
    assert _device_for(3, "4,5") == "3"


def test_default_output_prefix_applies_when_the_request_names_none(tmp_path):
    handler = ModelHandler(
        Settings.from_env({"SPLEEN_NUM_GPUS": "0", "SPLEEN_OUTPUT_S3_URI": "s3://results/x"})
    )
    with pytest.raises(ModelLoadError, match="cannot load model"):
        handler.load(tmp_path)  # no bundle here, but the default output was parsed first
    inv = handler.preprocess(json.dumps({"datastoreId": DS, "imageSetId": IS}).encode())
    assert inv.output.s3 == S3Uri("results", "x")
    bad = ModelHandler(Settings.from_env({"SPLEEN_NUM_GPUS": "0", "SPLEEN_OUTPUT_S3_URI": "results/x"}))
    with pytest.raises(ModelLoadError, match="SPLEEN_OUTPUT_S3_URI='results/x' is not an S3 URI"):
        bad.load(tmp_path)


def test_only_json_content_types_are_invocations():
    handler = ModelHandler(Settings.from_env({"SPLEEN_NUM_GPUS": "0"}))
    result = handler.serve(b"a,b\n1,2", "rid", "text/csv")
    assert result.status == 400
    message = result.body["error"]["message"]
    assert message == "Content-Type 'text/csv' is not supported; send application/json"
    # JSON, octet-stream and a missing header go on to payload validation.
    for content_type in ("application/json; charset=utf-8", "application/octet-stream", None):
        assert "Content-Type" not in handler.serve(b"{}", "rid", content_type).body["error"]["message"]


def test_seg_inline_only_when_asked_and_within_the_response_budget(tmp_path):
    import base64

    from container.invocation import AwsClients, _Context, _seg_entry

    seg = tmp_path / "seg.dcm"
    seg.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes -> 13,656 base64 characters

    def ctx(inline: bool, budget: int) -> _Context:
        body = {"datastoreId": DS, "imageSetId": IS, "output": {"inlineSeg": inline}}
        return _Context(parse_invocation(json.dumps(body)), "rid", AwsClients(), budget)

    asked = ctx(True, 20_000)
    entry = _seg_entry(asked, seg, None)
    assert base64.b64decode(entry["base64"]) == seg.read_bytes()
    assert asked.inline_budget == 20_000 - 13_656
    too_big = _seg_entry(ctx(True, 13_655), seg, None)
    assert "base64" not in too_big
    assert too_big["inlineOmitted"].startswith("SEG is 10240 bytes (13656 base64)")
    assert "6 MB real-time response limit" in too_big["inlineOmitted"]
    assert "base64" not in _seg_entry(ctx(False, 10**9), seg, None)


def test_cuda_forward_compatibility_only_for_older_host_drivers(tmp_path):
    from container.cuda_compat import compat_driver_version, compat_library_path, parse_version

    compat = tmp_path / "compat"
    compat.mkdir()
    for name in (
        "libcuda.so",
        "libcuda.so.1",
        "libcuda.so.580.65.06",
        "libnvidia-ptxjitcompiler.so.580.65.06",
    ):
        (compat / name).write_bytes(b"")
    assert compat_driver_version(compat) == (580, 65, 6)
    assert compat_driver_version(tmp_path / "missing") is None
    assert parse_version("535.161.08") == (535, 161, 8) and parse_version("N/A") is None
    assert compat_library_path((535, 161, 8), (580, 65, 6), compat) == str(compat)  # old host driver
    assert compat_library_path((580, 65, 6), (580, 65, 6), compat) is None
    assert compat_library_path((590, 1), (580, 65, 6), compat) is None
    assert compat_library_path(None, (580, 65, 6), compat) is None  # no GPU


def test_output_uploads_all_end_before_the_first_failure_is_raised(moto_s3: str, tmp_path):
    """SEG, STL and preview go up side by side: one refused upload (no such bucket) is raised as the storage
    error, and the others still finished (nothing is left half-written behind the caller's back)."""
    from boto3.exceptions import S3UploadFailedError

    from container.invocation import _is_storage_error, _upload_all
    from devstack.clients import s3_client

    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="uploads-ok")
    files = []
    for name in ("seg.dcm", "mesh.stl", "preview.png"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
        files.append(tmp_path / name)
    good = S3Uri.parse("s3://uploads-ok/out")
    _upload_all(s3, [(files[0], good.child("seg.dcm"), "application/dicom")])
    with pytest.raises(S3UploadFailedError, match="NoSuchBucket") as refused:
        _upload_all(
            s3,
            [
                (files[1], good.child("mesh.stl"), "model/stl"),
                (files[2], S3Uri.parse("s3://no-such-bucket-here/out/preview.png"), "image/png"),
                (files[0], good.child("again.dcm"), "application/dicom"),
            ],
        )
    assert _is_storage_error(refused.value)  # so the caller answers 400 naming the bucket, result kept
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="uploads-ok")["Contents"])
    assert keys == ["out/again.dcm", "out/mesh.stl", "out/seg.dcm"]
    head = s3.head_object(Bucket="uploads-ok", Key="out/mesh.stl")
    assert head["ContentType"] == "model/stl" and head["ContentLength"] == len(b"mesh.stl") * 1000
