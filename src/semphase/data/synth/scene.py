"""Geometry of a synthetic Ni-WC micrograph, generated once for the whole frame and rasterized by rows.

A :class:`Scene` holds every feature in global pixel coordinates as fixed-point integers (``SHIFT``
fractional bits, the form OpenCV's drawing functions take). Rasterizing any row range therefore gives
exactly the pixels a whole-frame rasterization would give, which is what lets :mod:`render` draw
arbitrarily large micrographs band by band without seams. Features extend beyond the frame, so
particles are cut by the image border as in a real crop.

Phases (class ids of :data:`semphase.phases.DEFAULT_TABLE`):

- 2 "Void": large rounded WC particles with slightly irregular outlines;
- 3 "Reprecipitate": a serrated band of varying width around each particle;
- 4 "Dilution": bright blocky polygons and branched dendrites scattered through the matrix;
- 1 "Carbide": rare fine specks in the matrix;
- 0 "Matrix": everything else.

All lengths are given for 700x and scale with ``magnification / 700``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from semphase.data.synth.domains import NI_WC, Morphology
from semphase.phases import DEFAULT_TABLE

#: Fractional bits of the fixed-point coordinates (OpenCV ``shift``).
SHIFT = 4
FIX = 1 << SHIFT

MATRIX, CARBIDE, VOID, REPRECIPITATE, DILUTION = (
    DEFAULT_TABLE.names.index(name) for name in ("Matrix", "Carbide", "Void", "Reprecipitate", "Dilution")
)

#: Nominal magnification at which the feature sizes below are stated.
REFERENCE_MAGNIFICATION = 700


@dataclass
class Scene:
    """Every feature of one micrograph; coordinates are global, fixed point (``value * FIX``).

    ``*_rows`` arrays hold the (first, last) global row each feature can touch, in whole pixels, so a band
    renderer draws only what reaches it.
    """

    height: int
    width: int
    magnification: int
    cores: list[np.ndarray]  # WC particle outlines, each (N, 2) int32
    bands: list[np.ndarray]  # outer outlines of the reprecipitate bands, (M, 2) int32
    particle_rows: np.ndarray  # (P, 2) int64, covering core and band
    core_offsets: np.ndarray  # (P,) float32 grey-level offset of each particle (grain contrast)
    blocks: list[np.ndarray]  # convex outlines of blocky precipitates, (K, 2) int32
    block_rows: np.ndarray  # (B, 2) int64
    segments: np.ndarray  # (S, 2, 2) int32 dendrite arm segments
    segment_width: np.ndarray  # (S,) int32 line thickness in pixels
    segment_rows: np.ndarray  # (S, 2) int64
    specks: np.ndarray  # (C, 5) int64: centre x, centre y, semi-axes a, b (fixed point), angle deg
    scratches: np.ndarray  # (L, 6) float64: x0, y0, x1, y1 (pixels), width, grey-level amplitude


def _fourier(theta: np.ndarray, amps: np.ndarray, phases: np.ndarray, orders: np.ndarray) -> np.ndarray:
    return (amps[:, None] * np.cos(orders[:, None] * theta[None, :] + phases[:, None])).sum(axis=0)


def _fixed(xy: np.ndarray) -> np.ndarray:
    return np.round(xy * FIX).astype(np.int32)


def _rows_of(fixed_pts: np.ndarray) -> tuple[int, int]:
    ys = fixed_pts[:, 1]
    return int(ys.min()) // FIX - 2, int(ys.max()) // FIX + 2


def _particle_outlines(
    rng: np.random.Generator, cx: float, cy: float, r: float, s: float, morph: Morphology = NI_WC.morphology
) -> tuple[np.ndarray, np.ndarray]:
    """Core outline and serrated band outline of one particle, float pixel coordinates."""
    facet = None
    if morph.facets is not None:  # a faceted particle: a polygon of k sides blended into the outline
        k = int(rng.integers(int(morph.facets[0]), int(morph.facets[1]) + 1))
        facet = (k, rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.0))
    shape_k = np.arange(2, 7)
    shape_amp = rng.normal(0.0, morph.shape_amplitude, shape_k.size) / shape_k**0.7
    shape_ph = rng.uniform(0, 2 * np.pi, shape_k.size)
    rough_k = np.arange(8, 31)
    rough_amp = rng.normal(0.0, 0.5 * s, rough_k.size) * (8.0 / rough_k)
    rough_ph = rng.uniform(0, 2 * np.pi, rough_k.size)
    width_k = np.arange(1, 5)
    width_amp = rng.uniform(-0.35, 0.35, width_k.size) / width_k**0.5
    width_ph = rng.uniform(0, 2 * np.pi, width_k.size)
    w0 = rng.uniform(*morph.rim_width) * s
    tooth = rng.uniform(*morph.rim_tooth) * s

    def core_radius(theta: np.ndarray) -> np.ndarray:
        base = r
        if facet is not None:
            sides, turn, strength = facet
            wedge = 2 * np.pi / sides
            polygon = np.cos(np.pi / sides) / np.cos(np.mod(theta - turn, wedge) - wedge / 2)
            base = r * ((1.0 - strength) + strength * polygon)
        return base * (1.0 + _fourier(theta, shape_amp, shape_ph, shape_k)) + _fourier(
            theta, rough_amp, rough_ph, rough_k
        )

    n = int(np.clip(2 * np.pi * r / 2.5, 64, 1024))
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rc = core_radius(theta)
    core = np.stack([cx + rc * np.cos(theta), cy + rc * np.sin(theta)], axis=1)

    # The band's outer edge: width varying slowly along the perimeter plus alternating teeth (serration).
    m = 2 * int(np.clip(np.pi * (r + w0) / (3.5 * s), 48, 1024))  # even: teeth alternate
    step = 2 * np.pi / m
    theta_o = np.sort(np.arange(m) * step + rng.uniform(-0.3, 0.3, m) * step)
    width = np.clip(w0 * (1.0 + _fourier(theta_o, width_amp, width_ph, width_k)), 8.0 * s, 30.0 * s)
    teeth = np.where(np.arange(m) % 2 == 0, tooth * rng.uniform(0.5, 1.0, m), -0.3 * tooth * rng.random(m))
    fingers = rng.random(m) < morph.rim_fingers
    teeth[fingers] += tooth * rng.uniform(1.0, 2.2, int(fingers.sum()))
    ro = core_radius(theta_o) + np.maximum(width + teeth, 5.0 * s)
    band = np.stack([cx + ro * np.cos(theta_o), cy + ro * np.sin(theta_o)], axis=1)
    return core, band


def _place_particles(
    rng: np.random.Generator, h: int, w: int, s: float, morph: Morphology = NI_WC.morphology
):
    """Random sequential placement of non-overlapping particles until the in-frame Void fraction is met."""
    r_min, r_max = morph.radius_range[0] * s, morph.radius_range[1] * s
    ext = int(math.ceil(r_max + 45.0 * s))  # features this far outside the frame still reach into it
    q = 8  # occupancy grid cell, pixels
    gh, gw = (h + 2 * ext) // q + 2, (w + 2 * ext) // q + 2
    grid = np.zeros((gh, gw), np.uint8)
    fy0, fy1, fx0, fx1 = ext // q, (ext + h) // q + 1, ext // q, (ext + w) // q + 1
    frame_cells = (fy1 - fy0) * (fx1 - fx0)
    target = rng.uniform(*morph.void_fraction)
    mean_area = np.pi * (morph.radius_mean * s) ** 2 * 1.15
    expected = target * (h + 2 * ext) * (w + 2 * ext) / mean_area
    budget = int(300 + 80 * expected)
    placed: list[tuple[float, float, float]] = []
    covered = 0
    for _ in range(budget):
        if covered >= target * frame_cells:
            break
        r = float(
            np.clip(np.exp(rng.normal(np.log(morph.radius_mean * s), morph.radius_sigma)), r_min, r_max)
        )
        cx = rng.uniform(-ext, w + ext)
        cy = rng.uniform(-ext, h + ext)
        gap = rng.uniform(3.0, 12.0) * s
        rr = (r + gap) / q
        gx, gy = (cx + ext) / q, (cy + ext) / q
        x0, x1 = max(int(gx - rr), 0), min(int(gx + rr) + 2, gw)
        y0, y1 = max(int(gy - rr), 0), min(int(gy + rr) + 2, gh)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = (yy - gy) ** 2 + (xx - gx) ** 2 <= rr * rr
        if grid[y0:y1, x0:x1][inside].any():
            continue
        ry0, ry1, rx0, rx1 = max(y0, fy0), min(y1, fy1), max(x0, fx0), min(x1, fx1)
        before = int(grid[ry0:ry1, rx0:rx1].sum()) if ry1 > ry0 and rx1 > rx0 else 0
        centre = (int(round(gx * FIX)), int(round(gy * FIX)))
        cv2.circle(grid, centre, int(round(r / q * FIX)), 1, -1, cv2.LINE_8, SHIFT)
        after = int(grid[ry0:ry1, rx0:rx1].sum()) if ry1 > ry0 and rx1 > rx0 else 0
        covered += after - before
        placed.append((cx, cy, r))
    return placed, ext


class _FreeSpace:
    """Where the matrix is: a coarse grid of the particle + band outlines, looked up by point."""

    CELL = 4

    def __init__(self, h: int, w: int, ext: int, bands: list[np.ndarray]) -> None:
        q = self.CELL
        self.ext = ext
        self.grid = np.zeros(((h + 2 * ext) // q + 2, (w + 2 * ext) // q + 2), np.uint8)
        offset = np.array([ext * FIX, ext * FIX], np.int32)
        for band in bands:
            cv2.fillPoly(self.grid, [band + offset], 1, cv2.LINE_8, SHIFT + 2)
        self.grid = cv2.dilate(self.grid, np.ones((3, 3), np.uint8))

    def free(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        q, g = self.CELL, self.grid
        gy = np.clip(((y + self.ext) // q).astype(np.int64), 0, g.shape[0] - 1)
        gx = np.clip(((x + self.ext) // q).astype(np.int64), 0, g.shape[1] - 1)
        return g[gy, gx] == 0


def _candidates(rng: np.random.Generator, n: int, h: int, w: int, pad: float, s: float) -> np.ndarray:
    """(n, 2) positions: half uniform, half in loose clusters (precipitates nucleate in groups)."""
    n_uniform = n // 2
    uni = rng.uniform((-pad, -pad), (w + pad, h + pad), (n_uniform, 2))
    n_centres = max(1, (n - n_uniform) // 10)
    centres = rng.uniform((-pad, -pad), (w + pad, h + pad), (n_centres, 2))
    members = centres[rng.integers(0, n_centres, n - n_uniform)] + rng.normal(0, 28.0 * s, (n - n_uniform, 2))
    pts = np.concatenate([uni, members])
    return pts[rng.permutation(n)]


def _positions(rng, space: _FreeSpace, h: int, w: int, pad: float, s: float, n: int) -> np.ndarray:
    """At least n free positions (more batches as needed)."""
    found: list[np.ndarray] = []
    total = 0
    while total < n:
        pts = _candidates(rng, max(256, 2 * (n - total)), h, w, pad, s)
        pts = pts[space.free(pts[:, 0], pts[:, 1])]
        found.append(pts)
        total += len(pts)
    return np.concatenate(found)[:n]


def _blocks(
    rng: np.random.Generator, centres: np.ndarray, s: float, size_mean: float = 6.5
) -> tuple[np.ndarray, np.ndarray]:
    """Convex, mostly four- to six-cornered precipitates: (n, 7, 2) outlines and their areas."""
    n = len(centres)
    kmax = 7
    k = rng.choice([4, 4, 5, 5, 6, 7], n)
    idx = np.minimum(np.arange(kmax)[None, :], k[:, None] - 1)  # pad by repeating the last corner
    step = 2 * np.pi / k[:, None]
    ang = idx * step + rng.uniform(-0.3, 0.3, (n, kmax)) * step
    size = np.clip(
        np.exp(rng.normal(np.log(size_mean * s), 0.55, n)),
        2.0 * s * size_mean / 6.5,
        24.0 * s * size_mean / 6.5,
    )
    aspect = rng.uniform(1.0, 2.2, n)
    local = np.stack([np.cos(ang) * size[:, None] * aspect[:, None], np.sin(ang) * size[:, None]], axis=2)
    rot = rng.uniform(0, np.pi, n)
    c, sn = np.cos(rot)[:, None], np.sin(rot)[:, None]
    xy = np.stack([local[..., 0] * c - local[..., 1] * sn, local[..., 0] * sn + local[..., 1] * c], axis=2)
    x, y = xy[..., 0], xy[..., 1]
    area = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    return xy + centres[:, None, :], area


def _dendrites(rng: np.random.Generator, roots: np.ndarray, s: float, morph: Morphology = NI_WC.morphology):
    """Branched precipitates: a wandering trunk with side arms alternating left and right.

    Returns (segments (S, 2, 2) float, widths (S,) int, owner dendrite of each segment (S,), area per
    dendrite (n,)).
    """
    n, steps = len(roots), 12
    scale = morph.dendrite_length / 28.0
    length = np.clip(np.exp(rng.normal(np.log(28.0 * scale * s), 0.4, n)), 10.0 * scale * s, 80.0 * scale * s)
    thinnest = max(1, int(morph.dendrite_width[0]))
    width = np.clip(np.round(rng.uniform(*morph.dendrite_width, n) * s), thinnest, 7).astype(np.int32)
    heading = rng.uniform(0, 2 * np.pi, n)[:, None] + np.cumsum(rng.normal(0, 0.15, (n, steps)), axis=1)
    step_len = (length / steps)[:, None]
    trunk = (
        np.concatenate(
            [
                np.zeros((n, 1, 2)),
                np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 2) * step_len[..., None], 1),
            ],
            axis=1,
        )
        + roots[:, None, :]
    )
    trunk_segs = np.stack([trunk[:, :-1], trunk[:, 1:]], axis=2)  # (n, steps, 2, 2)
    nodes = np.arange(1, steps)
    side = np.where(nodes % 2 == 0, 1.0, -1.0)[None, :]
    arm_angle = heading[:, 1:] + side * np.deg2rad(rng.uniform(45, 75, (n, steps - 1)))
    arm_len = rng.uniform(0.15, 0.45, (n, steps - 1)) * length[:, None] * (1.0 - 0.6 * nodes / steps)[None, :]
    arm_len[rng.random((n, steps - 1)) < 0.35] = 0.0
    base = trunk[:, 1:steps]
    tip = base + np.stack([np.cos(arm_angle), np.sin(arm_angle)], 2) * arm_len[..., None]
    arm_segs = np.stack([base, tip], axis=2)
    arm_width = np.maximum(width - 1, thinnest)  # thinner arms vanish under the probe blur
    keep = arm_len > 0
    segments = np.concatenate([trunk_segs.reshape(-1, 2, 2), arm_segs[keep]])
    widths = np.concatenate([np.repeat(width, steps), np.broadcast_to(arm_width[:, None], keep.shape)[keep]])
    owner = np.concatenate(
        [np.repeat(np.arange(n), steps), np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]]
    )
    area = length * width + (arm_len * arm_width[:, None]).sum(axis=1)
    return segments, widths.astype(np.int32), owner, area


def build_scene(
    height: int,
    width: int,
    seed: int,
    magnification: int,
    morph: Morphology = NI_WC.morphology,
    salt: int = 0,
) -> Scene:
    """Generate the geometry of one micrograph of ``height`` x ``width`` pixels (deterministic).

    ``morph`` gives the ranges of the microstructure (:mod:`semphase.data.synth.domains`); ``salt`` keys
    the random streams of a domain other than the default, so its scenes are not the default's.
    """
    entropy = [seed, height, width, magnification, 0x5E1] + ([salt] if salt else [])
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    s = magnification / REFERENCE_MAGNIFICATION
    h, w = height, width

    placed, ext = _place_particles(rng, h, w, s, morph)
    cores, bands, prow = [], [], []
    for cx, cy, r in placed:
        core, band = _particle_outlines(rng, cx, cy, r, s, morph)
        cores.append(_fixed(core))
        bands.append(_fixed(band))
        prow.append(_rows_of(bands[-1]))
    core_offsets = rng.normal(0.0, 6.0, len(placed)).astype(np.float32)
    space = _FreeSpace(h, w, ext, bands)

    # Precipitates (Dilution): area target over the padded frame, about half blocky, half dendritic.
    pad = 48.0 * s
    padded_area = (h + 2 * pad) * (w + 2 * pad)
    target = rng.uniform(*morph.dilution_fraction) * padded_area
    block_share = rng.uniform(*morph.block_share)
    block_estimate = 160.0 * (morph.block_size / 6.5) ** 2  # a block's mean area at 700x, over-estimated
    n_blocks = max(1, int(target * block_share / (block_estimate * s * s)))
    block_xy, block_area = _blocks(rng, _positions(rng, space, h, w, pad, s, n_blocks), s, morph.block_size)
    upto = int(np.searchsorted(np.cumsum(block_area), target * block_share)) + 1
    blocks = [_fixed(p) for p in block_xy[:upto]]
    dendrite_estimate = 170.0 * (morph.dendrite_length / 28.0) * (sum(morph.dendrite_width) / 6.5)
    n_dend = max(1, int(target * (1 - block_share) / (dendrite_estimate * s * s)))
    segs, seg_w, seg_owner, dend_area = _dendrites(
        rng, _positions(rng, space, h, w, pad, s, n_dend), s, morph
    )
    upto_d = int(np.searchsorted(np.cumsum(dend_area), target * (1 - block_share))) + 1
    keep = seg_owner < upto_d
    segs, seg_w = _fixed(segs[keep]), seg_w[keep]
    seg_rows = np.stack(
        [segs[:, :, 1].min(1) // FIX - seg_w - 2, segs[:, :, 1].max(1) // FIX + seg_w + 2], axis=1
    ).astype(np.int64)

    # Carbide specks: a few tenths of a percent of the frame, in the matrix only.
    speck_target = rng.uniform(*morph.carbide_fraction) * padded_area
    lo, hi = morph.carbide_size
    speck_scale = (lo + hi) / 6.0 * (morph.carbide_aspect[0] + morph.carbide_aspect[1]) / 1.6
    n_specks = int(speck_target / (np.pi * (2.4 * s) ** 2 * 0.8 * speck_scale)) + 1
    a = np.clip(rng.uniform(lo, hi, n_specks) * s, 1.6 * lo / 1.8, 5.5 * hi / 4.2)
    b = a * rng.uniform(*morph.carbide_aspect, n_specks)
    n_specks = min(a.size, int(np.searchsorted(np.cumsum(np.pi * a * b), speck_target)) + 1)
    a, b = a[:n_specks], b[:n_specks]
    centres = _positions(rng, space, h, w, pad, s, n_specks)
    specks = np.column_stack(
        [
            np.round(centres * FIX).astype(np.int64),
            np.round(a * FIX).astype(np.int64),
            np.round(b * FIX).astype(np.int64),
            rng.integers(0, 180, n_specks),
        ]
    )

    # Polishing scratches: long, straight, faint; they change the image, never the labels.
    n_scratch = int(rng.poisson(0.3 * h * w / 512.0**2))
    mid = rng.uniform((0, 0), (w, h), (n_scratch, 2))
    ang = rng.uniform(0, np.pi, n_scratch)
    half = rng.uniform(200.0, 1500.0, n_scratch) * s
    d = np.stack([np.cos(ang), np.sin(ang)], 1) * half[:, None]
    sign = np.where(rng.random(n_scratch) < 0.7, -1.0, 1.0)
    scratches = np.column_stack(
        [mid - d, mid + d, np.where(rng.random(n_scratch) < 0.8, 1, 2), sign * rng.uniform(6, 12, n_scratch)]
    )

    return Scene(
        height=h,
        width=w,
        magnification=magnification,
        cores=cores,
        bands=bands,
        particle_rows=np.array(prow, np.int64).reshape(-1, 2),
        core_offsets=core_offsets,
        blocks=blocks,
        block_rows=np.array([_rows_of(p) for p in blocks], np.int64).reshape(-1, 2),
        segments=segs,
        segment_width=seg_w,
        segment_rows=seg_rows,
        specks=specks.reshape(-1, 5),
        scratches=scratches.reshape(-1, 6),
    )


def _touching(rows: np.ndarray, r0: int, r1: int) -> np.ndarray:
    if rows.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero((rows[:, 1] >= r0) & (rows[:, 0] < r1))


def rasterize_rows(scene: Scene, r0: int, r1: int, mx: int) -> tuple[np.ndarray, np.ndarray]:
    """Class labels and per-particle grey-level offsets of global rows ``r0..r1-1``.

    The result covers columns ``-mx .. width+mx-1`` (a margin on both sides, for blurring); rows may lie
    outside the frame for the same reason.

    Returns
    -------
    labels : ndarray of uint8, shape (r1 - r0, width + 2 * mx), class ids 0..4
    offsets : ndarray of float32, same shape, grey-level offset of each particle (0 elsewhere)
    """
    shape = (r1 - r0, scene.width + 2 * mx)
    labels = np.zeros(shape, np.uint8)
    offsets = np.zeros(shape, np.float32)
    delta = np.array([mx * FIX, -r0 * FIX], np.int32)
    line = cv2.LINE_8
    # Painter's order: specks and precipitates first, bands over them, particles on top.
    speck_rows = (
        np.stack([scene.specks[:, 1] // FIX - 8, scene.specks[:, 1] // FIX + 8], axis=1)
        if len(scene.specks)
        else np.zeros((0, 2), np.int64)
    )
    for i in _touching(speck_rows, r0, r1):
        x, y, a, b, angle = (int(v) for v in scene.specks[i])
        cv2.ellipse(labels, (x + mx * FIX, y - r0 * FIX), (a, b), angle, 0, 360, CARBIDE, -1, line, SHIFT)
    for i in _touching(scene.block_rows, r0, r1):
        cv2.fillConvexPoly(labels, scene.blocks[i] + delta, DILUTION, line, SHIFT)
    sel = _touching(scene.segment_rows, r0, r1)
    for width in np.unique(scene.segment_width[sel]):
        segs = scene.segments[sel[scene.segment_width[sel] == width]] + delta
        cv2.polylines(labels, list(segs), False, DILUTION, int(width), line, SHIFT)
    touching = _touching(scene.particle_rows, r0, r1)
    for i in touching:
        cv2.fillPoly(labels, [scene.bands[i] + delta], REPRECIPITATE, line, SHIFT)
    for i in touching:
        cv2.fillPoly(labels, [scene.cores[i] + delta], VOID, line, SHIFT)
        cv2.fillPoly(offsets, [scene.cores[i] + delta], float(scene.core_offsets[i]), line, SHIFT)
    return labels, offsets
