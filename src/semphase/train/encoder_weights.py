"""Pretrained ResNet34 encoder weights: ImageNet (from smp's HuggingFace repo or caches) or a local file.

segmentation_models_pytorch 0.6.0 fetches ``resnet34`` ImageNet weights with
``huggingface_hub.hf_hub_download("smp-hub/resnet34.imagenet", "model.safetensors", revision=...)`` into the
HuggingFace cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``). torchvision keeps the same
ImageNet weights as ``resnet34-*.pth`` in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). Both are
looked up offline first; a download is tried only when the hub answers an HTTP request within 3 seconds,
so a machine without internet fails within seconds (instead of after huggingface_hub's minute of retries)
with a message naming the two ways out.

Weights are stored for a 3-channel (RGB) ``conv1``; for 1-channel micrographs the kernel is summed over the
RGB axis, exactly what smp does for ``in_channels=1`` (it equals feeding the gray image replicated to three
channels, as the study did).
"""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch
from torch import nn

from semphase.errors import InputError

#: smp 0.6.0's source of resnet34 ImageNet weights (see segmentation_models_pytorch/encoders/resnet.py).
SMP_REPO_ID = "smp-hub/resnet34.imagenet"
SMP_REVISION = "7a57b34f723329ff020b3f8bc41771163c519d0c"
SMP_FILENAME = "model.safetensors"
#: Seconds the connectivity probe may take before the machine counts as offline.
PROBE_TIMEOUT_S = 3.0

_OFFLINE_HINT = (
    "use --encoder-weights none (train from random initialization) or --encoder-weights PATH "
    "(a local resnet34 state dict, torchvision or smp layout)"
)


def load_encoder_weights(model: nn.Module, source: str, in_channels: int = 1) -> str:
    """Load pretrained weights into ``model.encoder`` (an smp ResNet34 encoder).

    Parameters
    ----------
    model : smp ``Unet("resnet34", ...)`` built with ``encoder_weights=None``.
    source : ``"imagenet"``, ``"none"`` (leave the random initialization) or a path to a state dict
        (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, or ``.safetensors``).
    in_channels : channels of the model's input (1 for SEM micrographs).

    Returns
    -------
    str: where the weights came from (a file path), or ``"none"``.

    Raises
    ------
    InputError
        When ImageNet weights are neither cached nor downloadable (within seconds), or the file is
        unreadable or not a ResNet34 state dict.
    """
    if source == "none":
        return "none"
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise InputError("this architecture has no pretrained encoder; use --encoder-weights none", source)
    path = imagenet_weights_file() if source == "imagenet" else Path(source)
    state = read_state_dict(path)
    state = encoder_state_from(state, path)
    state = adapt_first_conv(state, in_channels, path)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise InputError(f"not a ResNet34 encoder state dict: {detail[:200]}", path) from None
    return str(path)


def imagenet_weights_file() -> Path:
    """Path of cached ResNet34 ImageNet weights, downloading them only when the server is reachable.

    Raises
    ------
    InputError
        Within about :data:`PROBE_TIMEOUT_S` seconds when nothing is cached and the hub is unreachable.
    """
    cached = _cached_imagenet_file()
    if cached is not None:
        return cached
    from huggingface_hub import constants

    where = f"{constants.ENDPOINT}/{SMP_REPO_ID}"
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _probe(constants.ENDPOINT)
    if reason is None:
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    SMP_REPO_ID,
                    SMP_FILENAME,
                    revision=SMP_REVISION,
                    endpoint=constants.ENDPOINT,
                    etag_timeout=10,
                )
            )
        except Exception as exc:  # network and HTTP errors come in many types
            reason = f"download failed ({exc.__class__.__name__})"
    raise InputError(
        f"ImageNet weights for resnet34 are not cached and cannot be downloaded ({reason}); {_OFFLINE_HINT}",
        where,
    )


def _cached_imagenet_file() -> Path | None:
    """smp's HuggingFace cache entry, else torchvision's resnet34 file in the torch hub cache, else None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(SMP_REPO_ID, SMP_FILENAME, revision=SMP_REVISION, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    hub_checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = sorted(hub_checkpoints.glob("resnet34-*.pth")) if hub_checkpoints.is_dir() else []
    return candidates[0] if candidates else None


def _probe(endpoint: str) -> str | None:
    """None when the hub answers an HTTP request within the timeout, else why not.

    A plain TCP connect is not enough: sandboxes and proxies may accept connections they never serve.
    Name resolution can block far longer than a socket timeout, so the request runs in a daemon thread
    that is abandoned after :data:`PROBE_TIMEOUT_S`. Any HTTP status counts as reachable.
    """
    url = f"{endpoint.rstrip('/')}/api/models/{SMP_REPO_ID}"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return f"bad endpoint {endpoint!r}"
    outcome: list[str | None] = []

    def request() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            outcome.append(f"{urllib.parse.urlsplit(url).hostname} unreachable: {reason}")

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S + 0.5)
    host = urllib.parse.urlsplit(url).hostname
    return outcome[0] if outcome else f"{host} did not answer within {PROBE_TIMEOUT_S:.0f} s"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``torch.save``-d file (safely: no code is unpickled)."""
    if not path.is_file():
        raise InputError("no such encoder weights file", path)
    if path.stat().st_size == 0:
        raise InputError("empty encoder weights file (0 bytes)", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for corrupt or unsafe files
        raise InputError(f"cannot read encoder weights ({exc.__class__.__name__})", path) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]  # semphase / lightning-style checkpoints
    elif isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError("not a state dict of tensors", path)
    return data


def encoder_state_from(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Bare ResNet keys (``conv1.weight``, ``layer1.0...``) from a torchvision, smp-encoder or smp-Unet dict.

    ``module.`` (DataParallel) and ``encoder.`` prefixes are removed; the classifier (``fc.*``) and, for a
    whole smp model, the decoder and head are dropped.
    """
    keys = [re.sub(r"^module\.", "", k) for k in state]
    state = dict(zip(keys, state.values(), strict=True))
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" not in state:
        raise InputError("no conv1.weight: not a ResNet state dict", path)
    return state


def adapt_first_conv(state: dict[str, torch.Tensor], in_channels: int, path: Path) -> dict[str, torch.Tensor]:
    """Fit ``conv1.weight`` (64, 3, 7, 7) to ``in_channels`` inputs the way smp does.

    1 channel: sum over RGB (gray replicated to RGB gives the same response); other counts: cycle the RGB
    kernels and rescale by 3 / in_channels. A kernel that already has ``in_channels`` inputs is kept.
    """
    w = state["conv1.weight"]
    if w.ndim != 4:
        raise InputError(f"conv1.weight has shape {tuple(w.shape)}, expected (64, C, 7, 7)", path)
    if w.shape[1] == in_channels:
        return state
    if w.shape[1] != 3:
        raise InputError(f"conv1.weight has {w.shape[1]} input channels; expected 3 or {in_channels}", path)
    if in_channels == 1:
        new = w.sum(dim=1, keepdim=True)
    else:
        new = torch.stack([w[:, i % 3] for i in range(in_channels)], dim=1) * (3.0 / in_channels)
    return {**state, "conv1.weight": new}
