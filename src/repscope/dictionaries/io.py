"""Save and load SAE directories, verified on load, in repscope's and other libraries' layouts.

repscope's layout (``format="repscope"``): ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``,
``dtype``, hyper-parameters, and what the trainer adds: ``hook_name`` = layer, the ``train``
config, ``repscope_version``), ``sae.safetensors`` (the module's state dict, including
``input_scale``) and ``manifest.json`` (sha256 and size of both). Every file is written
atomically; the manifest last.

``format="saelens"`` / ``"sparsify"`` write directories that SAELens 6 (``SAE.load_from_disk``)
and sparsify 1.x (``SparseCoder.load_from_disk``) load and that give repscope's codes and
reconstructions (the input scale folded into the weights; :mod:`~repscope.dictionaries.formats`).

:func:`load_sae` reads all of them and dictionary_learning's ``config.json`` + ``ae.pt``. Before
building anything it checks the manifest's checksums (when there is one), that ``cfg.json``
parses and names a known architecture, and that the tensors' names and shapes are exactly
those of that architecture at that size; every failure is one :class:`SAEFileError` line
naming the file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch

from repscope._io import atomic_write_bytes, atomic_write_text
from repscope._version import __version__
from repscope.dictionaries import formats
from repscope.dictionaries.sae import ARCHITECTURES, SparseAutoencoder, build_sae

__all__ = ["CFG_FILE", "MANIFEST_FILE", "WEIGHTS_FILE", "SAEFileError", "load_sae", "read_cfg",
           "save_sae", "verify_manifest"]

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
MANIFEST_FILE = "manifest.json"


class SAEFileError(ValueError):
    """A saved SAE directory that is missing, corrupt, inconsistent or not representable."""


def sae_cfg(sae: SparseAutoencoder, **extra: Any) -> dict[str, Any]:
    """The JSON description of ``sae`` (architecture, shapes, hyper-parameters, extras)."""
    return {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(sae.W_dec.dtype).replace("torch.", ""),
        **sae.hyperparams(),
        "repscope_version": __version__,
        **extra,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _write_dir(path: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor], weights: str,
               fmt: str) -> None:
    from safetensors.torch import save

    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / weights, save(tensors, metadata={"format": "pt"}))
    atomic_write_text(path / CFG_FILE, json.dumps(cfg, indent=2, sort_keys=True))
    files = {name: {"sha256": _sha256(path / name), "bytes": (path / name).stat().st_size}
             for name in (CFG_FILE, weights)}
    manifest = {"kind": "repscope.sae", "format": fmt, "repscope_version": __version__, "files": files}
    atomic_write_text(path / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True))


def save_sae(sae: SparseAutoencoder, path: str | Path, *, format: str = "repscope", **extra: Any) -> Path:
    """Write ``sae`` into directory ``path`` in ``format`` ('repscope', 'saelens',
    'sparsify'); ``extra`` (e.g. ``hook_name``) goes into ``cfg.json``. Returns ``path``."""
    from repscope._validate import check_choice

    check_choice(format, "format", "save_sae", ("repscope", "saelens", "sparsify"))
    path = Path(path)
    if format == "repscope":
        tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
        _write_dir(path, sae_cfg(sae, **extra), tensors, WEIGHTS_FILE, format)
    elif format == "saelens":
        cfg, tensors = formats.write_saelens(sae, extra)
        _write_dir(path, cfg, {k: v.cpu() for k, v in tensors.items()}, formats.SAELENS_WEIGHTS, format)
    else:
        cfg, tensors = formats.write_sparsify(sae, extra)
        _write_dir(path, cfg, {k: v.cpu() for k, v in tensors.items()}, formats.SPARSIFY_WEIGHTS, format)
    return path


def verify_manifest(path: str | Path) -> bool:
    """Check every file listed in ``path/manifest.json`` against its size and sha256; return
    False when there is no manifest (directories of other libraries, older repscope)."""
    path = Path(path)
    mf = path / MANIFEST_FILE
    if not mf.is_file():
        return False
    try:
        files = json.loads(mf.read_text())["files"]
        items = [(str(name), int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise SAEFileError(f"{str(mf)!r} is not a valid SAE manifest ({type(exc).__name__}).") from None
    for name, size, digest in items:
        f = path / name
        if not f.is_file():
            raise SAEFileError(f"{str(f)!r} is missing (listed in {str(mf)!r}).")
        if f.stat().st_size != size or _sha256(f) != digest:
            raise SAEFileError(
                f"{str(f)!r} does not match its checksum in {str(mf)!r}: the file is corrupt or was "
                "modified after it was written.")
    return True


def _read_json(f: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SAEFileError(f"{str(f)!r} is not readable JSON ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
    if not isinstance(cfg, dict):
        raise SAEFileError(f"{str(f)!r} must hold a JSON object; got {type(cfg).__name__}.")
    return cfg


def _read_tensors(f: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not f.is_file():
        raise SAEFileError(f"{str(f)!r} is missing.")
    try:
        return load_file(str(f))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SAEFileError(f"{str(f)!r} is not a readable safetensors file ({msg}).") from None


def _subdirs_with_saes(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and
                  ((p / CFG_FILE).is_file() or (p / formats.DL_CONFIG).is_file()))


def _locate(path: Path) -> tuple[str, dict[str, Any] | None]:
    """Verify the manifest (if any), detect the format of ``path``; ``(format, cfg.json or None)``."""
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a saved SAE: no such directory.")
    verify_manifest(path)
    cfg = _read_json(path / CFG_FILE) if (path / CFG_FILE).is_file() else None
    try:
        return formats.detect_format(path, cfg), cfg
    except FileNotFoundError:
        inner = _subdirs_with_saes(path)
        if inner:
            raise FileNotFoundError(f"{str(path)!r} holds several SAEs, one per folder: {inner}; "
                                    "pass one of those folders.") from None
        raise


def read_cfg(path: str | Path) -> dict[str, Any]:
    """The cfg of the SAE in ``path`` in repscope's terms (``architecture``, ``d_in``,
    ``d_sae``, hyper-parameters, ``hook_name``, ``format``), for any supported format."""
    path = Path(path)
    fmt, cfg = _locate(path)
    if fmt == "repscope":
        assert cfg is not None
        return {**cfg, "format": fmt}
    out, _ = _read_foreign(path, fmt, cfg)
    return {**out, "format": fmt}


def _read_foreign(path: Path, fmt: str, cfg: dict[str, Any] | None):  # type: ignore[no-untyped-def]
    weights = {"saelens": formats.SAELENS_WEIGHTS, "sparsify": formats.SPARSIFY_WEIGHTS}.get(fmt)
    state = _read_tensors(path / weights) if weights else None
    try:
        return formats.read_foreign(path, fmt, cfg, state)
    except formats.SAEFormatError as exc:
        raise SAEFileError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise SAEFileError(f"{str(path)!r} ({fmt}): unexpected cfg.json content "
                           f"({type(exc).__name__}: {exc}).") from None


def _init_keywords(architecture: str) -> set[str]:
    keys: set[str] = set()
    for klass in ARCHITECTURES[architecture].__mro__:
        if "__init__" in vars(klass) and issubclass(klass, SparseAutoencoder):
            keys |= set(inspect.signature(klass.__init__).parameters)
    return keys - {"self", "d_in", "d_sae", "kw", "dtype"}


def _build(path: Path, cfg: dict[str, Any], cfg_file: Path) -> SparseAutoencoder:
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        raise SAEFileError(f"{str(cfg_file)!r} names architecture {arch!r}; repscope has "
                           f"{sorted(ARCHITECTURES)}.")
    dtype = getattr(torch, str(cfg.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SAEFileError(f"{str(cfg_file)!r} names dtype {cfg.get('dtype')!r}, not a torch float type.")
    hyper = {k: cfg[k] for k in _init_keywords(arch) if k in cfg}
    try:
        return build_sae(arch, cfg["d_in"], cfg["d_sae"], dtype=dtype, **hyper)
    except (KeyError, TypeError, ValueError) as exc:
        raise SAEFileError(f"{str(cfg_file)!r} does not describe a valid {arch!r} SAE: "
                           f"{type(exc).__name__}: {exc}") from None


def _cross_check(sae: SparseAutoencoder, state: dict[str, torch.Tensor], weights: Path, cfg_file: Path) -> None:
    """Tensor names and shapes must be exactly those of the architecture in cfg.json."""
    want = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if set(want) != set(have):
        raise SAEFileError(
            f"{str(weights)!r} does not match {str(cfg_file)!r}: a {sae.architecture!r} SAE has "
            f"tensors {sorted(want)}, the file holds {sorted(have)}.")
    for k in sorted(want):
        if want[k] != have[k]:
            raise SAEFileError(
                f"{str(weights)!r} does not match {str(cfg_file)!r}: tensor {k!r} has shape "
                f"{have[k]}, cfg.json implies {want[k]} (d_in={sae.d_in}, d_sae={sae.d_sae}).")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise SAEFileError(f"{str(weights)!r}: tensor {k!r} holds non-finite values (NaN or inf).")


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Rebuild the SAE saved in directory ``path``: repscope's layout (verified against its
    manifest), SAELens', sparsify's or dictionary_learning's (format detected from the files).
    Raises :class:`SAEFileError` (one line, naming the file) for a corrupt, inconsistent or
    unsupported directory and ``FileNotFoundError`` when there is none."""
    path = Path(path)
    fmt, cfg = _locate(path)
    if fmt == "repscope":
        assert cfg is not None
        if not (path / MANIFEST_FILE).is_file():
            log.warning("%s has no %s (written by an older repscope?): its files are not verified",
                        path, MANIFEST_FILE)
        state = _read_tensors(path / WEIGHTS_FILE)
        weights = path / WEIGHTS_FILE
    else:
        cfg, state = _read_foreign(path, fmt, cfg)
        weights = path / {"saelens": formats.SAELENS_WEIGHTS, "sparsify": formats.SPARSIFY_WEIGHTS,
                          "dictionary_learning": formats.DL_WEIGHTS}[fmt]
    cfg_file = path / (formats.DL_CONFIG if fmt == "dictionary_learning" else CFG_FILE)
    sae = _build(path, cfg, cfg_file)
    _cross_check(sae, state, weights, cfg_file)
    sae.load_state_dict({k: v.to(sae.state_dict()[k].dtype) for k, v in state.items()})
    sae.source_format = fmt  # type: ignore[assignment]
    return sae.to(device).eval()
