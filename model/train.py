"""Train the bundle's UNet on synthetic phantoms and export it as the bundle's ``models/model.ts``.

    python -m model.train all --work model/work      # cache + fit + export (what we ran: README "Model")
    python -m model.train export --work model/work   # export the best checkpoint so far

    # domain-randomised data (model/randomized.py), fine-tuned from the shipped network, resumable:
    nice -n 10 python -m model.train prepare --data randomized --work model/work_dr --train-seeds 20000-20299
    nice -n 10 python -m model.train fit --data randomized --work model/work_dr --train-seeds 20000-20299 \
        --val-seeds 29000-29003 --init model/spleen_ct_segmentation/models/model.ts --max-minutes 70 \
        [--resume]

With ``--data randomized`` the fit reads whatever cases the cache holds (re-scanned every 50 steps, so it can
start while ``prepare`` still renders), draws every patch's intensities and artefacts afresh
(:func:`model.randomized.synthesize`), writes ``checkpoint.pt`` every ``--checkpoint-every`` steps (network,
optimiser, step, random states, time used) and continues from it with ``--resume``; ``--max-minutes`` counts
the minutes of all runs together. The log records the compute used (wall minutes, process CPU seconds,
threads).

Data: phantoms of ``--train-seeds`` (validation: ``--val-seeds``) are generated once, resampled with the
bundle's own transforms (Orientation RAS, Spacing 1.5x1.5x2.0, ScaleIntensityRange -57..164 -> 0..1) and
cached as .npy. Training: 96^3 patches, positive/negative crops, DiceCE loss, Adam with cosine decay, seeded
(torch, numpy). The curve goes to ``<work>/log.jsonl`` while running and to ``model/training_log.json``
(+ PNG) on export. ``--channels`` is the one switch for a narrower UNet; the default is the official
architecture.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import read_configs, write_bundle
from model import SOURCE_BUNDLE_DIR
from model.network import OFFICIAL_CHANNELS, build_network, network_def
from model.train_data import CachedCase, Preprocessing, build_cache, random_patch

logger = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent
TRAINING_LOG = MODEL_DIR / "training_log.json"
TRAINING_PLOT = MODEL_DIR / "training_curve.png"


def parse_seeds(text: str) -> list[int]:
    """``"0-9,20"`` -> [0..9, 20]."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            seeds += range(int(a), int(b) + 1)
        else:
            seeds.append(int(part))
    return seeds


@dataclass
class TrainConfig:
    work_dir: Path = MODEL_DIR / "work"
    train_seeds: list[int] = field(default_factory=lambda: list(range(100, 140)))
    val_seeds: list[int] = field(default_factory=lambda: list(range(900, 902)))
    seed: int = 0
    steps: int = 2400
    batch: int = 2
    patch: int = 96
    lr: float = 1e-3
    positive_fraction: float = 0.67
    val_every: int = 400
    max_minutes: float = 62.0
    threads: int = 1
    channels: tuple[int, ...] = OFFICIAL_CHANNELS
    data: str = "phantoms"  # or "randomized" (model/randomized.py)
    checkpoint_every: int = 50

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "cache"


def _lr_at(cfg: TrainConfig, step: int) -> float:
    warm = 50
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return 1e-5 + 0.5 * (cfg.lr - 1e-5) * (1 + math.cos(math.pi * min(t, 1.0)))


def validate(net: Any, cases: list[CachedCase], patch: int, overlap: float = 0.25) -> list[float]:
    """Dice of the spleen (argmax) per validation case, sliding-window inference in the cached space."""
    import torch
    from monai.inferers import sliding_window_inference

    net.eval()
    dices = []
    with torch.no_grad():
        for case in cases:
            x = torch.from_numpy(np.asarray(case.image, dtype=np.float32))[None, None]
            logits = sliding_window_inference(x, (patch,) * 3, 4, net, overlap=overlap)
            assert isinstance(logits, torch.Tensor)
            pred = logits.argmax(1)[0].numpy().astype(bool)
            gt = case.label.astype(bool)
            denom = pred.sum() + gt.sum()
            dices.append(float(2 * (pred & gt).sum() / denom) if denom else 1.0)
    net.train()
    return dices


def _batch(cases: list[CachedCase], rng: np.random.Generator, cfg: TrainConfig) -> tuple[Any, Any]:
    import torch

    xs, ys = [], []
    for _ in range(cfg.batch):
        case = cases[int(rng.integers(len(cases)))]
        x, y = random_patch(case, rng, cfg.patch, positive=rng.random() < cfg.positive_fraction)
        x = x * np.float32(rng.uniform(0.92, 1.08)) + np.float32(rng.uniform(-0.04, 0.04))  # window jitter
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None].astype(np.int64))


def _randomized_batch(
    cases: list[Any], rng: np.random.Generator, cfg: TrainConfig, scale: Any
) -> tuple[Any, Any]:
    import torch

    from model.randomized import random_case_patch, synthesize

    xs, ys = [], []
    for _ in range(cfg.batch):
        case = cases[int(rng.integers(len(cases)))]
        tissue, hu, label = random_case_patch(
            case, rng, cfg.patch, positive=rng.random() < cfg.positive_fraction
        )
        img, label = synthesize(tissue, hu, label, rng)
        xs.append(scale(img))
        ys.append(label)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None].astype(np.int64))


def _load_init(net: Any, init: Path) -> None:
    """Initial weights from a state dict (``.pt``) or from a bundle's TorchScript ``model.ts``."""
    import torch

    if init.suffix == ".ts":
        state = torch.jit.load(str(init), map_location="cpu").state_dict()
    else:
        state = torch.load(init, map_location="cpu")
    net.load_state_dict(state)


class _Data:
    """Training cases and the validation cases (already synthesised once, fixed) of either data mode."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.cases: list[Any] = []
        self._seen: set[int] = set()
        if cfg.data == "randomized":
            from model.randomized import RandomizedCase, synthesize

            prep = Preprocessing.from_bundle()
            self.scale = lambda img: np.clip(
                (img - prep.a_min) / (prep.a_max - prep.a_min) * (prep.b_max - prep.b_min) + prep.b_min,
                prep.b_min,
                prep.b_max,
            ).astype(np.float32)
            self.val = []
            for s in cfg.val_seeds:
                c = RandomizedCase.load(cfg.cache_dir, s)
                img, lbl = synthesize(c.tissue, c.hu, c.label, np.random.default_rng([s, 0x7A1]))
                self.val.append(CachedCase(s, self.scale(img), lbl, np.flatnonzero(lbl)))
            self.refresh()
        else:
            self.cases = [CachedCase.load(cfg.cache_dir, s) for s in cfg.train_seeds]
            self.val = [CachedCase.load(cfg.cache_dir, s) for s in cfg.val_seeds]

    def refresh(self) -> None:
        """Pick up randomised cases that ``prepare`` finished since the last call."""
        if self.cfg.data != "randomized":
            return
        from model.randomized import RandomizedCase, cached_seeds

        wanted = set(self.cfg.train_seeds)
        for s in cached_seeds(self.cfg.cache_dir):
            if s in wanted and s not in self._seen:
                self.cases.append(RandomizedCase.load(self.cfg.cache_dir, s))
                self._seen.add(s)

    def batch(self, rng: np.random.Generator) -> tuple[Any, Any]:
        if self.cfg.data == "randomized":
            return _randomized_batch(self.cases, rng, self.cfg, self.scale)
        return _batch(self.cases, rng, self.cfg)


def _save_checkpoint(path: Path, net: Any, opt: Any, rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Network, optimiser, random states and progress, enough for ``fit(resume=True)`` to continue."""
    import pickle

    import torch

    payload = {
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "rng": pickle.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        **state,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a cut-off never leaves a half-written checkpoint


def _load_checkpoint(path: Path, net: Any, opt: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Restore what :func:`_save_checkpoint` wrote into ``net``, ``opt`` and ``rng``; returns the progress."""
    import pickle

    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net.load_state_dict(ckpt["net"])
    opt.load_state_dict(ckpt["opt"])
    rng.bit_generator.state = pickle.loads(ckpt["rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt


def _wait_for_data(cfg: TrainConfig) -> _Data:
    """The training data once the validation cases and at least one training case are cached (``prepare``
    may still be rendering the rest)."""
    if cfg.data == "randomized":
        while not all((cfg.cache_dir / f"{s}.tissue.npy").exists() for s in cfg.val_seeds):
            logger.info("waiting for the validation cases %s in %s", cfg.val_seeds, cfg.cache_dir)
            time.sleep(20)
    data = _Data(cfg)
    while not data.cases:
        logger.info("waiting for cached training cases in %s", cfg.cache_dir)
        time.sleep(20)
        data.refresh()
    return data


def fit(cfg: TrainConfig, init: Path | None = None, resume: bool = False) -> Path:
    """Train; keeps ``best.pt`` (highest mean validation Dice), ``last.pt`` and ``checkpoint.pt`` in the
    work dir. Returns best.pt. ``init``: fine-tune from this state dict or ``model.ts``; the log is appended,
    logged steps continue. ``resume``: continue from ``checkpoint.pt`` (same config)."""
    import os

    import torch
    from monai.losses import DiceCELoss
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = _wait_for_data(cfg)
    net = build_network(cfg.channels)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    ckpt_path = cfg.work_dir / "checkpoint.pt"
    done, first, used_minutes, used_cpu, best = 0, 0, 0.0, 0.0, -1.0
    if resume:
        ckpt = _load_checkpoint(ckpt_path, net, opt, rng)
        first, done, used_minutes, used_cpu, best = (
            ckpt[k] for k in ("step", "done", "minutes", "cpu_s", "best")
        )
        logger.info("resuming at step %d (%.1f min used)", first, used_minutes)
    elif init is not None:
        _load_init(net, init)
        log_file = cfg.work_dir / "log.jsonl"
        done = max((r.get("step", 0) for r in read_log(cfg.work_dir)), default=0) if log_file.exists() else 0
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    log_path = cfg.work_dir / "log.jsonl"
    best_path = cfg.work_dir / "best.pt"
    start, cpu0, losses = time.monotonic(), time.process_time(), []

    def minutes() -> float:
        return used_minutes + (time.monotonic() - start) / 60

    def cpu_s() -> float:
        return used_cpu + time.process_time() - cpu0

    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a" if (init is not None or resume) else "w") as log,
        tqdm(total=cfg.steps, initial=first, desc="train", unit="step", dynamic_ncols=True) as bar,
    ):
        config = {
            "event": "config",
            **_jsonable(asdict(cfg)),
            "init": str(init) if init else None,
            "resume_at": first if resume else None,
            "host_cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
        }
        log.write(json.dumps(config) + "\n")
        step = first - 1
        for step in range(first, cfg.steps):
            if step % 50 == 0:
                data.refresh()
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step)
            x, y = data.batch(rng)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(
                loss=f"{np.mean(losses[-25:]):.3f}", cases=len(data.cases), min=f"{minutes():.0f}"
            )
            elapsed = minutes()
            out_of_time = elapsed > cfg.max_minutes
            if (step + 1) % 25 == 0:
                rec = {
                    "event": "train",
                    "step": done + step + 1,
                    "loss": float(np.mean(losses[-25:])),
                    "lr": _lr_at(cfg, step),
                    "minutes": round(elapsed, 2),
                    "cpu_s": round(cpu_s(), 1),
                    "cases": len(data.cases),
                }
                log.write(json.dumps(rec) + "\n")
                log.flush()
            if (step + 1) % cfg.checkpoint_every == 0 and not out_of_time:
                state = {"step": step + 1, "done": done, "minutes": elapsed, "cpu_s": cpu_s(), "best": best}
                _save_checkpoint(ckpt_path, net, opt, rng, state)
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps or out_of_time:
                dices = validate(net, data.val, cfg.patch)
                mean_dice = float(np.mean(dices))
                rec = {
                    "event": "val",
                    "step": done + step + 1,
                    "dice": dices,
                    "mean_dice": mean_dice,
                    "minutes": round(minutes(), 2),
                    "cpu_s": round(cpu_s(), 1),
                }
                log.write(json.dumps(rec) + "\n")
                log.flush()
                logger.info("step %d val dice %s", step + 1, [round(d, 4) for d in dices])
                torch.save(net.state_dict(), cfg.work_dir / "last.pt")
                if mean_dice > best:
                    best = mean_dice
                    torch.save(net.state_dict(), best_path)
            if out_of_time:
                logger.warning("stopping at step %d: time budget of %.0f min used", step + 1, cfg.max_minutes)
                stop = {"event": "stopped", "step": done + step + 1, "reason": "time budget"}
                log.write(json.dumps(stop) + "\n")
                break
        compute = {
            "event": "compute",
            "steps": done + step + 1,
            "wall_minutes": round(minutes(), 2),
            "process_cpu_seconds": round(cpu_s(), 1),
            "torch_threads": cfg.threads,
            "device": "cpu",
        }
        log.write(json.dumps(compute) + "\n")
    return best_path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj) if isinstance(obj, Path) else obj


def read_log(work_dir: Path) -> list[dict[str, Any]]:
    path = work_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export(
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    bundle_dir: Path = SOURCE_BUNDLE_DIR,
    evaluation: Path | None = None,
    version: str | None = None,
    changelog: str = "",
) -> Path:
    """Write the checkpoint into the bundle (model.ts + configs with this network_def) and the training
    log. ``version`` (with its ``changelog`` line) bumps the bundle version in metadata.json."""
    import torch

    checkpoint = checkpoint or cfg.work_dir / "best.pt"
    net = build_network(cfg.channels)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    metadata, inference = read_configs(SOURCE_BUNDLE_DIR)
    inference["network_def"] = network_def(cfg.channels)
    records = read_log(cfg.work_dir)
    vals = [r for r in records if r["event"] == "val"]
    kept = {k: v for k, v in metadata.get("eval_metrics", {}).items() if k == "spleen_threshold"}
    metadata["eval_metrics"] = kept
    if vals:
        best = max(vals, key=lambda r: r["mean_dice"])
        metadata["eval_metrics"].update(
            {
                "val_mean_dice_synthetic": round(best["mean_dice"], 4),
                "val_seeds": cfg.val_seeds,
                "val_data": cfg.data,
                "step": best["step"],
            }
        )
    if version is not None:
        metadata["version"] = version
        metadata.setdefault("changelog", {})[version] = changelog
    if evaluation is not None:  # held-out results of model/evaluate.py for these same weights
        summary = json.loads(evaluation.read_text())["summary"]
        metadata.setdefault("eval_metrics", {})["held_out_phantoms"] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()
        }
    path = write_bundle(bundle_dir, net, metadata, inference)
    TRAINING_LOG.write_text(json.dumps(records, indent=1) + "\n")
    plot_curve(records, TRAINING_PLOT)
    return path


def plot_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Loss (blue) and validation Dice (red) vs step as a small PNG (PIL only)."""
    from PIL import Image, ImageDraw

    train = [(r["step"], r["loss"]) for r in records if r["event"] == "train"]
    val = [(r["step"], r["mean_dice"]) for r in records if r["event"] == "val"]
    if not train:
        return
    w, h, m = 640, 360, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    last = max(s for s, _ in train + val)
    top = max(v for _, v in train)

    def xy(step: float, v: float, vmax: float) -> tuple[float, float]:
        return m + (w - 2 * m) * step / last, h - m - (h - 2 * m) * v / vmax

    d.rectangle([m, m, w - m, h - m], outline="black")
    d.line([xy(s, v, top) for s, v in train], fill="blue", width=2)
    if len(val) > 1:
        d.line([xy(s, v, 1.0) for s, v in val], fill="red", width=2)
    d.text(
        (m, 10), f"DiceCE loss (blue, max {top:.2f}) / val Dice (red, 0..1) vs step (0..{last})", fill="black"
    )
    img.save(path)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        work_dir=args.work,
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        lr=args.lr,
        val_every=args.val_every,
        max_minutes=args.max_minutes,
        threads=args.threads,
        channels=tuple(args.channels),
        data=args.data,
        checkpoint_every=args.checkpoint_every,
    )
    if args.train_seeds:
        cfg.train_seeds = parse_seeds(args.train_seeds)
    if args.val_seeds:
        cfg.val_seeds = parse_seeds(args.val_seeds)
    overlap = set(cfg.train_seeds) & set(cfg.val_seeds)
    if overlap:
        raise SystemExit(f"seeds {sorted(overlap)} are in both --train-seeds and --val-seeds")
    return cfg


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["prepare", "fit", "export", "all"])
    ap.add_argument("--work", type=Path, default=TrainConfig.work_dir)
    ap.add_argument("--train-seeds", default="")
    ap.add_argument("--val-seeds", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--batch", type=int, default=TrainConfig.batch)
    ap.add_argument("--patch", type=int, default=TrainConfig.patch, help="training patch edge (voxels)")
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--val-every", type=int, default=TrainConfig.val_every)
    ap.add_argument("--max-minutes", type=float, default=TrainConfig.max_minutes)
    ap.add_argument("--threads", type=int, default=TrainConfig.threads)
    ap.add_argument("--init", type=Path, default=None, help="fit: fine-tune from this checkpoint or model.ts")
    ap.add_argument("--resume", action="store_true", help="fit: continue from <work>/checkpoint.pt")
    ap.add_argument("--data", choices=["phantoms", "randomized"], default="phantoms")
    ap.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    ap.add_argument("--evaluation", type=Path, default=None, help="export: add this evaluate.py report")
    ap.add_argument("--checkpoint", type=Path, default=None, help="export: this state dict (default best.pt)")
    ap.add_argument("--bundle-dir", type=Path, default=SOURCE_BUNDLE_DIR, help="export: into this bundle")
    ap.add_argument("--version", default=None, help="export: new bundle version (metadata.json)")
    ap.add_argument("--changelog", default="", help="export: changelog line of --version")
    ap.add_argument(
        "--channels",
        type=int,
        nargs=5,
        default=list(OFFICIAL_CHANNELS),
        help="UNet channels (default: the official 16 32 64 128 256)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = _config_from_args(args)
    if args.command in ("prepare", "all"):
        seeds = cfg.val_seeds + cfg.train_seeds
        with tqdm(total=len(seeds), desc="phantom cache", unit="case") as bar:
            if cfg.data == "randomized":
                from model.randomized import build_randomized_cache

                build_randomized_cache(seeds, cfg.cache_dir, progress=bar.update)
            else:
                build_cache(seeds, cfg.cache_dir, cfg.patch, progress=bar.update)
    if args.command in ("fit", "all"):
        fit(cfg, init=args.init, resume=args.resume)
    if args.command in ("export", "all"):
        path = export(
            cfg,
            checkpoint=args.checkpoint,
            bundle_dir=args.bundle_dir,
            evaluation=args.evaluation,
            version=args.version,
            changelog=args.changelog,
        )
        logger.info("exported %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
