"""Benchmark: ahi_connector vs ahitodicominterface (AHItoDICOM 0.1.3.4) against a local ahi-local service.

    .venv/bin/python scripts/bench_connector.py [--slices 300] [--size 512] [--mf-frames 100] [--repeat 3]

One run: writes a synthetic int16 CT series (``--slices`` x ``--size``², one file per slice) and a
one-instance multi-frame series, imports both into a fresh ahi-local (HTJ2K), then measures, each trial in its
own subprocess with a hard timeout (the anchor hangs on failures):

- ``ours-datasets/<decoder>``: ``ImageSetExporter.to_datasets`` (pydicom Datasets, native pixels)
- ``ours-volume/<decoder>``: ``ImageSetExporter.to_volume`` (float32 HU volume, no datasets)
- ``decode-only/<decoder>``: decoding the same frame bytes (already in memory) with the same thread count
- ``anchor``: ``AHItoDICOM().DICOMizeImageSet`` pointed at the service through the environment (DESIGN §3);
  pip-installed into the venv (``--no-deps``) only when absent, never a project dependency.

Times: ``cold`` = first call in a fresh interpreter (includes pool / process start), ``warm`` = median of
calls 2..N. Peak RSS = VmHWM of the trial process minus its RSS just before the first call (peak reset there).
Pixels are compared by a CRC32 over every dataset's PixelData in instance order. Prints a table and the target
ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_connector")
DECODERS = ("openjph", "jpeg2k", "openjpeg")
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# ------------------------------------------------------------------------------------------------------------
# trial side (runs in a fresh subprocess, prints one JSON line)
# ------------------------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """VmHWM: peak RSS of this process image (ru_maxrss would include the forking parent's RSS)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
    """Reset VmHWM to the current RSS (Linux clear_refs 5) and return the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _rss_mb()


def _pixels_crc(datasets: list[Any]) -> int:
    crc = 0
    for ds in sorted(datasets, key=lambda d: int(d.InstanceNumber)):
        crc = zlib.crc32(bytes(ds.PixelData), crc)
    return crc


CPU: list[float] = []  # process CPU seconds (all threads) of each timed call


def _timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        result = None  # free the previous result before the next call (peak = one result)
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        CPU.append(time.process_time() - c0)
    return times, result


def trial_ours(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    from ahi_connector import ImageSetExporter, make_ahi_client

    session = boto3.session.Session(
        **{k.lower(): v for k, v in DUMMY_ENV.items() if k != "AWS_DEFAULT_REGION"}
    )
    client = make_ahi_client(args.endpoint, "us-east-1", session=session)
    with ImageSetExporter(
        client, decoder=args.decoder, max_workers=args.workers, transport=args.transport
    ) as ex:
        ex.get_metadata(
            args.datastore, args.image_set
        )  # metadata is cached per version; not what is measured
        base = _reset_peak()
        if args.trial == "datasets":
            times, out = _timed(lambda: ex.to_datasets(args.datastore, args.image_set), args.repeat)
            frames, crc, nbytes = sum(int(d.get("NumberOfFrames", 1)) for d in out), _pixels_crc(out), 0
        else:
            times, out = _timed(lambda: ex.to_volume(args.datastore, args.image_set), args.repeat)
            frames, crc, nbytes = out.shape[0], None, out.array.nbytes
        backends = ex.last_stats.backends if ex.last_stats else {}
        transport = ex.last_stats.transport if ex.last_stats else "?"
    return {
        "transport": transport,
        "times": times,
        "frames": frames,
        "crc": crc,
        "peak_mb": _peak_mb() - base,
        "volume_mb": nbytes / 2**20,
        "backends": backends,
    }


def trial_decode(args: argparse.Namespace) -> dict[str, Any]:
    import concurrent.futures as cf

    import boto3

    from ahi_connector import ImageSetExporter, make_ahi_client
    from ahi_connector.decoders import DecoderRegistry, resolve_codec

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    client = make_ahi_client(args.endpoint, "us-east-1", session=session)
    with ImageSetExporter(client) as ex:
        meta = ex.get_metadata(args.datastore, args.image_set)
        items = []
        for inst in meta.iter_instances():
            spec = inst.frame_spec()
            for f in inst.frames:
                resp = client.get_image_frame(
                    datastoreId=args.datastore,
                    imageSetId=args.image_set,
                    imageFrameInformation={"imageFrameId": f.id},
                )
                data = resp["imageFrameBlob"].read()
                items.append(
                    (resolve_codec(resp.get("contentType"), inst.stored_transfer_syntax, data), data, spec)
                )
    registry = DecoderRegistry(args.decoder)
    base = _reset_peak()
    with cf.ThreadPoolExecutor(args.workers) as pool:

        def run() -> int:
            return sum(1 for _ in pool.map(lambda it: registry.decode(*it), items))

        times, frames = _timed(run, args.repeat)
    registry.close()
    return {
        "times": times,
        "frames": frames,
        "crc": None,
        "peak_mb": _peak_mb() - base,
        "volume_mb": 0.0,
        "backends": {args.decoder: frames},
    }


def trial_anchor(args: argparse.Namespace) -> dict[str, Any]:
    from AHItoDICOMInterface.AHItoDICOM import AHItoDICOM  # the anchor, installed at bench time only

    conv = AHItoDICOM()
    base = _reset_peak()
    times, out = _timed(lambda: conv.DICOMizeImageSet(args.datastore, args.image_set), args.repeat)
    frames = sum(int(d.get("NumberOfFrames", 1)) for d in out)
    return {
        "times": times,
        "frames": frames,
        "crc": _pixels_crc(out),
        "peak_mb": _peak_mb() - base,
        "volume_mb": 0.0,
        "backends": {"openjpeg.decode (forked fetchers)": frames},
        "pixel_bytes": sum(len(d.PixelData) for d in out),
    }


TRIALS = {"datasets": trial_ours, "volume": trial_ours, "decode": trial_decode, "anchor": trial_anchor}


# ------------------------------------------------------------------------------------------------------------
# driver side
# ------------------------------------------------------------------------------------------------------------
def ensure_anchor() -> str | None:
    """Install ahitodicominterface into this venv (no deps) when absent; return a reason when unavailable."""
    if importlib.util.find_spec("AHItoDICOMInterface") is not None:
        return None
    log.info("installing ahitodicominterface==0.1.3.4 (benchmark only, --no-deps)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "ahitodicominterface==0.1.3.4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return f"pip install failed: {proc.stderr.strip()[-300:]}"
    return None


def server_cpu_s() -> float:
    """CPU seconds used so far by the ahi-local server process(es) started by this driver."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("devstack.ahi_local" in part for part in proc.cmdline()):
                cpu = proc.cpu_times()
                total += cpu.user + cpu.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_trial(
    kind: str,
    endpoint: str,
    datastore: str,
    image_set: str,
    decoder: str,
    args: argparse.Namespace,
    extra_env: dict[str, str] | None = None,
    transport: str = "auto",
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--trial",
        kind,
        "--endpoint",
        endpoint,
        "--datastore",
        datastore,
        "--image-set",
        image_set,
        "--decoder",
        decoder,
        "--repeat",
        str(args.repeat),
        "--workers",
        str(args.workers),
        "--transport",
        transport,
    ]
    env = {**os.environ, **DUMMY_ENV, **(extra_env or {})}
    server_before = server_cpu_s()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        cwd=ROOT,
    )
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {args.timeout:.0f} s (killed)"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else '?'}"}
    row = json.loads(lines[-1])
    row["server_cpu_s"] = server_cpu_s() - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # whole trial tree (interpreter start, imports, every call, forked/spawned workers once reaped)
    row["tree_cpu_s"] = (after.ru_utime - children_before.ru_utime) + (
        after.ru_stime - children_before.ru_stime
    )
    return row


def prepare(args: argparse.Namespace, work: Path, s3_url: str, url: str) -> dict[str, tuple[str, str, int]]:
    from devstack.clients import ahi_client, s3_client
    from devstack.importing import create_datastore, import_folder
    from devstack.synthetic import SeriesSpec, write_series

    cases = {
        f"CT {args.slices}x{args.size}² int16": SeriesSpec(
            slices=args.slices,
            rows=args.size,
            columns=args.size,
            bits_stored=16,
            rescale_intercept=-1024.0,
            seed=1,
        ),
        f"multi-frame 1x{args.mf_frames}x{args.size}²": SeriesSpec(
            slices=args.mf_frames, rows=args.size, columns=args.size, multiframe=True, seed=2
        ),
    }
    ahi, s3 = ahi_client(url), s3_client(s3_url)
    datastore = create_datastore(ahi, "bench")
    out = {}
    for name, spec in cases.items():
        t0 = time.perf_counter()
        written = write_series(work / name.split()[0], spec)
        result = import_folder(ahi, s3, datastore, written.paths[0].parent, timeout_s=1800)
        if result.job_status != "COMPLETED" or result.failure:
            raise RuntimeError(f"import of {name} failed: {result.job_status} {result.failure[:2]}")
        log.info(
            "%s: written + imported in %.1f s -> image set %s",
            name,
            time.perf_counter() - t0,
            result.image_set_ids,
        )
        out[name] = (datastore, result.image_set_ids[0], spec.slices)
    return out


def _fmt(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["case"], row["trial"], *["-"] * 8, row["error"][:60]]
    warm = statistics.median(row["times"][1:]) if len(row["times"]) > 1 else row["times"][0]
    row["warm"] = warm
    row["fps"] = row["frames"] / warm
    return [
        row["case"],
        row["trial"],
        str(row["frames"]),
        f"{row['times'][0]:.3f}",
        f"{warm:.3f}",
        f"{row['fps']:.0f}",
        f"{row['peak_mb']:.0f}",
        _client_cpu(row),
        f"{row.get('tree_cpu_s', 0.0):.1f}",
        _server_cpu(row),
        row.get("note", ""),
    ]


def _client_cpu(row: dict[str, Any]) -> str:
    """Median CPU per frame of the warm calls, trial process only (not the anchor's forked workers)."""
    cpu = row.get("cpu") or []
    if not cpu or row["trial"] == "anchor":
        return "n/a"
    warm = statistics.median(cpu[1:]) if len(cpu) > 1 else cpu[0]
    return f"{warm / row['frames'] * 1e3:.2f}"


def _server_cpu(row: dict[str, Any]) -> str:
    """Server CPU over the whole trial (metadata + every call) per frame served."""
    if row["trial"].startswith("decode-only"):
        return "-"
    served = row["frames"] * len(row["times"])
    return f"{row.get('server_cpu_s', 0.0) / served * 1e3:.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = [
        "case",
        "trial",
        "frames",
        "cold s",
        "warm s",
        "frames/s",
        "peak MB",
        "client CPU ms/fr",
        "trial tree CPU s",
        "server CPU ms/fr",
        "note",
    ]
    body = [_fmt(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in body:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def print_ratios(rows: list[dict[str, Any]]) -> None:
    print("\nTargets:")
    by = {(r["case"], r["trial"]): r for r in rows if "error" not in r}
    for case in dict.fromkeys(r["case"] for r in rows):
        anchor = by.get((case, "anchor"))
        for dec in DECODERS:
            ds, vol, dec_only = (
                by.get((case, f"{k}/{dec}")) for k in ("ours-datasets", "ours-volume", "decode-only")
            )
            if ds and anchor and ds.get("tree_cpu_s"):
                print(
                    f"  {case} datasets/{dec}: anchor used "
                    f"{anchor['tree_cpu_s'] / ds['tree_cpu_s']:.1f}x the CPU of ours for the same calls"
                )
            if ds and anchor:
                print(
                    f"  {case} datasets/{dec}: {anchor['warm'] / ds['warm']:.1f}x faster than anchor warm, "
                    f"{anchor['times'][0] / ds['times'][0]:.1f}x cold (target >= 4x)"
                )
            if vol and dec_only:
                print(
                    f"  {case} volume/{dec}: {vol['fps'] / dec_only['fps']:.0%} of decode-only frames/s "
                    "(target >= 70%)"
                )
            if vol and vol["volume_mb"]:
                print(
                    f"  {case} volume/{dec}: peak {vol['peak_mb']:.0f} MB = "
                    f"{vol['peak_mb'] / vol['volume_mb']:.2f}x"
                    f" the volume's {vol['volume_mb']:.0f} MB (target <= 2.5x)"
                )


def drive(args: argparse.Namespace) -> int:
    from devstack.processes import ahi_local_server, moto_s3_server

    anchor_reason = None if args.skip_anchor else ensure_anchor()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-connector-") as tmp:
        work = Path(tmp)
        with moto_s3_server() as s3_url, ahi_local_server(work / "store", s3_endpoint_url=s3_url) as url:
            cases = prepare(args, work, s3_url, url)
            anchor_env = {
                "AWS_ENDPOINT_URL_MEDICAL_IMAGING": url,
                "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            }
            for case, (datastore, image_set, _n) in cases.items():
                crcs = {}
                for dec in args.decoders:
                    for kind, label in (
                        ("datasets", "ours-datasets"),
                        ("volume", "ours-volume"),
                        ("decode", "decode-only"),
                    ):
                        log.info("%s: %s/%s", case, label, dec)
                        row = run_trial(kind, url, datastore, image_set, dec, args)
                        rows.append({"case": case, "trial": f"{label}/{dec}", **row})
                        if row.get("crc") is not None:
                            crcs[f"{label}/{dec}"] = row["crc"]
                if args.skip_anchor or anchor_reason:
                    rows.append({"case": case, "trial": "anchor", "error": anchor_reason or "skipped"})
                else:
                    log.info("%s: anchor", case)
                    row = run_trial("anchor", url, datastore, image_set, "openjpeg", args, anchor_env)
                    rows.append({"case": case, "trial": "anchor", **row})
                    if row.get("crc") is not None:
                        crcs["anchor"] = row["crc"]
                ref = next(iter(crcs.values()), None)
                for r in rows:
                    if r["case"] == case and r.get("crc") is not None:
                        r["note"] = "pixels = ours" if r["crc"] == ref else "PIXELS DIFFER"
                        if r["trial"] == "anchor" and r["crc"] != ref:
                            r["note"] += f" ({r['frames']} frames, {r.get('pixel_bytes', 0) / 2**20:.0f} MB)"
    print(
        f"\nahi_connector benchmark on {os.cpu_count()} CPU(s); workers={args.workers}, repeat={args.repeat}"
    )
    print_table(rows)
    print_ratios(rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--mf-frames", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--timeout", type=float, default=300.0, help="hard limit per trial subprocess (s)")
    p.add_argument("--decoders", type=lambda s: tuple(s.split(",")), default=DECODERS)
    p.add_argument("--skip-anchor", action="store_true")
    p.add_argument("--trial", choices=sorted(TRIALS), help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--datastore", help=argparse.SUPPRESS)
    p.add_argument("--image-set", help=argparse.SUPPRESS)
    p.add_argument("--decoder", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--transport", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.trial:
        print(json.dumps({**TRIALS[args.trial](args), "cpu": CPU}))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
