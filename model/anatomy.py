"""Random abdominal anatomy of one synthetic patient (parameters only; :mod:`model.render` draws them).

Canonical frame: LPS mm (+x patient left, +y posterior, +z superior), origin at the centre of the body outline
at the level of the splenic hilum. Painting order matters: later layers cover earlier ones, and the spleen
label is what remains of the spleen after everything painted over it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from model.shapes import Blob, Waves, orthonormal_axes, random_rotation


class ContrastPhase(str, enum.Enum):
    NATIVE = "native"
    ARTERIAL = "arterial"
    PORTAL = "portal"


#: HU ranges per tissue and phase: (low, high) drawn uniformly per patient.
_HU: dict[str, dict[ContrastPhase, tuple[float, float]]] = {
    "spleen": {
        ContrastPhase.NATIVE: (35, 60),
        ContrastPhase.ARTERIAL: (85, 130),
        ContrastPhase.PORTAL: (100, 140),
    },
    "liver": {
        ContrastPhase.NATIVE: (50, 68),
        ContrastPhase.ARTERIAL: (65, 90),
        ContrastPhase.PORTAL: (95, 130),
    },
    "kidney": {
        ContrastPhase.NATIVE: (28, 40),
        ContrastPhase.ARTERIAL: (170, 240),
        ContrastPhase.PORTAL: (140, 200),
    },
    "aorta": {
        ContrastPhase.NATIVE: (35, 50),
        ContrastPhase.ARTERIAL: (250, 350),
        ContrastPhase.PORTAL: (140, 190),
    },
    "ivc": {
        ContrastPhase.NATIVE: (35, 50),
        ContrastPhase.ARTERIAL: (60, 110),
        ContrastPhase.PORTAL: (120, 170),
    },
    "pancreas": {
        ContrastPhase.NATIVE: (35, 50),
        ContrastPhase.ARTERIAL: (100, 130),
        ContrastPhase.PORTAL: (80, 110),
    },
    "muscle": {
        ContrastPhase.NATIVE: (40, 55),
        ContrastPhase.ARTERIAL: (45, 60),
        ContrastPhase.PORTAL: (50, 65),
    },
    "bowel_wall": {
        ContrastPhase.NATIVE: (30, 45),
        ContrastPhase.ARTERIAL: (60, 100),
        ContrastPhase.PORTAL: (60, 90),
    },
}


@dataclass(frozen=True)
class Layer:
    """One painted structure: a shape, its HU, a texture, and how its content is filled."""

    name: str
    shape: Blob
    hu: float
    texture: Waves | None = None
    gas_below_y: float | None = None  # voxels with y < this (anterior, non-dependent part) are gas
    is_spleen: bool = False
    carve_spleen: bool = False  # removes spleen tissue only (notches), paints nothing


@dataclass(frozen=True)
class Body:
    """Body outline (ellipse, flatter back), subcutaneous fat and the muscle wall."""

    half_width: float
    half_depth_ant: float
    half_depth_post: float
    fat_ant: float
    fat_post: float
    muscle: float
    waist: Waves
    hu_fat: float
    hu_visceral_fat: float
    hu_muscle: float
    hu_skin: float = 30.0


@dataclass(frozen=True)
class Thorax:
    """Diaphragm domes (lung bases above) and the ribs in the muscle wall."""

    dome_left_z: float
    dome_right_z: float
    dome_curvature: float
    hu_lung: float
    rib_top_z: float
    rib_bottom_z: float
    rib_period: float
    rib_slope: float
    rib_phase: float
    rib_radius: float
    hu_rib: float


@dataclass(frozen=True)
class Spine:
    centre_y: float
    body_radius: float
    disc_period: float
    disc_phase: float
    hu_cortex: float
    hu_cancellous: float
    hu_disc: float


@dataclass(frozen=True)
class Variation:
    """Explicit widening of the anatomy for domain-randomised training data (the defaults of
    :func:`sample_anatomy` keep the original family, draw for draw).

    ``spleen_volume_ml``: log-uniform range of the final spleen volume. ``lobulation``: relative amplitude of
    the spleen surface waves (0.12 originally). ``max_clefts``: up to this many notches/clefts (2 originally),
    ``cleft_depth`` their depth relative to the spleen thickness. ``accessory_probability``: chance of a
    splenule (8-16 mm, labelled spleen) near the hilum or lower pole. ``splenectomy``: no spleen at all (the
    left upper quadrant is filled by bowel and stomach). ``scale_range``: patient size factor (before fitting
    into the field of view). ``left_lobe_probability``: chance of a liver left lobe reaching across to touch
    the spleen. ``neighbour_pull``: 0..1, how far the stomach and colon are pulled against the spleen.
    """

    spleen_volume_ml: tuple[float, float] = (20.0, 1000.0)
    lobulation: tuple[float, float] = (0.05, 0.28)
    max_clefts: int = 5
    cleft_depth: tuple[float, float] = (0.5, 1.1)
    accessory_probability: float = 0.15
    splenectomy: bool = False
    scale_range: tuple[float, float] = (0.6, 1.15)
    left_lobe_probability: float = 0.4
    neighbour_pull: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Anatomy:
    """Everything needed to render one synthetic patient."""

    phase: ContrastPhase
    scale: float
    body: Body
    thorax: Thorax
    spine: Spine
    layers: list[Layer] = field(default_factory=list)
    spleen_centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spleen_half_length: float = 0.0

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"anatomy has no layer {name!r}; layers: {[la.name for la in self.layers]}")


def _hu(rng: np.random.Generator, tissue: str, phase: ContrastPhase) -> float:
    lo, hi = _HU[tissue][phase]
    return float(rng.uniform(lo, hi))


def _blob(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    primary: tuple[float, float, float] = (0, 0, 1),
    secondary: tuple[float, float, float] = (1, 0, 0),
    jitter_deg: float = 10.0,
    bend: float = 0.0,
    deform: float = 0.06,
) -> Blob:
    axes = (
        orthonormal_axes(np.asarray(primary, float), np.asarray(secondary, float))
        @ random_rotation(rng, jitter_deg).T
    )
    waves = Waves.random(rng, 5, (1.2, 3.0), deform) if deform else None
    return Blob(
        center=np.asarray(centre, float), axes=axes, radii=np.asarray(radii, float), bend=bend, deform=waves
    )


def _spleen(
    rng: np.random.Generator,
    body: Body,
    phase: ContrastPhase,
    scale: float,
    var: Variation | None = None,
    vrng: np.random.Generator | None = None,
) -> tuple[list[Layer], np.ndarray, float]:
    # drawn as the volume of the final (scaled) patient: 55-480 mL log-uniform (Variation: its range)
    lo, hi = var.spleen_volume_ml if var is not None else (55.0, 480.0)
    volume_ml = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) / scale**3
    aspect = np.array([rng.uniform(1.0, 1.0), rng.uniform(0.28, 0.45), rng.uniform(0.5, 0.75)])
    bend = float(rng.uniform(0.15, 0.45))
    # ellipsoid volume 4/3 pi abc ~ volume; bending keeps the volume, the deformation changes it a little
    a0 = (volume_ml * 1000 * 3 / (4 * np.pi * aspect.prod())) ** (1 / 3)
    radii = a0 * aspect
    inner_x = body.half_width - body.fat_ant - body.muscle
    inner_y = body.half_depth_post - body.fat_post - body.muscle
    centre = np.array(
        [
            inner_x - radii[1] * rng.uniform(0.8, 1.4) - rng.uniform(0, 8),
            inner_y * rng.uniform(0.15, 0.5),
            rng.uniform(-10, 25) + 0.3 * radii[0],
        ]
    )
    # long axis: posterior-superior to anterior-inferior along the ribs; thickness axis points to the hilum
    # (medial)
    long_axis = np.array([rng.uniform(-0.15, 0.25), rng.uniform(-0.75, -0.35), -1.0])
    to_hilum = np.array([-centre[0], -centre[1] * 0.5, 0.0])
    axes = orthonormal_axes(long_axis, to_hilum) @ random_rotation(rng, 8).T
    lobulation = 0.12 if var is None or vrng is None else float(vrng.uniform(*var.lobulation))
    spleen = Blob(
        center=centre, axes=axes, radii=radii, bend=bend, deform=Waves.random(rng, 6, (0.8, 2.5), lobulation)
    )
    tex_amp = 25.0 if phase is ContrastPhase.ARTERIAL else 5.0
    layers = [
        Layer(
            "spleen",
            spleen,
            _hu(rng, "spleen", phase),
            Waves.random(rng, 6, (8, 40), tex_amp),
            is_spleen=True,
        )
    ]
    n_notches = int(rng.integers(0, 3))
    depth = 0.6
    if var is not None and vrng is not None:
        n_notches = int(vrng.integers(0, var.max_clefts + 1))
    for n in range(n_notches):  # splenic notches on the anterior-medial border
        if var is not None and vrng is not None:
            depth = float(vrng.uniform(*var.cleft_depth))
        p = (
            centre
            + axes[0] * radii[0] * rng.uniform(-0.5, 0.5)
            + axes[1] * radii[1] * 0.9
            + axes[2] * radii[2] * (0.8 if n % 2 else -0.8)
        )
        notch = Blob(center=p, axes=axes, radii=np.array([radii[1] * 0.5, radii[1] * depth, 6.0]))
        layers.append(Layer(f"spleen_notch{n}", notch, 0.0, carve_spleen=True))
    if var is not None and vrng is not None and vrng.random() < var.accessory_probability:
        r = float(vrng.uniform(8, 16)) / scale
        where = (
            centre + axes[0] * radii[0] * vrng.uniform(0.6, 1.1) + axes[1] * radii[1] * vrng.uniform(1.0, 2.0)
        )
        splenule = Blob(center=where, axes=np.eye(3), radii=np.array([r, r * 0.9, r * 0.8]))
        layers.append(Layer("spleen_accessory", splenule, layers[0].hu, layers[0].texture, is_spleen=True))
    return layers, centre, float(radii[0])


def _body(rng: np.random.Generator, phase: ContrastPhase) -> Body:
    return Body(
        half_width=float(rng.uniform(145, 190)),
        half_depth_ant=float(rng.uniform(105, 150)),
        half_depth_post=float(rng.uniform(90, 115)),
        fat_ant=float(rng.uniform(6, 40)),
        fat_post=float(rng.uniform(5, 25)),
        muscle=float(rng.uniform(8, 16)),
        waist=Waves.random(rng, 3, (150, 400), 0.05),
        hu_fat=float(rng.uniform(-115, -85)),
        hu_visceral_fat=float(rng.uniform(-105, -75)),
        hu_muscle=_hu(rng, "muscle", phase),
    )


def _organs(
    rng: np.random.Generator,
    body: Body,
    phase: ContrastPhase,
    spleen_c: np.ndarray,
    spine: Spine,
    var: Variation | None = None,
    vrng: np.random.Generator | None = None,
) -> list[Layer]:
    w, d_ant = body.half_width, body.half_depth_ant
    tex = lambda amp: Waves.random(rng, 5, (15, 60), amp)  # noqa: E731
    layers: list[Layer] = []
    for side in (-1, 1):  # kidneys, posterior, below the spleen on the left
        c = (
            side * rng.uniform(55, 75),
            spine.centre_y - rng.uniform(0, 15),
            spleen_c[2] - rng.uniform(35, 70),
        )
        kid = _blob(
            rng,
            c,
            (rng.uniform(45, 60), rng.uniform(22, 30), rng.uniform(25, 32)),
            primary=(side * 0.2, 0.3, 1.0),
            secondary=(side, -0.3, 0),
            jitter_deg=12,
            bend=0.2,
        )
        layers.append(
            Layer(f"kidney_{'left' if side > 0 else 'right'}", kid, _hu(rng, "kidney", phase), tex(8))
        )
    liver_c = (
        -w * rng.uniform(0.25, 0.4),
        d_ant * rng.uniform(-0.15, 0.1),
        spleen_c[2] + rng.uniform(-10, 20),
    )
    liver = _blob(
        rng,
        liver_c,
        (rng.uniform(80, 110), rng.uniform(95, 125), rng.uniform(65, 90)),
        primary=(0, 0, 1),
        secondary=(1, 0, 0),
        jitter_deg=12,
        deform=0.08,
    )
    liver_hu = _hu(rng, "liver", phase)
    layers.append(Layer("liver", liver, liver_hu, tex(6)))
    pull = 0.0
    if var is not None and vrng is not None:
        pull = float(vrng.uniform(*var.neighbour_pull))
        if vrng.random() < var.left_lobe_probability:  # left lobe reaching the spleen (same or similar HU)
            tip = (spleen_c[0] - vrng.uniform(20, 45), spleen_c[1] - vrng.uniform(35, 60), spleen_c[2] + 10)
            lobe_c = ((liver_c[0] + tip[0]) / 2, (liver_c[1] + tip[1]) / 2, tip[2])
            half = float(np.hypot(tip[0] - liver_c[0], tip[1] - liver_c[1])) / 2 + 20
            lobe = _blob(
                vrng,
                lobe_c,
                (half, vrng.uniform(18, 30), vrng.uniform(25, 40)),
                primary=(tip[0] - liver_c[0], tip[1] - liver_c[1], 0.0),
                secondary=(0, 0, 1),
                deform=0.08,
            )
            layers.append(Layer("liver_left_lobe", lobe, liver_hu, tex(6)))
    stomach_c = (
        spleen_c[0] - rng.uniform(50, 80) * (1 - 0.45 * pull),
        -d_ant * rng.uniform(0.15, 0.45),
        spleen_c[2] - rng.uniform(-5, 25),
    )
    stomach = _blob(
        rng,
        stomach_c,
        (rng.uniform(40, 70), rng.uniform(25, 45), rng.uniform(30, 50)),
        primary=(0.3, -0.2, 1),
        secondary=(1, 0, 0),
        jitter_deg=15,
    )
    inner = Blob(stomach.center, stomach.axes, stomach.radii - 4.0, 0.0, stomach.deform)
    fluid = float(rng.uniform(5, 35))
    gas_level = (
        float(stomach_c[1] - stomach.radii[1] * rng.uniform(-0.3, 0.8)) if rng.random() < 0.75 else None
    )
    layers += [
        Layer("stomach_wall", stomach, _hu(rng, "bowel_wall", phase)),
        Layer("stomach", inner, fluid, tex(4), gas_below_y=gas_level),
    ]
    panc_c = (spleen_c[0] * 0.45, spine.centre_y - rng.uniform(45, 65), spleen_c[2] - rng.uniform(15, 35))
    layers.append(
        Layer(
            "pancreas",
            _blob(
                rng,
                panc_c,
                (rng.uniform(55, 75), rng.uniform(10, 16), rng.uniform(12, 18)),
                primary=(1, -0.2, 0.3),
                secondary=(0, 1, 0),
                deform=0.1,
            ),
            _hu(rng, "pancreas", phase),
            tex(8),
        )
    )
    layers += _bowel(rng, body, phase, spleen_c, pull)
    for name, x, r in (
        ("aorta", rng.uniform(5, 25), rng.uniform(10, 14)),
        ("ivc", -rng.uniform(20, 35), rng.uniform(9, 13)),
    ):
        c = (x, spine.centre_y - spine.body_radius - r - rng.uniform(2, 8), 0.0)
        vessel = _blob(rng, c, (2000.0, r, r * rng.uniform(0.8, 1.1)), jitter_deg=2, deform=0.0)
        layers.append(Layer(name, vessel, _hu(rng, name, phase)))
    return layers


def _bowel(
    rng: np.random.Generator, body: Body, phase: ContrastPhase, spleen_c: np.ndarray, pull: float = 0.0
) -> list[Layer]:
    """Bowel loops (gas, fluid or soft contents) and the splenic flexure of the colon near the spleen."""
    layers: list[Layer] = []
    inner_w = body.half_width - body.fat_ant - body.muscle
    n_loops = int(rng.integers(12, 30))
    for n in range(n_loops):
        r = rng.uniform(10, 22)
        c = (
            rng.uniform(-0.75, 0.75) * inner_w,
            -rng.uniform(0.0, 0.75) * (body.half_depth_ant - body.fat_ant),
            spleen_c[2] - rng.uniform(30, 260),
        )
        if n == 0:  # splenic flexure: under/anterior to the spleen
            c = (
                spleen_c[0] - rng.uniform(0, 25),
                spleen_c[1] - rng.uniform(25, 55),
                spleen_c[2] - rng.uniform(40, 80) * (1 - 0.5 * pull),
            )
        outer = _blob(
            rng,
            c,
            (r * rng.uniform(1.5, 4), r, r * rng.uniform(0.8, 1.2)),
            primary=tuple(rng.normal(size=3)),
            secondary=tuple(rng.normal(size=3)),
            jitter_deg=0,
        )
        content = rng.choice(["gas", "fluid", "soft"], p=[0.45, 0.3, 0.25])
        hu = {"gas": -1000.0, "fluid": float(rng.uniform(0, 25)), "soft": float(rng.uniform(20, 60))}[content]
        inner = Blob(outer.center, outer.axes, outer.radii - rng.uniform(1.5, 3.0), 0.0, outer.deform)
        layers += [
            Layer(f"bowel{n}_wall", outer, _hu(rng, "bowel_wall", phase)),
            Layer(f"bowel{n}", inner, hu),
        ]
    return layers


def _splenic_bed(
    rng: np.random.Generator, body: Body, phase: ContrastPhase, spleen_c: np.ndarray, half_len: float
) -> list[Layer]:
    """After splenectomy: colon (splenic flexure) and small bowel loops move up into the empty left upper
    quadrant."""
    layers: list[Layer] = []
    for n in range(int(rng.integers(2, 5))):
        r = float(rng.uniform(12, 24))
        c = spleen_c + rng.uniform(-1, 1, 3) * np.array([20.0, 25.0, half_len * 0.6])
        outer = _blob(
            rng,
            tuple(c),
            (r * rng.uniform(1.5, 3), r, r),
            primary=tuple(rng.normal(size=3)),
            secondary=tuple(rng.normal(size=3)),
            jitter_deg=0,
        )
        content = float(rng.choice([-1000.0, float(rng.uniform(0, 25)), float(rng.uniform(20, 60))]))
        inner = Blob(outer.center, outer.axes, outer.radii - 2.0, 0.0, outer.deform)
        layers += [
            Layer(f"bed{n}_wall", outer, _hu(rng, "bowel_wall", phase)),
            Layer(f"bed{n}", inner, content),
        ]
    return layers


def _thorax(rng: np.random.Generator, spleen_c: np.ndarray, spleen_half_len: float) -> Thorax:
    top = spleen_c[2] + spleen_half_len * 0.8
    return Thorax(
        dome_left_z=float(top + rng.uniform(5, 20)),
        dome_right_z=float(top + rng.uniform(15, 45)),
        dome_curvature=float(rng.uniform(0.004, 0.008)),
        hu_lung=float(rng.uniform(-880, -780)),
        rib_top_z=float(top + 200),
        rib_bottom_z=float(spleen_c[2] - rng.uniform(60, 110)),
        rib_period=float(rng.uniform(28, 38)),
        rib_slope=float(rng.uniform(15, 30)),
        rib_phase=float(rng.uniform(0, 40)),
        rib_radius=float(rng.uniform(4, 6)),
        hu_rib=float(rng.uniform(350, 700)),
    )


def sample_anatomy(
    rng: np.random.Generator,
    max_half_width: float = 1e9,
    max_depth: float = 1e9,
    variation: Variation | None = None,
    variation_rng: np.random.Generator | None = None,
) -> Anatomy:
    """Draw one synthetic patient. The body is shrunk (``scale``, never below 0.5) to fit the given field of
    view: ``max_half_width`` (left-right half extent) and ``max_depth`` (anterior-posterior extent) in mm.

    ``variation`` (with its own ``variation_rng``, so the original family's draws are unchanged) widens the
    anatomy for training data; see :class:`Variation`."""
    var, vrng = variation, variation_rng
    if var is not None and vrng is None:
        raise ValueError("sample_anatomy(variation=...) needs variation_rng")
    phase = ContrastPhase(rng.choice([p.value for p in ContrastPhase], p=[0.4, 0.2, 0.4]))
    body = _body(rng, phase)
    size = 1.0 if var is None or vrng is None else float(vrng.uniform(*var.scale_range))
    scale = float(
        np.clip(
            min(
                size,
                max_half_width / body.half_width,
                max_depth / (body.half_depth_ant + body.half_depth_post),
            ),
            0.5,
            1.15,
        )
    )
    spine = Spine(
        centre_y=float(body.half_depth_post - body.fat_post - body.muscle - rng.uniform(45, 60)),
        body_radius=float(rng.uniform(16, 22)),
        disc_period=float(rng.uniform(28, 36)),
        disc_phase=float(rng.uniform(0, 36)),
        hu_cortex=float(rng.uniform(500, 900)),
        hu_cancellous=float(rng.uniform(150, 280)),
        hu_disc=float(rng.uniform(70, 100)),
    )
    spleen_layers, spleen_c, half_len = _spleen(rng, body, phase, scale, var, vrng)
    layers = _organs(rng, body, phase, spleen_c, spine, var, vrng)
    if var is not None and var.splenectomy:
        layers += _splenic_bed(rng, body, phase, spleen_c, half_len)
    else:
        layers += spleen_layers
    return Anatomy(
        phase=phase,
        scale=scale,
        body=body,
        thorax=_thorax(rng, spleen_c, half_len),
        spine=spine,
        layers=layers,
        spleen_centre=(float(spleen_c[0]), float(spleen_c[1]), float(spleen_c[2])),
        spleen_half_length=half_len,
    )
