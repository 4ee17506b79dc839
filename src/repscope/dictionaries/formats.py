"""SAE directories of other libraries: SAELens 6, EleutherAI sparsify 1.x, dictionary_learning.

Each reader turns a directory into ``(cfg, tensors)`` in repscope's terms (``cfg``:
``architecture``, ``d_in``, ``d_sae``, hyper-parameters, ``hook_name``; ``tensors``: the
state dict of that repscope architecture); each writer turns a repscope SAE into the other
library's files. The maths of the conversions (every one is exact, no re-fitting):

- repscope encodes ``sigma((s x - b_dec) W_enc + b_enc)`` and decodes ``(z W_dec + b_dec) / s``.
  Export folds the input scale ``s`` into the weights, ``W_enc <- s W_enc``,
  ``W_dec <- W_dec / s``, ``b_dec <- b_dec / s`` (SAELens' own
  ``fold_activation_norm_scaling_factor``): codes and reconstructions are unchanged, on the raw
  activations, and decoder rows then have norm ``1 / s``.
- An encoder that does not subtract ``b_dec`` (SAELens ``apply_b_dec_to_input = False``,
  dictionary_learning's JumpReLU) is the same map with ``b_enc <- b_enc + b_dec W_enc``.
- SAELens TopK with ``rescale_acts_by_decoder_norm`` multiplies pre-activations by the decoder
  row norms ``n`` and divides codes by them before decoding: ``W_enc <- W_enc n``,
  ``b_enc <- b_enc n``, ``W_dec <- W_dec / n``.
- BatchTopK / Matryoshka infer with one global JumpReLU threshold: SAELens stores them as
  ``jumprelu`` with that threshold repeated per latent (as its own trainer does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from repscope._version import __version__

__all__ = ["FORMATS", "detect_format", "read_foreign", "write_saelens", "write_sparsify"]

FORMATS = ("repscope", "saelens", "sparsify", "dictionary_learning")
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
DL_WEIGHTS, DL_CONFIG = "ae.pt", "config.json"
SAELENS_FORMAT_VERSION = "6.0.0"  # the cfg.json layout written (SAELens >= 6 reads it as is)

#: architectures each library can hold, in repscope's names (for the error messages)
EXPORTABLE = {"saelens": ("relu", "topk", "batchtopk", "jumprelu", "matryoshka"), "sparsify": ("topk",)}
SAELENS_READABLE = ("standard", "topk", "jumprelu")
DL_READABLE = ("AutoEncoder", "AutoEncoderNew", "AutoEncoderTopK", "BatchTopKSAE",
               "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder")


class SAEFormatError(ValueError):
    """A directory in another library's layout that repscope cannot represent or read."""


def detect_format(path: Path, cfg: dict[str, Any] | None) -> str:
    """Which library wrote ``path`` (``cfg`` = its parsed cfg.json, if any)."""
    if (path / DL_WEIGHTS).is_file() and (path / DL_CONFIG).is_file():
        return "dictionary_learning"
    if cfg is not None and (path / SAELENS_WEIGHTS).is_file():
        return "saelens"
    if cfg is not None and (path / SPARSIFY_WEIGHTS).is_file():
        if "repscope_version" in cfg and "architecture" in cfg:
            return "repscope"
        if "d_in" in cfg and ("num_latents" in cfg or "expansion_factor" in cfg):
            return "sparsify"
        return "repscope"
    raise FileNotFoundError(
        f"{str(path)!r} is not a saved SAE: expected cfg.json + sae.safetensors (repscope, sparsify), "
        f"cfg.json + {SAELENS_WEIGHTS} (SAELens) or {DL_CONFIG} + {DL_WEIGHTS} (dictionary_learning) inside it."
    )


def _tensor(state: dict[str, torch.Tensor], key: str, path: Path, fmt: str) -> torch.Tensor:
    if key not in state:
        raise SAEFormatError(f"{str(path)!r} ({fmt}) holds no tensor {key!r}; found {sorted(state)}.")
    return state[key].detach().to("cpu")


def _fold_b_dec(W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """``b_enc + b_dec W_enc``: an encoder without ``b_dec`` subtraction in repscope's form."""
    return b_enc + (b_dec.double() @ W_enc.double()).to(b_enc.dtype)


def _repscope_state(W_enc, b_enc, W_dec, b_dec, **extra) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec,
             "input_scale": torch.ones((), dtype=torch.float64)}
    state.update(extra)
    return {k: v.contiguous() for k, v in state.items()}


# --- SAELens ------------------------------------------------------------------------------
def _read_saelens(path: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    arch = cfg.get("architecture")
    if arch is None:  # SAELens < 6 files: standard unless activation_fn says topk
        arch = "topk" if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk" else "standard"
    if arch not in SAELENS_READABLE:
        raise SAEFormatError(
            f"{str(path)!r}: SAELens architecture {arch!r} has no repscope equivalent; "
            f"supported: {list(SAELENS_READABLE)}.")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none", "expected_average_only_in"):
        raise SAEFormatError(
            f"{str(path)!r}: SAELens normalize_activations={norm!r} rescales each input at run "
            "time; repscope reads only 'none' and 'expected_average_only_in' (folded into the weights).")
    if "scaling_factor" in state and not torch.all(state["scaling_factor"] == 1):
        raise SAEFormatError(f"{str(path)!r}: a SAELens finetuning scaling factor is not supported.")
    fmt = "SAELens"
    W_enc, b_enc = _tensor(state, "W_enc", path, fmt), _tensor(state, "b_enc", path, fmt)
    W_dec, b_dec = _tensor(state, "W_dec", path, fmt), _tensor(state, "b_dec", path, fmt)
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = _fold_b_dec(W_enc, b_enc, b_dec)
    hyper: dict[str, Any] = {}
    extra: dict[str, torch.Tensor] = {}
    if arch == "topk":
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        hyper["k"] = int(k)
        if cfg.get("rescale_acts_by_decoder_norm", False):
            n = W_dec.norm(dim=1)  # (d_sae,)
            W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    elif arch == "jumprelu":
        if "threshold" in state:
            theta = state["threshold"]
        else:
            theta = torch.exp(_tensor(state, "log_threshold", path, fmt))
        extra["threshold"] = theta.detach().to("cpu", W_dec.dtype)
    metadata = cfg.get("metadata") or {}
    out = {"architecture": {"standard": "relu"}.get(arch, arch), "d_in": int(W_enc.shape[0]),
           "d_sae": int(W_enc.shape[1]), "dtype": str(W_dec.dtype).replace("torch.", ""),
           "hook_name": metadata.get("hook_name", cfg.get("hook_name")), **hyper}
    return out, _repscope_state(W_enc, b_enc, W_dec, b_dec, **extra)


def _folded(sae: Any) -> dict[str, torch.Tensor]:
    """W_enc, b_enc, W_dec, b_dec on the raw input scale (see the module docstring)."""
    s = sae.input_scale.double()
    dtype = sae.W_dec.dtype
    return {"W_enc": (sae.W_enc.detach().double() * s).to(dtype),
            "b_enc": sae.b_enc.detach().clone(),
            "W_dec": (sae.W_dec.detach().double() / s).to(dtype),
            "b_dec": (sae.b_dec.detach().double() / s).to(dtype)}


def _refuse(sae: Any, fmt: str) -> None:
    if sae.architecture not in EXPORTABLE[fmt]:
        raise SAEFormatError(
            f"save_sae cannot write a {sae.architecture!r} SAE in format {fmt!r}: that library has "
            f"no such architecture; it can hold {list(EXPORTABLE[fmt])}.")


def write_saelens(sae: Any, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(cfg.json dict, tensors of sae_weights.safetensors)`` for SAELens >= 6."""
    _refuse(sae, "saelens")
    tensors = _folded(sae)
    arch = {"relu": "standard", "topk": "topk"}.get(sae.architecture, "jumprelu")
    cfg: dict[str, Any] = {"architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae,
                           "dtype": str(sae.W_dec.dtype).replace("torch.", ""), "device": "cpu",
                           "apply_b_dec_to_input": True, "normalize_activations": "none",
                           "reshape_activations": "none"}
    if arch == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    if arch == "jumprelu":
        if sae.architecture == "jumprelu":
            theta = sae.threshold.detach().clamp_min(0)
        else:  # BatchTopK / Matryoshka: one global threshold theta
            theta = torch.full((sae.d_sae,), max(float(sae.threshold), 0.0))
        tensors["threshold"] = theta.to(sae.W_dec.dtype)
    cfg["metadata"] = {"sae_lens_version": SAELENS_FORMAT_VERSION, "hook_name": extra.get("hook_name"),
                       "model_name": extra.get("model_name"), "exported_by": f"repscope {__version__}",
                       "repscope_architecture": sae.architecture}
    return cfg, {k: v.contiguous() for k, v in tensors.items()}


# --- sparsify -----------------------------------------------------------------------------
def _read_sparsify(path: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{str(path)!r}: sparsify activation {cfg['activation']!r} has no "
                             "repscope equivalent; supported: ['topk'].")
    for flag in ("skip_connection", "transcode"):
        if cfg.get(flag):
            raise SAEFormatError(f"{str(path)!r}: a sparsify coder with {flag}=true is not an "
                                 "autoencoder repscope can hold.")
    fmt = "sparsify"
    enc = _tensor(state, "encoder.weight", path, fmt)  # (d_sae, d_in)
    out = {"architecture": "topk", "d_in": int(enc.shape[1]), "d_sae": int(enc.shape[0]),
           "dtype": str(enc.dtype).replace("torch.", ""), "k": int(cfg.get("k", 32)),
           "hook_name": path.name}
    return out, _repscope_state(enc.T, _tensor(state, "encoder.bias", path, fmt),
                                _tensor(state, "W_dec", path, fmt), _tensor(state, "b_dec", path, fmt))


def write_sparsify(sae: Any, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(cfg.json dict, tensors of sae.safetensors)`` for sparsify's ``SparseCoder``.
    ``normalize_decoder`` is false: after folding the input scale the rows have norm ``1 / s``
    (sparsify would renormalise them if it trained the coder further)."""
    _refuse(sae, "sparsify")
    t = _folded(sae)
    cfg = {"activation": "topk", "expansion_factor": max(1, sae.d_sae // sae.d_in),
           "normalize_decoder": False, "num_latents": sae.d_sae, "k": sae.k, "multi_topk": False,
           "skip_connection": False, "transcode": False, "d_in": sae.d_in}
    tensors = {"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"],
               "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    return cfg, tensors


# --- dictionary_learning ------------------------------------------------------------------
def _read_dictionary_learning(path: Path):  # type: ignore[no-untyped-def]
    try:
        config = json.loads((path / DL_CONFIG).read_text())
        trainer = config["trainer"]
        dict_class = trainer["dict_class"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SAEFormatError(f"{str(path / DL_CONFIG)!r} is not a dictionary_learning config "
                             f"(needs trainer.dict_class): {exc}") from None
    if dict_class not in DL_READABLE:
        raise SAEFormatError(f"{str(path)!r}: dictionary_learning class {dict_class!r} has no "
                             f"repscope equivalent; supported: {list(DL_READABLE)}.")
    try:  # weights_only: a plain state dict, never arbitrary pickled objects
        state = torch.load(path / DL_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise SAEFormatError(f"Cannot read {str(path / DL_WEIGHTS)!r}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    fmt = "dictionary_learning"
    hyper: dict[str, Any] = {}
    extra: dict[str, torch.Tensor] = {}
    if dict_class in ("AutoEncoder", "AutoEncoderNew", "AutoEncoderTopK", "BatchTopKSAE"):
        W_enc = _tensor(state, "encoder.weight", path, fmt).T  # (d_in, d_sae)
        b_enc = _tensor(state, "encoder.bias", path, fmt)
        W_dec = _tensor(state, "decoder.weight", path, fmt).T  # (d_sae, d_in)
        if dict_class == "AutoEncoder":
            b_dec = _tensor(state, "bias", path, fmt)
        elif dict_class == "AutoEncoderNew":  # encoder(x), decoder with its own bias
            b_dec = _tensor(state, "decoder.bias", path, fmt)
            b_enc = _fold_b_dec(W_enc, b_enc, b_dec)
        else:
            b_dec = _tensor(state, "b_dec", path, fmt)
    else:
        W_enc, b_enc = _tensor(state, "W_enc", path, fmt), _tensor(state, "b_enc", path, fmt)
        W_dec, b_dec = _tensor(state, "W_dec", path, fmt), _tensor(state, "b_dec", path, fmt)
    arch = {"AutoEncoder": "relu", "AutoEncoderNew": "relu", "AutoEncoderTopK": "topk",
            "BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "matryoshka",
            "JumpReluAutoEncoder": "jumprelu"}[dict_class]
    if arch in ("topk", "batchtopk", "matryoshka"):
        hyper["k"] = int(trainer.get("k", int(state.get("k", torch.tensor(32)))))
    if arch in ("batchtopk", "matryoshka"):
        extra["threshold"] = _tensor(state, "threshold", path, fmt).double().reshape(())
    if arch == "matryoshka":
        hyper["widths"] = torch.cumsum(_tensor(state, "group_sizes", path, fmt), 0).tolist()
    if arch == "jumprelu":  # encode(x) = JumpReLU(x W_enc + b_enc): no b_dec subtraction
        b_enc = _fold_b_dec(W_enc, b_enc, b_dec)
        extra["threshold"] = _tensor(state, "threshold", path, fmt).to(W_dec.dtype)
    out = {"architecture": arch, "d_in": int(W_enc.shape[0]), "d_sae": int(W_enc.shape[1]),
           "dtype": str(W_dec.dtype).replace("torch.", ""),
           "hook_name": trainer.get("submodule_name") or trainer.get("layer"), **hyper}
    return out, _repscope_state(W_enc, b_enc, W_dec, b_dec, **extra)


def read_foreign(path: Path, fmt: str, cfg: dict[str, Any] | None,
                 state: dict[str, torch.Tensor] | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(cfg, tensors)`` in repscope's terms for a directory written by another library."""
    if fmt == "dictionary_learning":
        return _read_dictionary_learning(path)
    assert cfg is not None and state is not None
    if fmt == "saelens":
        return _read_saelens(path, cfg, state)
    return _read_sparsify(path, cfg, state)
