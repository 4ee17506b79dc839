"""Train any ``nn.Module`` in a random subspace of its parameters, without changing the module.

:class:`Subspace` flattens the selected parameters of a module into ``theta_0`` (a copy, taken at
construction) and evaluates the module with ``theta = theta_0 + P z`` through
:func:`torch.func.functional_call`; ``z`` (``d`` numbers, zero at the start) is the only trainable
tensor (Li, Farkhoor, Liu, Yosinski, ICLR 2018, Sec. 2: "direct" training would update
``theta`` itself). The module keeps its own parameters and is never modified; parameters left out
of the subspace (``include`` / ``exclude``) keep their values, and buffers (batch-norm statistics)
are the module's own.

With ``said=True`` the map is the structure-aware one of Aghajanyan, Zettlemoyer and Gupta (ACL
2021, "Intrinsic dimensionality explains the effectiveness of language model fine-tuning", Eq. 3):
``theta_i = theta_0,i + lambda_i (P z)_i`` for each group ``i`` of parameters (one per parameter
tensor, as in their released code, or one per module), with the ``m`` scales ``lambda`` (one at
the start) trained with ``z``. As in the paper the ``m`` scales count towards ``d``: ``z`` has
``d - m`` entries and the trainable total is ``d``.

Example::

    sub = Subspace(model, d=300, projection="fastfood", seed=0)
    opt = torch.optim.Adam(sub.parameters(), lr=1e-2)   # z (and the SAID scales) only
    loss = F.cross_entropy(sub(x), y); loss.backward(); opt.step()
    theta = sub.full_parameters()                       # name -> tensor, for export
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from repscope.landscape.projections import MAX_DENSE, PROJECTIONS, make_projection

__all__ = ["Subspace", "select_parameters"]


def select_parameters(module: nn.Module, include: Sequence[str] = (),
                      exclude: Sequence[str] = ()) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``module`` matched by any ``include`` glob (all when
    empty) and by no ``exclude`` glob, in ``named_parameters`` order (shared tensors once)."""
    out = []
    for name, p in module.named_parameters():
        if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
            continue
        if any(fnmatch.fnmatchcase(name, g) for g in exclude):
            continue
        out.append((name, p))
    return out


class Subspace(nn.Module):
    """``module`` evaluated at ``theta_0 + P z`` (or SAID's per-group scaled version); see the
    module docstring. ``parameters()`` yields only ``z`` (and the SAID scales).

    Parameters: ``d`` the trainable dimension (including the ``m`` SAID scales); ``projection``
    one of ``'fastfood'`` (default), ``'sparse'``, ``'dense'``; ``seed`` draws ``P``; ``said`` and
    ``said_groups`` (``'tensor'`` or ``'module'``) the structure-aware variant; ``include`` /
    ``exclude`` parameter-name globs; ``block`` Fastfood's block size; ``max_dense`` the largest
    dense ``D x d``. Build it on the module's device and dtype (``theta_0`` and ``P`` follow the
    module's first selected parameter).
    """

    def __init__(self, module: nn.Module, d: int, *, projection: str = "fastfood", seed: int = 0,
                 said: bool = False, said_groups: Literal["tensor", "module"] = "tensor",
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 block: int | None = None, max_dense: int = MAX_DENSE):
        from repscope._validate import check_choice, check_int, param_error

        fn = "Subspace"
        super().__init__()
        if not isinstance(module, nn.Module):
            raise param_error(fn, "module", "a torch.nn.Module", type(module).__name__)
        projection = check_choice(projection, "projection", fn, PROJECTIONS)
        said_groups = check_choice(said_groups, "said_groups", fn, ("tensor", "module"))
        selected = select_parameters(module, include, exclude)
        if not selected:
            raise param_error(fn, "include", "globs matching at least one parameter of the "
                              f"module (exclude={list(exclude)!r})", list(include))
        self.names = [n for n, _ in selected]
        self.shapes = [tuple(p.shape) for _, p in selected]
        self.sizes = [p.numel() for _, p in selected]
        self.D = sum(self.sizes)
        first = selected[0][1]
        dtype, device = first.dtype, first.device
        groups = self._groups(said_groups) if said else []
        self.n_scales = len(set(groups))
        d = check_int(d, "d", fn, low=self.n_scales + 1, high=self.D + self.n_scales,
                      high_inclusive=True)
        self.d, self.said, self.projection_kind, self.seed = d, bool(said), projection, seed
        self._module = (module,)  # held, not registered: its parameters are not ours to train
        with torch.no_grad():
            theta0 = torch.cat([p.detach().reshape(-1).to(dtype) for _, p in selected])  # (D,)
        self.register_buffer("theta0", theta0)
        self.z = nn.Parameter(torch.zeros(d - self.n_scales, dtype=dtype, device=device))
        if said:
            self.scales = nn.Parameter(torch.ones(self.n_scales, dtype=dtype, device=device))
            self.register_buffer("group", torch.tensor(groups, dtype=torch.long, device=device))
        else:
            self.scales = None
        self.projection = make_projection(projection, self.D, d - self.n_scales, seed=seed,
                                          sizes=self.sizes, block=block, dtype=dtype,
                                          device=device, max_dense=max_dense)

    def _groups(self, how: str) -> list[int]:
        """The SAID group of each selected tensor: its own, or its parent module's."""
        if how == "tensor":
            return list(range(len(self.names)))
        owners: dict[str, int] = {}
        return [owners.setdefault(n.rpartition(".")[0], len(owners)) for n in self.names]

    @property
    def module(self) -> nn.Module:
        """The wrapped module (unchanged)."""
        return self._module[0]

    def extra_repr(self) -> str:
        return (f"D={self.D}, d={self.d}, projection={self.projection_kind!r}, "
                f"said={self.said} ({self.n_scales} scales), tensors={len(self.names)}")

    def full_parameters(self) -> dict[str, torch.Tensor]:
        """The current parameters ``theta`` of the selected tensors, by name (differentiable in
        ``z`` and the scales)."""
        if self.scales is None:
            flat = self.projection(self.z, self.theta0)  # (D,) = theta_0 + P z
            pieces = flat.split(self.sizes)
        else:
            delta = self.projection(self.z)  # (D,)
            lam = self.scales[self.group]  # one scale per tensor
            pieces = [torch.addcmul(t0, lam[i], dt) for i, (t0, dt) in  # t0 + lam_i dt
                      enumerate(zip(self.theta0.split(self.sizes), delta.split(self.sizes),
                                    strict=True))]
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward at ``theta`` (arguments passed through)."""
        return torch.func.functional_call(self.module, self.full_parameters(), args, kwargs)

    def call(self, params: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward at given ``params`` (e.g. a detached
        :meth:`full_parameters` reused for many evaluation batches)."""
        return torch.func.functional_call(self.module, params, args, kwargs)
