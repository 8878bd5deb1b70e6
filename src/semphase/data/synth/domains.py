"""Synthetic domains: which microstructure is drawn and how the microscope renders it.

A :class:`Domain` holds the ranges the generator draws from: the morphology of the phases
(:class:`Morphology`) and the acquisition (:class:`Acquisition`). Two domains exist:

- ``ni-wc`` (the default, :data:`NI_WC`): what ``semphase synth`` has always drawn, after the Zenodo Ni-WC
  set (backscatter contrast: Matrix dark, Carbide faint, Reprecipitate mid, Dilution bright, Void
  brightest; large rounded WC particles with a serrated rim, blocky and dendritic precipitates).
- ``shifted`` (:data:`SHIFTED`): the same five phases of *another lab's* micrographs, for measuring how a
  model adapts to micrographs it was not trained on (``benchmarks/few_labels.py``). Different
  microstructure: smaller faceted WC particles, a thin rim with cellular fingers, mostly lamellar
  dendritic precipitates, needle-shaped carbides. Different rendering: a secondary-electron-like look
  with compressed, reordered grey levels (Dilution darker than Reprecipitate), bright edge halos at phase
  boundaries, charging streaks trailing the particles along the scan, a blurrier probe, lower dose (more
  shot noise) and stronger scan jitter.

The shifted domain was written once from these physical differences and is never tuned against the
images a benchmark scores on (see benchmarks/RESULTS.md for the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class Morphology:
    """Ranges of the microstructure (lengths in pixels at 700x, scaled with the magnification)."""

    void_fraction: Range = (0.36, 0.47)  # in-frame area of the WC particles
    radius_mean: float = 105.0  # log-normal particle radius: median and sigma, clipped to radius_range
    radius_sigma: float = 0.35
    radius_range: Range = (60.0, 200.0)
    shape_amplitude: float = 0.045  # low-order outline harmonics (rounded shapes)
    facets: Range | None = None  # number of polygon sides of a faceted particle (None: rounded)
    rim_width: Range = (8.0, 14.0)  # reprecipitate band width
    rim_tooth: Range = (3.0, 6.0)  # serration depth
    rim_fingers: float = 0.05  # share of teeth that grow into long fingers
    dilution_fraction: Range = (0.10, 0.16)
    block_share: Range = (0.45, 0.65)  # of the dilution area, the rest dendritic
    block_size: float = 6.5
    dendrite_length: float = 28.0
    dendrite_width: Range = (2.0, 4.5)
    carbide_fraction: Range = (0.004, 0.008)
    carbide_size: Range = (1.8, 4.2)  # semi-major axis of a speck
    carbide_aspect: Range = (0.6, 1.0)  # minor / major axis


@dataclass(frozen=True)
class Acquisition:
    """Ranges of the image formation (grey levels on the 0..255 scale, per class Matrix, Carbide, Void,
    Reprecipitate, Dilution)."""

    levels: tuple[float, ...] = (62.0, 92.0, 205.0, 128.0, 168.0)
    level_jitter: float = 3.0
    carbide_above_matrix: Range | None = (40.0, 48.0)  # Carbide relative to Matrix (None: its own level)
    fine: tuple[float, ...] = (9.0, 4.0, 6.0, 8.0, 6.0)
    mottle: tuple[float, ...] = (4.0, 2.0, 3.0, 12.0, 5.0)
    grain: tuple[float, ...] = (5.0, 0.0, 6.0, 6.0, 4.0)
    psf_sigma: Range = (0.7, 1.15)
    gain: Range = (0.9, 1.7)
    read_noise: Range = (2.0, 5.0)
    jitter_px: Range = (0.08, 0.3)
    glitch_rate: Range = (0.0, 0.004)
    row_gain: Range = (0.003, 0.012)
    edge_halo: Range | None = None  # grey levels added along phase boundaries (secondary-electron edges)
    streak: Range | None = None  # charging trail after bright particles along the scan, grey levels
    streak_length: Range = (30.0, 60.0)  # pixels


@dataclass(frozen=True)
class Domain:
    """A named microstructure and acquisition."""

    name: str
    morphology: Morphology
    acquisition: Acquisition


NI_WC = Domain("ni-wc", Morphology(), Acquisition())

SHIFTED = Domain(
    "shifted",
    Morphology(
        void_fraction=(0.25, 0.38),
        radius_mean=70.0,
        radius_sigma=0.45,
        radius_range=(35.0, 160.0),
        shape_amplitude=0.03,
        facets=(5.0, 9.0),
        rim_width=(4.0, 8.0),
        rim_tooth=(1.5, 3.0),
        rim_fingers=0.18,
        dilution_fraction=(0.12, 0.20),
        block_share=(0.15, 0.30),
        block_size=5.0,
        dendrite_length=48.0,
        dendrite_width=(1.5, 3.0),
        carbide_fraction=(0.004, 0.010),
        carbide_size=(3.0, 7.0),
        carbide_aspect=(0.2, 0.4),
    ),
    Acquisition(
        levels=(100.0, 150.0, 185.0, 160.0, 126.0),
        level_jitter=4.0,
        carbide_above_matrix=None,
        fine=(12.0, 5.0, 4.0, 6.0, 8.0),
        mottle=(3.0, 3.0, 2.0, 5.0, 7.0),
        grain=(4.0, 0.0, 12.0, 4.0, 3.0),
        psf_sigma=(1.2, 1.8),
        gain=(2.5, 4.0),
        read_noise=(4.0, 8.0),
        jitter_px=(0.3, 0.6),
        glitch_rate=(0.004, 0.01),
        row_gain=(0.01, 0.02),
        edge_halo=(25.0, 40.0),
        streak=(10.0, 20.0),
    ),
)

DOMAINS = {d.name: d for d in (NI_WC, SHIFTED)}


def domain_named(name: str) -> Domain:
    """The domain called ``name``; ValueError listing the known ones otherwise."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ValueError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}") from None
