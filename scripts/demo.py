"""``make demo``: the whole offline story on one machine, with the same boto3 calls as on AWS.

1. start moto S3, ``ahi-local`` (AWS HealthImaging API), ``container/serve`` (the SageMaker multi-model
   container: MMS + our handler) and ``sagemaker-local`` (the SageMaker runtime API) on 127.0.0.1;
2. generate a synthetic abdominal CT phantom (``model.phantoms``) and import it into a datastore (S3 upload +
   StartDICOMImportJob);
3. ``invoke_endpoint(EndpointName=..., TargetModel="model.tar.gz", Body={"inputs": [...], "output": {...}})``;
4. print the spleen volume (and the phantom's true volume), where the SEG went (S3, and the new AHI image set
   it was written back to with STOW-RS, found again with QIDO-RS), save the result's ``preview.png``
   (axial/coronal/sagittal views with the spleen outline) locally and print its path, then stop everything it
   started (also on Ctrl-C or an error).

5. with ``--backfill N``: import N more phantoms and back-fill the datastore through the async endpoint with
   ``ahi-spleen batch``'s code (search, CT pre-filter, one submission per image set version, results from S3).

Usage: ``python -m scripts.demo [--model-archive build/model.tar.gz] [--seed 3] [--preview-out PNG]
[--backfill 2] [--keep-logs]``
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_BUCKET = "spleen-demo-results"
IMPORT_BUCKET = "spleen-demo-import"
ROLE_ARN = "arn:aws:iam::123456789012:role/spleen-demo-ahi-import"
ENDPOINT_NAME = "spleen-mme"  # the one EndpointName the demo's sagemaker-local serves
ASYNC_ENDPOINT_NAME = "spleen-async"  # served too with --backfill (async, to the same container)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make demo", description="Offline end-to-end demo (see module doc).")
    p.add_argument(
        "--model-archive",
        type=Path,
        default=ROOT / "build" / "model.tar.gz",
        help="model.tar.gz to serve (make model-archive builds it)",
    )
    p.add_argument("--seed", type=int, default=3, help="phantom seed")
    p.add_argument("--shape", default="48,128,128", help="phantom slices,rows,cols")
    p.add_argument("--spacing", default="4.0,2.5,2.5", help="phantom slice thickness,row,col spacing in mm")
    p.add_argument("--no-write-back", action="store_true", help="do not write the SEG back into AHI")
    p.add_argument(
        "--write-back",
        choices=("stow-rs", "import-job"),
        default="stow-rs",
        help="STOW-RS (synchronous, default) or an S3-staged import job",
    )
    p.add_argument(
        "--preview-out",
        type=Path,
        default=ROOT / "build" / "demo" / "preview.png",
        help="where to save the result's preview picture",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the services' logs and data folder")
    p.add_argument(
        "--backfill",
        type=int,
        default=0,
        metavar="N",
        help="then import N more phantoms and back-fill the whole datastore through the async endpoint",
    )
    return p


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _create_datastore(ahi: Any) -> str:
    datastore_id = ahi.create_datastore(datastoreName="spleen-demo", clientToken=uuid.uuid4().hex)[
        "datastoreId"
    ]
    deadline = time.monotonic() + 60
    while ahi.get_datastore(datastoreId=datastore_id)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"datastore {datastore_id} not ACTIVE after 60 s")
        time.sleep(0.2)
    return datastore_id


def _phantom_study(
    work: Path, seed: int, shape: str, spacing: str, label: str = "phantom"
) -> tuple[Path, Any]:
    from model.phantoms import generate_phantom, write_dicom_series

    dims = tuple(int(v) for v in shape.split(","))
    mm = tuple(float(v) for v in spacing.split(","))
    phantom = generate_phantom(seed, shape=dims, spacing=mm)  # type: ignore[arg-type]
    folder = work / label / "dicom"
    write_dicom_series(phantom, folder)
    return folder, phantom


def _write_back_lines(wb: dict[str, Any], seg: Any, dicomweb: Any) -> None:
    """How the SEG went back into AHI; for STOW-RS also that QIDO-RS finds its series in the study."""
    ids = ", ".join(wb.get("imageSetIds", [])) or "(pending)"
    if wb.get("method") != "stow-rs":
        print(f"written to AHI   : import job {wb['jobId']} {wb['jobStatus']} -> image set(s) {ids}")
        return
    print(f"written to AHI   : STOW-RS (HTTP {wb['status']}) -> image set {ids} in {wb['datastoreId']}")
    found = dicomweb.search_series(wb["datastoreId"], str(seg.StudyInstanceUID), Modality="SEG")
    uids = [s["0020000E"]["Value"][0] for s in found]
    state = "found" if str(seg.SeriesInstanceUID) in uids else "NOT found"
    print(f"QIDO-RS check    : SEG series {seg.SeriesInstanceUID} {state} in study {seg.StudyInstanceUID}")


def _save_preview(s3: Any, uri: str | None, path: Path) -> str:
    if not uri:
        return "(none: the series is not one regular stack)"
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(path))
    return f"{uri} -> saved to {path}"


def _summarise(out: dict[str, Any], s3: Any, phantom: Any, preview_out: Path, dicomweb: Any) -> None:
    import pydicom

    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
    for result in out["results"]:
        if result["status"] != "succeeded":
            print(f"input {result['index']} failed: {result['error']}")
            continue
        report = result["report"]
        print(f"image set        : {result['input']['imageSetId']} (series {report['seriesInstanceUid']})")
        print(
            f"spleen volume    : {result['spleenVolumeMl']:.1f} mL predicted, "
            f"{phantom.spleen_volume_ml:.1f} mL in the phantom ({report['spleen']['voxelCount']} voxels)"
        )
        print(
            f"model            : {report['model']['name']} {report['model']['version']} on "
            f"{report['model']['device']}"
        )
        print(f"SEG (DICOM)      : {result['seg']['s3Uri']} ({result['seg']['sizeBytes']} bytes)")
        print(f"STL mesh         : {result['stlS3Uri']}")
        print(f"report           : {result['reportS3Uri']}")
        print(f"preview (PNG)    : {_save_preview(s3, result.get('previewS3Uri'), preview_out)}")
        bucket, key = result["seg"]["s3Uri"].removeprefix("s3://").split("/", 1)
        seg = pydicom.dcmread(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        print(
            f"SEG check        : SOP class {seg.SOPClassUID.name}, {seg.NumberOfFrames} frames, segment "
            f"'{seg.SegmentSequence[0].SegmentLabel}', references series "
            f"{seg.ReferencedSeriesSequence[0].SeriesInstanceUID}"
        )
        if result.get("writeBackToAHI"):
            _write_back_lines(result["writeBackToAHI"], seg, dicomweb)
        print(f"timings (s)      : {json.dumps(report['timingsSeconds'])}")


def _log_errors(log: Path, lines: int = 25) -> str:
    """The end of the last traceback in a service log (MMS prefixes worker output with its logger name)."""
    text = [line.split(" - ", 1)[-1] for line in log.read_text(errors="replace").splitlines()]
    starts = [i for i, line in enumerate(text) if line.startswith("Traceback")]
    chunk = text[starts[-1] :] if starts else text[-lines:]
    return "\n".join(chunk[:lines])


def _backfill(args: argparse.Namespace, work: Path, stack: Any, datastore_id: str, gateway_url: str) -> None:
    """Import ``args.backfill`` more phantoms, then run the async back-fill over the whole datastore."""
    from devstack.importing import import_folder
    from devstack.stack import LOCAL_AWS_ENV
    from scripts.aws import batch
    from scripts.aws.names import Names
    from scripts.aws.session import Aws, AwsSettings
    from scripts.aws.state import State

    ahi, s3 = stack.client("medical-imaging"), stack.client("s3")
    _step(
        f"importing {args.backfill} more phantoms, then back-filling datastore {datastore_id} "
        "(async endpoint)"
    )
    for n in range(1, args.backfill + 1):
        folder, _ = _phantom_study(work, args.seed + n, args.shape, args.spacing, f"backfill-{n}")
        imported = import_folder(ahi, s3, datastore_id, folder, IMPORT_BUCKET)
        if imported.job_status != "COMPLETED":
            raise RuntimeError(f"back-fill import {n} failed: {imported.job_properties} {imported.failure}")
    endpoints = {
        "s3": stack.env["AWS_ENDPOINT_URL_S3"],
        "medical-imaging": stack.env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"],
        "sagemaker-runtime": gateway_url,
    }
    os.environ.update(LOCAL_AWS_ENV)  # the CLI code reads credentials the usual way; these are the stack's
    aws = Aws(AwsSettings("us-east-1", service_endpoints=endpoints, progress=True))
    settings = batch.AsyncSettings(
        ASYNC_ENDPOINT_NAME,
        concurrency=2,
        output_s3_uri=f"s3://{RESULTS_BUCKET}/backfill",
        poll_interval_s=2,
        timeout_s=1800,
        verify_endpoint=False,  # the local stack has the runtime API only
    )
    started = time.perf_counter()
    report = batch.run_async(
        aws, Names("spleen-demo"), batch.Selection(datastore_id), RESULTS_BUCKET, settings,
        work / "backfill-journal.jsonl", State(work / "state.json"),
    )  # fmt: skip
    print(report.table())
    print(f"back-fill took {time.perf_counter() - started:.1f} s (journal {work / 'backfill-journal.jsonl'})")


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError

    from devstack.importing import ensure_bucket, import_folder
    from devstack.stack import LocalStack

    if not args.model_archive.is_file():
        print(f"no model archive at {args.model_archive}; run `make model-archive` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="spleen-demo-"))
    with LocalStack(work) as stack:
        _step("starting moto S3, ahi-local, container/serve (MMS) and sagemaker-local on 127.0.0.1")
        print(f"logs and data: {work}")
        s3_url = stack.start_moto()
        ahi_url = stack.start_ahi_local()
        container_url = stack.start_serve()
        async_output = f"s3://{RESULTS_BUCKET}/async-output/" if args.backfill else None
        endpoints = [ENDPOINT_NAME, ASYNC_ENDPOINT_NAME] if args.backfill else [ENDPOINT_NAME]
        gateway_url = stack.start_gateway(
            container_url, str(args.model_archive.parent), endpoints, async_output
        )
        print(f"S3 {s3_url} | AHI {ahi_url} | container {container_url} | sagemaker-runtime {gateway_url}")
        ahi, s3 = stack.client("medical-imaging"), stack.client("s3")

        _step(f"generating phantom (seed {args.seed}, {args.shape} voxels) and importing it into AHI")
        folder, phantom = _phantom_study(work, args.seed, args.shape, args.spacing)
        datastore_id = _create_datastore(ahi)
        imported = import_folder(ahi, s3, datastore_id, folder, IMPORT_BUCKET)
        if imported.job_status != "COMPLETED" or not imported.image_set_ids:
            raise RuntimeError(f"import failed: {imported.job_properties} {imported.failure}")
        image_set_id = imported.image_set_ids[0]
        print(f"datastore {datastore_id}, image set {image_set_id} ({len(list(folder.iterdir()))} instances)")
        ensure_bucket(s3, RESULTS_BUCKET)

        _step('invoke_endpoint(EndpointName="spleen-mme", TargetModel="model.tar.gz") via boto3')
        body: dict[str, Any] = {
            "inputs": [{"datastoreId": datastore_id, "imageSetId": image_set_id}],
            "output": {"s3Uri": f"s3://{RESULTS_BUCKET}/results"},
        }
        if not args.no_write_back:
            body["output"]["writeBackToAHI"] = (
                {"method": "stow-rs"}
                if args.write_back == "stow-rs"
                else {"method": "import-job", "dataAccessRoleArn": ROLE_ARN, "wait": True}
            )
        runtime = stack.client("sagemaker-runtime", gateway_url)
        started = time.perf_counter()
        try:
            resp = runtime.invoke_endpoint(  # type: ignore[attr-defined]
                EndpointName=ENDPOINT_NAME,
                TargetModel="model.tar.gz",
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(body),
            )
        except ClientError as exc:
            print(f"\ninvoke_endpoint failed: {exc}", file=sys.stderr)
            print(
                f"container log ({work / 'serve.log'}), last lines:\n{_log_errors(work / 'serve.log')}",
                file=sys.stderr,
            )
            print(f"logs and data kept in {work}", file=sys.stderr)
            return 1
        out = json.loads(resp["Body"].read())
        print(
            f"answered in {time.perf_counter() - started:.1f} s (first call loads the model); "
            f"CustomAttributes: {resp.get('CustomAttributes')}"
        )
        from devstack.clients import dicomweb_client

        _summarise(out, s3, phantom, args.preview_out, dicomweb_client(ahi_url))
        if args.backfill:
            _backfill(args, work, stack, datastore_id, gateway_url)
        _step("stopping everything the demo started")
    if args.keep_logs:
        print(f"logs and data kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print("done.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def _terminate(signo: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signo}")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo started has been stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
