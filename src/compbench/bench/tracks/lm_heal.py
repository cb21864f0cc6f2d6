"""Healing on the ``lm`` track (``--heal STEPS``): after compression, train only the compressed module's own
floating-point tensors to match the dense model's next-token distribution, with the LM frozen.

What is trained: every floating-point tensor of the module's ``state_dict`` (its stored form: codebooks, scales,
factors, anchor tables, decoder weights), as fp32 copies; integer tensors (codes, indices, assignments) stay
fixed, so the structure the budget counted does not change. Non-persistent buffers are derived, not stored (a
rotation recomputed from its seed, positional tables): training one would give the healed module state that
no byte count and no export holds, so they stay as they are. After the last step each tensor is written back
at its stored dtype (an fp16 codebook stays fp16), so the module's stored bytes are exactly those of the
unhealed module; the lifecycle counts them again after the fit.

The loss is KL(dense || healed) of the next-token distributions, averaged over the window's positions
(distillation from the frozen dense model on the same window). One step = one window of :data:`HEAL_CONTEXT`
positions of the calibration text (IMDB train reviews, :func:`compbench.bench.tracks.lm_calibration.
calibration_windows`), cycling through :data:`HEAL_WINDOWS` windows; Adam at :data:`HEAL_LR`, no schedule.
The recipe is fixed in advance (nothing is chosen on the test text); in the ``tied`` mode the head is the
healed table too, so the head's use is trained with it.

The module's forward must be differentiable in the trained tensors for healing to change it (a gather from a
codebook is; an argmax is not): the record lists every tensor, whether it received a gradient, and the
calibration KL before and after.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from compbench.bench.tracks.lm_calibration import calibration_windows
from compbench.models.causal_lm import decoder_body, log_probs, softcap

HEAL_CONTEXT = 256
HEAL_WINDOWS = 64
HEAL_LR = 1e-3


def trainable_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's stored floating-point tensors by name: parameters and persistent buffers, i.e. what its
    ``state_dict`` holds (shared tensors once); derived, non-persistent buffers are left out."""
    stored = set(module.state_dict(keep_vars=True))
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if name in stored and t.is_floating_point() and id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def heal(ctx: Any, subject: Any, module: nn.Module, steps: int, seed: int) -> dict[str, Any]:
    """Heal ``module`` in place for ``steps`` steps; returns the facts recorded in the cell."""
    st = subject.state
    lm, dense_table, mode = st["lm"], st["table"].to(ctx.device), st["mode"]
    body, cap, scale = decoder_body(lm.model), softcap(lm.model), lm.embed_scale
    windows = calibration_windows(lm, min(HEAL_WINDOWS, steps), HEAL_CONTEXT).to(ctx.device)
    originals = trainable_tensors(module)
    if not originals:
        return {"steps": 0, "note": "the module has no floating-point tensors to train"}
    params = {k: v.detach().float().clone().requires_grad_(True) for k, v in originals.items()}
    opt = torch.optim.Adam(list(params.values()), lr=HEAL_LR)
    all_ids = torch.arange(dense_table.shape[0], device=ctx.device)
    got_grad = dict.fromkeys(params, False)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    losses: list[float] = []
    module.train()
    for step in range(steps):
        w = windows[step % windows.shape[0]]
        with torch.no_grad():
            dense_h = body(inputs_embeds=dense_table[w].unsqueeze(0) * scale).last_hidden_state[0, :-1]
            target = log_probs(dense_h, dense_table, cap)
        rows = functional_call(module, params, (w,), strict=False)
        head = functional_call(module, params, (all_ids,), strict=False) if mode == "tied" else dense_table
        h = body(inputs_embeds=rows.float().unsqueeze(0) * scale).last_hidden_state[0, :-1]
        lp = log_probs(h, head.float(), cap)
        loss = (target.exp() * (target - lp)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for k, p in params.items():
            if p.grad is not None and bool(torch.any(p.grad != 0)):
                got_grad[k] = True
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    with torch.no_grad():
        for k, t in originals.items():
            t.copy_(params[k].detach().to(t.dtype))
    n_avg = max(1, min(10, len(losses)))
    return {"steps": steps, "context": HEAL_CONTEXT, "windows": int(windows.shape[0]), "lr": HEAL_LR,
            "optimizer": "Adam", "tokens": steps * (HEAL_CONTEXT - 1), "source": "imdb/train (calibration text)",
            "loss": "KL(dense || healed), nats/token", "kl_first": float(sum(losses[:n_avg]) / n_avg),
            "kl_last": float(sum(losses[-n_avg:]) / n_avg), "time_s": time.perf_counter() - t0,
            "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                               "trained": got_grad[name]} for name, t in originals.items()}}


__all__ = ["HEAL_CONTEXT", "HEAL_LR", "HEAL_WINDOWS", "heal", "trainable_tensors"]
