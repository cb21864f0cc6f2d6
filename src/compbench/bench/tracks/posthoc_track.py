"""The posthoc track's hooks: compress the encoder's token table, evaluate the frozen encoder with it.

For speed, quality is evaluated with the *materialised* compressed table plugged
into the encoder (identical outputs, one fast gather); lookup throughput is
measured by the lifecycle on the compressed module itself against the dense table
in the same run. Retention = score / dense score on the same task, from the dense
reference record (a planned dependency, see :mod:`compbench.bench.cell.references`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compbench.bench.cell.context import data_sha256
from compbench.bench.cell.lifecycle import Outcome, Subject
from compbench.models.encoder import SentenceEncoder
from compbench.tasks.posthoc import PosthocContext


def get_encoder(ctx: Any) -> Any:
    """The sentence encoder for this cell (cached in ``ctx.cache`` across cells of one process)."""
    key = f"encoder:{ctx.config.model}:{ctx.device}"
    if key not in ctx.cache:
        ctx.cache[key] = SentenceEncoder(ctx.config.model, device=str(ctx.device))
    return ctx.cache[key]


class PosthocHooks:
    """The posthoc track's part of the lifecycle (:mod:`compbench.bench.cell.lifecycle`)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def load(self, ctx: Any) -> Subject:
        """The encoder's token table (the encoder is cached across cells of one process)."""
        encoder = get_encoder(ctx)
        table = encoder.token_table
        v, d = table.shape
        return Subject(num_embeddings=v, dim=d, model=encoder.info.to_dict(), data_sha256=data_sha256(ctx.task),
                       backbone_params=encoder.info.total_params - v * d, revision=encoder.info.revision,
                       state={"encoder": encoder, "table": table})

    def produce(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> nn.Module:
        """Compress the token table."""
        return ctx.method.compress(subject.state["table"].to(ctx.device), config, seed=seed).eval()

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        """The materialised table plugged into the frozen encoder, evaluated by the task."""
        with torch.inference_mode():
            table = module.materialize().float().to(ctx.device)  # type: ignore[operator]
        pctx = PosthocContext(subject.state["encoder"], table, subject.state["table"].to(ctx.device), seed=seed,
                              batch_size=ctx.config.batch_size)
        progress = getattr(ctx, "progress", None)
        if progress is None:
            scores = ctx.task.evaluate(pctx)
        else:  # a bar over the sentences encoded (the display only; the scores are the same)
            total = getattr(ctx.task, "sentences", lambda: None)()
            with subject.state["encoder"].counting(
                    lambda n: progress("tick", "evaluate: encoding sentences", 0.0, done=n, total=total)):
                scores = ctx.task.evaluate(pctx)
        return Outcome(scores=scores, items=getattr(pctx, "items", None))

    def dense_module(self, ctx: Any, subject: Subject) -> nn.Module:
        """The dense table as an ``nn.Embedding`` (the lookup baseline)."""
        return nn.Embedding.from_pretrained(subject.state["table"], freeze=True)
