"""Image formation of a synthetic SEM micrograph from a :class:`~semphase.data.synth.scene.Scene`.

The chain follows a backscatter-electron acquisition: per-phase signal level with texture (grain,
mottling, per-particle contrast) and faint polishing scratches -> probe blur (Gaussian PSF) -> slow
brightness gradient (charging, detector geometry) -> scan-line jitter (each row shifted by a fraction of
a pixel) and row gain noise -> Poisson shot noise on the collected electrons -> Gaussian read noise ->
the operator's brightness/contrast -> 8 bits.

Every random field is drawn per block of ``ROW_BLOCK`` global rows from a generator keyed by
(seed, stream, block), so any band of rows renders to the same pixels as the whole frame would; band
edges are rendered with a ``MARGIN`` of real content so the blur never sees an artificial border.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import cv2
import numpy as np

from semphase.data.synth.domains import NI_WC, Acquisition, Domain
from semphase.data.synth.scene import Scene, build_scene, rasterize_rows

#: Rows per noise block; bands must start on a multiple of it.
ROW_BLOCK = 64
#: Rows/columns of context rendered around a band: covers the grain blur plus the PSF.
MARGIN = 40

#: Columns per cv2.remap call (OpenCV's limit is SHRT_MAX - 1 for source and destination).
_REMAP_COLUMNS = 16384

_FINE, _MOTTLE, _GRAIN, _SCAN = range(4)
_MOTTLE_SIGMA, _GRAIN_SIGMA = 2.0, 6.0


@dataclass(frozen=True)
class Look:
    """Acquisition settings and phase appearance of one micrograph (grey levels, 0..255 scale).

    Per-class tuples are indexed by class id (Matrix, Carbide, Void, Reprecipitate, Dilution).
    """

    levels: tuple[float, ...]  # mean signal per phase
    fine: tuple[float, ...]  # amplitude of pixel-scale texture (before the PSF)
    mottle: tuple[float, ...]  # amplitude of ~2 px blotches
    grain: tuple[float, ...]  # amplitude of ~6 px blotches
    psf_sigma: float  # probe blur, pixels
    gain: float  # grey levels per detected electron (shot noise variance = gain * signal)
    read_noise: float  # grey levels, std
    jitter_px: float  # std of the per-row horizontal shift
    glitch_rate: float  # probability that a row is shifted by a larger scan glitch
    row_gain: float  # std of the per-row gain
    gradient: tuple[float, float, float, float, float]  # gx, gy, quadratic, centre x, centre y (relative)
    contrast: float
    brightness: float
    edge_halo: float = 0.0  # grey levels added along phase boundaries (0: none)
    streak: float = 0.0  # charging trail after bright particles along the scan (0: none)
    streak_length: float = 0.0  # pixels


def sample_look(rng: np.random.Generator, acq: Acquisition = NI_WC.acquisition) -> Look:
    """Draw the acquisition of one micrograph: levels jittered, noise and blur within the ranges of
    ``acq`` (SEM-typical ones by default)."""
    base = np.array(acq.levels)
    levels = base + rng.normal(0.0, acq.level_jitter, 5)
    if acq.carbide_above_matrix is not None:
        # carbide: faint, yet above the noise after the blur
        levels[1] = levels[0] + rng.uniform(*acq.carbide_above_matrix)
    look = Look(
        levels=tuple(float(v) for v in levels),
        fine=acq.fine,
        mottle=acq.mottle,
        grain=acq.grain,
        psf_sigma=float(rng.uniform(*acq.psf_sigma)),
        gain=float(rng.uniform(*acq.gain)),
        read_noise=float(rng.uniform(*acq.read_noise)),
        jitter_px=float(rng.uniform(*acq.jitter_px)),
        glitch_rate=float(rng.uniform(*acq.glitch_rate)),
        row_gain=float(rng.uniform(*acq.row_gain)),
        gradient=(
            float(rng.uniform(-0.08, 0.08)),
            float(rng.uniform(-0.08, 0.08)),
            float(rng.uniform(-0.12, 0.04)),
            float(rng.uniform(0.2, 0.8)),
            float(rng.uniform(0.2, 0.8)),
        ),
        contrast=float(rng.uniform(0.88, 1.12)),
        brightness=float(rng.uniform(-12.0, 12.0)),
    )
    extras = {}
    if acq.edge_halo is not None:
        extras["edge_halo"] = float(rng.uniform(*acq.edge_halo))
    if acq.streak is not None:
        extras["streak"] = float(rng.uniform(*acq.streak))
        extras["streak_length"] = float(rng.uniform(*acq.streak_length))
    return replace(look, **extras) if extras else look


def _edge_halo(labels: np.ndarray) -> np.ndarray:
    """Secondary-electron edge brightening: 1 on phase boundaries, fading over about two pixels."""
    edges = np.zeros(labels.shape, np.float32)
    edges[:, 1:] += labels[:, 1:] != labels[:, :-1]
    edges[:, :-1] += labels[:, 1:] != labels[:, :-1]
    edges[1:] += labels[1:] != labels[:-1]
    edges[:-1] += labels[1:] != labels[:-1]
    np.minimum(edges, 1.0, out=edges)
    return cv2.GaussianBlur(edges, (0, 0), 1.2) * np.float32(2.0)


def _charging_streaks(bright: np.ndarray, length: float) -> np.ndarray:
    """A trail behind bright particles along each scan line: an exponentially fading sum of the bright
    pixels to the left (the beam scans left to right), 0..1, zero inside the particles."""
    taps = max(2, int(3 * length))
    kernel = np.exp(-np.arange(taps, 0, -1, dtype=np.float32) / np.float32(length))
    kernel[-1] = 0.0  # a pixel does not trail itself
    kernel /= kernel.sum()
    trail = cv2.filter2D(bright, -1, kernel[None, :], anchor=(taps - 1, 0), borderType=cv2.BORDER_CONSTANT)
    return trail * (1.0 - bright)


def _block_rng(key: tuple[int, ...], stream: int, block: int) -> np.random.Generator:
    # Blocks above the frame (negative index, for the top margin) get their own keys too.
    return np.random.default_rng(np.random.SeedSequence([*key, stream, block + (1 << 31)]))


def _block_normals(key: tuple[int, ...], stream: int, r0: int, r1: int, width: int) -> np.ndarray:
    """Standard normal float32 field of global rows r0..r1-1, identical whatever band asks for it."""
    b0, b1 = r0 // ROW_BLOCK, -(-r1 // ROW_BLOCK)
    field = np.concatenate(
        [
            _block_rng(key, stream, b).standard_normal((ROW_BLOCK, width), dtype=np.float32)
            for b in range(b0, b1)
        ]
    )
    start = r0 - b0 * ROW_BLOCK
    return field[start : start + (r1 - r0)]


def _smooth_normals(key, stream: int, r0: int, r1: int, width: int, sigma: float) -> np.ndarray:
    """Gaussian-correlated noise with unit standard deviation."""
    field = cv2.GaussianBlur(_block_normals(key, stream, r0, r1, width), (0, 0), sigma)
    # Unit white noise blurred by a Gaussian of sigma has std 1 / (2 sqrt(pi) sigma).
    return field * np.float32(2.0 * np.sqrt(np.pi) * sigma)


def _scratch_layer(scene: Scene, r0: int, shape: tuple[int, int], mx: int) -> np.ndarray:
    """Grey-level change from polishing scratches over global rows r0.. (float32, zero where none).

    Rasterized analytically in global coordinates (not with cv2.line, whose clipping depends on the
    band), so every band draws exactly its share of a scratch; the two pixels straddling the line
    share its amplitude.
    """
    layer = np.zeros(shape, np.float32)
    rows, cols = shape
    for x0, y0, x1, y1, width, amp in scene.scratches:
        if max(y0, y1) + 3 < r0 or min(y0, y1) - 3 > r0 + rows:
            continue
        steep = abs(y1 - y0) >= abs(x1 - x0)
        # Walk along the major axis one pixel at a time; the minor coordinate is fractional.
        a0, a1, b0, b1 = (y0, y1, x0, x1) if steep else (x0, x1, y0, y1)
        if a1 < a0:
            a0, a1, b0, b1 = a1, a0, b1, b0
        major = np.arange(int(np.ceil(a0)), int(np.floor(a1)) + 1)
        minor = b0 + (major - a0) * (b1 - b0) / max(a1 - a0, 1e-9) - (width - 1) / 2.0
        base = np.floor(minor).astype(np.int64)
        frac = (minor - base).astype(np.float32)
        for j in range(int(width) + 1):
            weight = np.where(j == 0, 1.0 - frac, np.where(j == width, frac, 1.0)).astype(np.float32)
            if steep:
                r, c = major - r0, base + j + mx
            else:
                r, c = base + j - r0, major + mx
            ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
            np.add.at(layer, (r[ok], c[ok]), np.float32(amp) * weight[ok])
    return layer


def render_rows(
    scene: Scene, look: Look, key: tuple[int, ...], y0: int, y1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render global rows ``y0..y1-1`` of the micrograph.

    ``y0`` must be a multiple of :data:`ROW_BLOCK` and ``y1`` one too unless it is the frame height, so
    that every noise block is drawn whole.

    Returns
    -------
    image : ndarray of uint8, shape (y1 - y0, width)
    labels : ndarray of uint8, shape (y1 - y0, width), class ids 0..4 (the unblurred truth)
    """
    if y0 % ROW_BLOCK or (y1 % ROW_BLOCK and y1 != scene.height) or not 0 <= y0 < y1 <= scene.height:
        raise ValueError(f"rows {y0}..{y1} do not start and end on noise blocks of {ROW_BLOCK}")
    m, w = MARGIN, scene.width
    r0, r1 = y0 - m, y1 + m
    labels_ext, offsets = rasterize_rows(scene, r0, r1, m)
    wide = w + 2 * m

    def per_class(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, np.float32)[labels_ext]

    signal = per_class(look.levels) + offsets
    signal += per_class(look.fine) * _block_normals(key, _FINE, r0, r1, wide)
    signal += per_class(look.mottle) * _smooth_normals(key, _MOTTLE, r0, r1, wide, _MOTTLE_SIGMA)
    signal += per_class(look.grain) * _smooth_normals(key, _GRAIN, r0, r1, wide, _GRAIN_SIGMA)
    signal += _scratch_layer(scene, r0, signal.shape, m)
    if look.edge_halo:
        signal += np.float32(look.edge_halo) * _edge_halo(labels_ext)
    if look.streak:
        bright = (labels_ext == 2).astype(np.float32)  # the WC particles ("Void") charge
        signal += np.float32(look.streak) * _charging_streaks(bright, look.streak_length)
    signal = cv2.GaussianBlur(signal, (0, 0), look.psf_sigma)

    rows = y1 - y0
    shift = np.empty(rows, np.float32)
    row_gain = np.empty(rows, np.float32)
    scan_rngs = []
    for b in range(y0 // ROW_BLOCK, -(-y1 // ROW_BLOCK)):
        lo, hi = b * ROW_BLOCK - y0, min((b + 1) * ROW_BLOCK, y1) - y0
        g = _block_rng(key, _SCAN, b)
        n = hi - lo
        jitter = g.normal(0.0, look.jitter_px, n)
        glitch = g.random(n) < look.glitch_rate
        jitter[glitch] += g.uniform(-1.0, 1.0, n)[glitch]
        shift[lo:hi] = np.clip(jitter, -1.2, 1.2)
        row_gain[lo:hi] = 1.0 + g.normal(0.0, look.row_gain, n)
        scan_rngs.append((lo, hi, g))

    # Scan-line jitter: each row of the frame samples the blurred signal a fraction of a pixel aside.
    # cv2.remap takes fewer than SHRT_MAX columns, so wide frames are remapped in column chunks; a chunk
    # reads its source columns with the whole margin around them, and its map is the frame's map less a
    # whole number of columns (exact in float32), so the pixels are those of one remap of the frame.
    map_x = np.arange(m, m + w, dtype=np.float32)[None, :] + shift[:, None]
    map_y = np.ascontiguousarray(
        np.broadcast_to(np.arange(m, m + rows, dtype=np.float32)[:, None], (rows, w))
    )
    jittered = np.empty((rows, w), np.float32)
    for x0 in range(0, w, _REMAP_COLUMNS):
        x1 = min(x0 + _REMAP_COLUMNS, w)
        jittered[:, x0:x1] = cv2.remap(
            signal[:, x0 : x1 + 2 * m],
            np.ascontiguousarray(map_x[:, x0:x1] - np.float32(x0)),
            map_y[:, x0:x1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
    signal = jittered

    gx, gy, gq, cx, cy = look.gradient
    u = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, :]
    v = (np.arange(y0, y1, dtype=np.float32) / max(scene.height - 1, 1))[:, None]
    # Slow brightness gradient (charging, detector position) and per-row gain noise.
    gain_field = 1.0 + gx * (u - 0.5) + gy * (v - 0.5) + gq * ((u - cx) ** 2 + (v - cy) ** 2)
    signal *= gain_field * row_gain[:, None]
    np.maximum(signal, 0.0, out=signal)

    image = np.empty((rows, w), np.float32)
    for lo, hi, g in scan_rngs:
        electrons = g.poisson(signal[lo:hi] / look.gain)
        image[lo:hi] = electrons * look.gain + g.normal(0.0, look.read_noise, (hi - lo, w))
    image = (image - 128.0) * look.contrast + 128.0 + look.brightness
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, np.ascontiguousarray(labels_ext[m : m + rows, m : m + w])


@dataclass(frozen=True)
class Micrograph:
    """Everything needed to render any rows of one synthetic micrograph."""

    scene: Scene
    look: Look
    key: tuple[int, ...]

    def bands(self, pixels_per_band: int = 1 << 22) -> list[tuple[int, int]]:
        """Row ranges (y0, y1) covering the frame, each about ``pixels_per_band`` pixels."""
        h, w = self.scene.height, self.scene.width
        rows = int(np.clip(pixels_per_band // (w + 2 * MARGIN) // ROW_BLOCK, 1, 16)) * ROW_BLOCK
        return [(y, min(y + rows, h)) for y in range(0, h, rows)]

    def render(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``y0..y1-1`` as (image uint8, labels uint8), see :func:`render_rows`."""
        return render_rows(self.scene, self.look, self.key, y0, y1)


def prepare(height: int, width: int, seed: int, magnification: int, domain: Domain = NI_WC) -> Micrograph:
    """Geometry and acquisition of one micrograph of ``domain``, from its arguments alone."""
    salt = 0 if domain is NI_WC else zlib.crc32(domain.name.encode())
    key = (int(seed), int(height), int(width), int(magnification)) + ((salt,) if salt else ())
    scene = build_scene(height, width, seed, magnification, domain.morphology, salt)
    look = sample_look(np.random.default_rng(np.random.SeedSequence([*key, 0x100C])), domain.acquisition)
    return Micrograph(scene, look, key)
