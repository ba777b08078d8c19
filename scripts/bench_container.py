"""Benchmark: warm invoke via sagemaker-local → container/serve (MMS) vs in-process ``SpleenSegService.run``.

Same image set, same model archive, same machine, measured in one run. Prints a table and the ratio (target:
gateway/in-process ≤ 1.10) plus the first call's model load time (archive fetch + extract + POST /models, i.e.
the handler's ``initialize``) and the first call's end-to-end latency.

    python scripts/bench_container.py [--model-archive build/model.tar.gz] [--repeats 5] [--shape 48,128,128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_s(samples: list[float]) -> float:
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-archive", type=Path, default=ROOT / "build" / "model.tar.gz")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--shape", default="48,128,128")
    ap.add_argument("--spacing", default="4.0,2.5,2.5")
    args = ap.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from devstack.importing import import_folder
    from devstack.stack import LocalStack
    from model.phantoms import generate_phantom, write_dicom_series

    if not args.model_archive.is_file():
        print(f"no model archive at {args.model_archive}; run `make model-archive`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-container-"))
    with LocalStack(work) as stack:
        stack.start_moto()
        stack.start_ahi_local()
        container_url = stack.start_serve(workers=1)
        gateway_url = stack.start_gateway(container_url, str(args.model_archive.parent), ["bench"])
        ahi, s3 = stack.client("medical-imaging"), stack.client("s3")
        slices, rows, cols = (int(v) for v in args.shape.split(","))
        thickness, row_mm, col_mm = (float(v) for v in args.spacing.split(","))
        phantom = generate_phantom(args.seed, shape=(slices, rows, cols), spacing=(thickness, row_mm, col_mm))
        write_dicom_series(phantom, work / "dicom")
        import uuid

        ds = ahi.create_datastore(datastoreName="bench", clientToken=uuid.uuid4().hex)["datastoreId"]
        while ahi.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreStatus"] != "ACTIVE":
            time.sleep(0.2)
        output = import_folder(ahi, s3, ds, work / "dicom", "bench-import")
        request = {"datastoreId": ds, "imageSetId": output.image_set_ids[0]}
        body = json.dumps({"inputs": [request]})
        runtime = stack.client("sagemaker-runtime", gateway_url)

        def invoke() -> float:
            t0 = time.perf_counter()
            resp = runtime.invoke_endpoint(
                EndpointName="bench",
                TargetModel="model.tar.gz",  # type: ignore
                ContentType="application/json",
                Body=body,
            )
            out = json.loads(resp["Body"].read())
            assert out["results"][0]["status"] == "succeeded", out
            return time.perf_counter() - t0

        first_call = invoke()
        with urllib.request.urlopen(f"{gateway_url}/_local/health") as resp:
            load_s = json.loads(resp.read())["loadSeconds"]["model.tar.gz"]

        # In-process baseline: the service the handler builds, same image set, same machine, same threads.
        for key in (
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING",
            "AWS_DISABLE_HOST_PREFIX_INJECTION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        ):
            os.environ[key] = stack.env[key]
        import tarfile

        import torch

        from app.bundle import find_bundle_dir
        from app.request import SegRequest
        from app.service import SpleenSegService

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 1))  # serve gives its one worker all CPUs
        extracted = work / "inproc-model"
        with tarfile.open(args.model_archive) as tar:
            tar.extractall(extracted, filter="data")
        t0 = time.perf_counter()
        service = SpleenSegService(find_bundle_dir(extracted))
        inproc_load = time.perf_counter() - t0
        req = SegRequest.from_json(request)

        def in_process(i: int) -> float:
            t0 = time.perf_counter()
            service.run(req, work / f"inproc-{i}")
            return time.perf_counter() - t0

        def round_trip() -> float:
            """Serving overhead alone: boto3 → gateway → MMS → handler → 400 (no inference)."""
            t0 = time.perf_counter()
            try:
                runtime.invoke_endpoint(  # type: ignore[attr-defined]
                    EndpointName="bench",
                    TargetModel="model.tar.gz",
                    ContentType="application/json",
                    Body=b"{}",
                )
            except runtime.exceptions.ModelError:  # type: ignore[attr-defined]
                pass
            return time.perf_counter() - t0

        overhead_s = [round_trip() for _ in range(20)]
        in_process(0)  # warm-up, like the gateway's first call
        # Interleaved, so that load from anything else on the machine hits both paths alike.
        gateway_s, inproc_s = [], []
        for i in range(args.repeats):
            gateway_s.append(invoke())
            inproc_s.append(in_process(i + 1))

    g, b = _median_s(gateway_s), _median_s(inproc_s)
    print(
        f"\nimage set {request['imageSetId']} ({args.shape} voxels), {args.repeats} warm runs each, "
        "median seconds"
    )
    print(f"{'path':44} {'median s':>9} {'min s':>7} {'max s':>7}")
    print(
        f"{'in-process SpleenSegService.run (baseline)':44} {b:9.3f} {min(inproc_s):7.3f} "
        f"{max(inproc_s):7.3f}"
    )
    print(
        f"{'boto3 → sagemaker-local → MMS → handler':44} {g:9.3f} {min(gateway_s):7.3f} {max(gateway_s):7.3f}"
    )
    print(
        f"ratio gateway / in-process: {g / b:.3f} median, {min(gateway_s) / min(inproc_s):.3f} best-of "
        f"(target ≤ 1.10)"
    )
    print(
        f"serving overhead without inference (invalid body → 400 ModelError round trip, 20 calls): median "
        f"{1000 * _median_s(overhead_s):.1f} ms, min {1000 * min(overhead_s):.1f} ms"
    )
    print(
        f"first call through the gateway: {first_call:.2f} s, of which model load (fetch + extract + "
        "POST /models "
        f"→ initialize): {load_s:.2f} s; in-process SpleenSegService() build: {inproc_load:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
