"""Decoder backends on real encoded bytes: differential (all backends identical on lossless), codec choice,
errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import psutil
import pytest

from ahi_connector.decoders import Codec, DecoderRegistry, FrameSpec, normalize, resolve_codec
from ahi_connector.decoders.openjpeg import OpenJPEGBackend

HTJ2K_TS = "1.2.840.10008.1.2.4.201"


def _frame(dtype, shape=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -3000), min(info.max, 4095)
    arr = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    arr.flat[0], arr.flat[-1] = lo, hi
    return arr


def _spec(arr: np.ndarray) -> FrameSpec:
    samples = arr.shape[2] if arr.ndim == 3 else 1
    return FrameSpec(
        arr.shape[0],
        arr.shape[1],
        samples,
        arr.dtype.itemsize * 8,
        arr.dtype.itemsize * 8,
        1 if arr.dtype.kind == "i" else 0,
        "RGB" if samples == 3 else "MONOCHROME2",
    )


REFERENCE = {
    "int16": _frame(np.int16),
    "uint16": _frame(np.uint16, seed=1),
    "uint8": _frame(np.uint8, seed=2),
    "int8": _frame(np.int8, seed=5),
    "rgb8": _frame(np.uint8, shape=(32, 24, 3), seed=3),
}


@pytest.fixture(scope="module")
def registries():
    regs = {name: DecoderRegistry(name) for name in ("openjph", "openjpeg", "jpeg2k")}
    yield regs
    for reg in regs.values():
        reg.close()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_all_backends_identical_on_lossless_htj2k(name, registries):
    src = REFERENCE[name]
    data = imagecodecs.htj2k_encode(src)
    assert resolve_codec("image/jph", HTJ2K_TS, data) is Codec.HTJ2K
    outputs = {b: reg.decode(Codec.HTJ2K, data, _spec(src)) for b, reg in registries.items()}
    for backend, out in outputs.items():
        assert out.dtype == src.dtype, backend
        np.testing.assert_array_equal(out, src, err_msg=backend)


@pytest.mark.parametrize("name", ["int16", "uint16", "uint8"])
def test_j2k_backends_identical_on_lossless_j2k(name, registries):
    src = REFERENCE[name]
    data = imagecodecs.jpeg2k_encode(src, level=0, codecformat="J2K", reversible=True)
    assert resolve_codec("image/j2c", "1.2.840.10008.1.2.4.91", data) is Codec.J2K
    for backend in ("openjpeg", "jpeg2k"):
        np.testing.assert_array_equal(registries[backend].decode(Codec.J2K, data, _spec(src)), src)


def test_openjph_preference_cannot_decode_j2k_and_lists_every_backend(registries):
    with pytest.raises(
        LookupError,
        match=r"no decoder for j2k frames; backends: openjph: does not decode j2k; "
        r"jpeg2k: excluded by decoder preference 'openjph'",
    ):
        registries["openjph"].select(Codec.J2K)


def test_auto_prefers_openjph_for_htj2k_and_jpeg2k_for_j2k():
    reg = DecoderRegistry("auto")
    assert reg.select(Codec.HTJ2K).name == "openjph"
    assert reg.select(Codec.J2K).name == "jpeg2k"
    assert reg.select(Codec.JPEG).name == "libjpeg"
    assert reg.select(Codec.NATIVE).name == "native"


def test_unknown_preference():
    with pytest.raises(ValueError, match=r"decoder='kakadu' is not one of"):
        DecoderRegistry("kakadu")


def test_jpeg_12bit_and_8bit_colour():
    reg = DecoderRegistry()
    src12 = (np.add.outer(np.arange(64), np.arange(64)) * 30).astype(np.uint16)
    data = imagecodecs.jpeg8_encode(src12, level=95, bitspersample=12)
    out = reg.decode(
        resolve_codec("image/jpeg", "1.2.840.10008.1.2.4.51", data), data, FrameSpec(64, 64, 1, 16, 12, 0)
    )
    assert out.dtype == np.uint16 and np.abs(out.astype(int) - src12).max() < 40
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = np.arange(32)[None, :] * 4
    data = imagecodecs.jpeg8_encode(rgb, level=95)
    ybr = reg.decode(Codec.JPEG, data, FrameSpec(32, 32, 3, 8, 8, 0, "YBR_FULL_422"))
    from ahi_connector.decoders.jpeg import to_rgb

    back = to_rgb(ybr, FrameSpec(32, 32, 3, 8, 8, 0, "YBR_FULL_422"))
    assert np.abs(back.astype(int) - rgb).max() <= 6
    assert np.abs(ybr.astype(int) - rgb).max() > 50  # really YCbCr before conversion


def test_native_frames_and_signedness():
    src = REFERENCE["int16"]
    out = DecoderRegistry().decode(Codec.NATIVE, src.tobytes(), _spec(src))
    np.testing.assert_array_equal(out, src)
    with pytest.raises(ValueError, match=r"native frame has 10 bytes, expected 3840"):
        DecoderRegistry().decode(Codec.NATIVE, b"0123456789", _spec(src))


@pytest.mark.parametrize(
    ("ctype", "syntax", "data", "codec"),
    [
        ("application/octet-stream", "1.2.840.10008.1.2.1", b"\x01\x02", Codec.NATIVE),
        ("application/octet-stream", HTJ2K_TS, None, Codec.HTJ2K),  # sniffed codestream
        ("image/j2c", HTJ2K_TS, None, Codec.HTJ2K),  # mislabelled HTJ2K refined by CAP marker
        ("image/jpeg; charset=binary", "1.2.840.10008.1.2.4.50", b"\xff\xd8\xff", Codec.JPEG),
    ],
)
def test_resolve_codec(ctype, syntax, data, codec):
    data = data if data is not None else imagecodecs.htj2k_encode(REFERENCE["uint8"])
    assert resolve_codec(ctype, syntax, data) is codec


def test_unsupported_content_type():
    with pytest.raises(
        ValueError, match=r"unsupported content type 'image/webp' \(stored transfer syntax 1\.2\.3\)"
    ):
        resolve_codec("image/webp", "1.2.3", b"RIFF")


def test_normalize_widens_and_reinterprets():
    spec = FrameSpec(2, 2, 1, 16, 12, 1)
    out = normalize(np.array([[1, 2], [3, 65535]], np.uint16), spec)
    assert out.dtype == np.int16 and out[1, 1] == -1
    with pytest.raises(ValueError, match=r"decoded frame has shape \(3, 3\), the metadata says \(2, 2\)"):
        normalize(np.zeros((3, 3), np.uint16), spec)


def test_openjpeg_pool_is_persistent_and_closes():
    backend = OpenJPEGBackend(processes=1)
    data = imagecodecs.htj2k_encode(REFERENCE["int16"])
    backend.decode(data, _spec(REFERENCE["int16"]))
    pids = backend.worker_pids()
    backend.decode(data, _spec(REFERENCE["int16"]))
    assert backend.worker_pids() == pids and len(pids) == 1
    backend.close()
    assert backend.worker_pids() == []


_OWNER = """
import concurrent.futures as cf, time, imagecodecs, numpy as np
from ahi_connector.decoders.base import FrameSpec
from ahi_connector.decoders.openjpeg import OpenJPEGBackend
data = imagecodecs.htj2k_encode(np.arange(64 * 64, dtype=np.int16).reshape(64, 64))
backend = OpenJPEGBackend(processes=2)
with cf.ThreadPoolExecutor(4) as pool:  # concurrent decodes start both pool processes
    list(pool.map(lambda _: backend.decode(data, FrameSpec(64, 64, 1, 16, 16, 1)), range(64)))
print("decoded", flush=True)
time.sleep(120)
"""


def test_openjpeg_pool_dies_with_an_owner_killed_by_sigkill():
    """An owner killed without running atexit (SIGKILL, the OOM killer) leaves no decoder process behind.

    With two pool processes each holds the call queue's write end, so neither ever sees end-of-file: without
    the owner watch both (and the resource tracker) lived on for good."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "decoded"
        tree = psutil.Process(owner.pid).children(recursive=True)
        assert len(tree) == 3, tree  # two pool processes and the resource tracker
    finally:
        owner.kill()
        owner.wait(10)
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [(p.pid, p.cmdline()) for p in alive]
