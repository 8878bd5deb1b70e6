"""Where a model's ONNX graph comes from: an ``.onnx`` file, or the weights inside a bioimage.io package.

``semphase package`` writes a bioimage.io model package (a zip holding ``rdf.yaml``, the FP32
ONNX file with its semphase metadata, test tensors, a cover and documentation; see docs/interop.md). The
runtime accepts such a zip wherever it accepts an ONNX file: :func:`resolve` finds the one ONNX file in it,
checks that ``rdf.yaml`` names that file's sha256 (so weights swapped or damaged inside the zip are
refused), and hands back its bytes. The classes, colours, normalization and tiling then come from the
ONNX file's own ``semphase.*`` metadata, exactly as for the file on its own: a package and the ONNX file it
contains give the same masks.

The standard library (zipfile, hashlib) and semphase's own file hashing: part of the base install.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from semphase.errors import InputError
from semphase.imageio import file_sha256

#: Names a bioimage.io package gives its description file (``rdf.yaml`` is the older, still common one).
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: An ONNX member larger than this is refused before it is read (a zip can declare anything).
MAX_WEIGHTS_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ModelSource:
    """A model graph ready for onnxruntime.

    Attributes
    ----------
    path : the file the user named (an ``.onnx`` file or a package zip).
    data : the ONNX bytes for a package; None for a plain ONNX file (onnxruntime reads ``path``).
    member : the ONNX file's name inside the package, or None.
    """

    path: Path
    data: bytes | None
    member: str | None
    #: the member's digest, computed while resolving a package (a plain file is hashed when asked)
    digest: str | None = field(default=None, repr=False)

    @functools.cached_property
    def sha256(self) -> str:
        """Hex digest of the ONNX graph (the member's, for a package: the same as the ``.onnx`` file it
        was packaged from, so results name the same model either way); a plain file is read for it only
        here, so describing a model (``info``) does not hash it."""
        return self.digest if self.digest is not None else file_sha256(self.path)

    @property
    def session_source(self) -> Path | bytes:
        """What :func:`semphase.runtime.session.create_session` opens."""
        return self.data if self.data is not None else self.path

    @property
    def size_bytes(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size


def is_package(path: str | os.PathLike) -> bool:
    """True when ``path`` is a zip file (a bioimage.io package, or something else zipped)."""
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


def resolve(path: str | os.PathLike) -> ModelSource:
    """The ONNX graph ``path`` names: the file itself, or the weights of a bioimage.io package.

    Raises
    ------
    InputError
        naming ``path``: a ZEISS CZANN file (made for ZEN, not for semphase), a zip that is not a bioimage.io
        package or holds no or several ONNX files, weights that do not match ``rdf.yaml``'s sha256, or a
        corrupt zip.
    """
    p = Path(path)
    if not is_package(p):
        return ModelSource(p, None, None)
    if p.suffix.lower() == ".czann":
        raise InputError(
            "a ZEISS CZANN file is for ZEN and arivis; give semphase the .onnx file or the "
            ".bioimageio.zip package made with it",
            p,
        )
    try:
        with zipfile.ZipFile(p) as archive:
            names = archive.namelist()
            rdf_name = next((n for n in names if n in RDF_NAMES), None)
            if rdf_name is None:
                raise InputError(
                    "a zip without rdf.yaml: not a bioimage.io model package (semphase reads .onnx files "
                    "and .bioimageio.zip packages)",
                    p,
                )
            onnx_members = [n for n in names if n.lower().endswith(".onnx")]
            if len(onnx_members) != 1:
                found = ", ".join(onnx_members) if onnx_members else "none"
                raise InputError(
                    f"a bioimage.io package must hold exactly one ONNX weights file for semphase; found "
                    f"{found}",
                    p,
                )
            member = onnx_members[0]
            info = archive.getinfo(member)
            if info.file_size > MAX_WEIGHTS_BYTES:
                raise InputError(f"{member} declares {info.file_size} bytes, more than 2 GiB", p)
            if info.file_size == 0:
                raise InputError(f"{member} in the package is empty (0 bytes)", p)
            rdf = archive.read(rdf_name).decode("utf-8", errors="replace")
            data = archive.read(member)  # zipfile checks the CRC: damage raises BadZipFile
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise InputError(f"corrupt model package ({exc})", p) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest not in rdf:
        raise InputError(
            f"{member} does not match the sha256 rdf.yaml records for the weights: the package was modified "
            "or damaged; make it again with 'semphase package'",
            p,
        )
    return ModelSource(p, data, member, digest=digest)
