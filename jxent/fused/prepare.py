"""Preparing a one-head fused objective with integer labels: argument checks, configuration and row context."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

from jxent import _checks
from jxent._options import CrossEntropyOptions
from jxent.fused.config import check_linear_inputs, make_config, per_class, row_weights
from jxent.fused.cross_entropy import CrossEntropy
from jxent.fused.group import LOCAL, VocabGroup
from jxent.fused.kernel import Problem
from jxent.fused.objective import Head, Labels, Objective

__all__ = ["prepare", "prepare_arguments"]


def prepare(
    hidden: Any,
    weight: Any,
    labels: Any,
    *,
    bias: Any,
    class_weight: Any,
    options: CrossEntropyOptions,
    chunk_size: int | None,
    token_chunk_size: int | None,
    schedule: str,
    weight_layout: str = "dv",
    token_weight: Any = None,
    where: Any = None,
    group: VocabGroup = LOCAL,
    objective: Objective | None = None,
) -> Problem:
    """Checks the arguments of a one-head objective with integer labels (:class:`CrossEntropy` unless
    ``objective`` is given) and fixes the trace-time configuration. With a sharded ``group``, ``weight``, ``bias``
    and ``class_weight`` are this device's slice of the vocabulary and ``labels`` are global."""
    hidden, weight, labels = check_linear_inputs(hidden, weight, labels, weight_layout)
    vocab_axis = 1 if weight_layout == "dv" else 0
    d, vocab = weight.shape[1 - vocab_axis], weight.shape[vocab_axis]
    bias = per_class(bias, vocab, "bias")
    cw = per_class(class_weight, vocab, "class_weight")
    batch_shape = tuple(labels.shape)
    cfg, arrays = make_config(
        num_tokens=math.prod(batch_shape),
        vocab=vocab,
        hidden_size=d,
        dtypes=(hidden.dtype, weight.dtype),
        weight_dtype=weight.dtype,
        has_class_weight=cw is not None,
        options=options,
        chunk_size=chunk_size,
        token_chunk_size=token_chunk_size,
        schedule=schedule,
        group=group,
        vocab_axis=vocab_axis,
    )
    cw = None if cw is None else jax.lax.stop_gradient(cw.astype(cfg.acc_dtype))
    y = _checks.labels_as_int32(labels.reshape(-1), cfg.global_vocab, options.ignore_index)
    ctx = Labels(y, group.local_labels(y, vocab))
    rw = row_weights(token_weight, where, batch_shape, cfg.acc_dtype)
    heads = (Head(hidden.reshape(-1, d), weight, bias),)
    return Problem(cfg, objective or CrossEntropy(), arrays, heads, ctx, cw, rw, batch_shape)


def prepare_arguments(
    arguments: Mapping[str, Any], group: VocabGroup = LOCAL, objective: Objective | None = None
) -> Problem:
    """:func:`prepare` from the arguments of a public fused function (its ``locals()``), with their options; those
    it lacks keep their defaults."""
    return prepare(
        arguments["hidden"],
        arguments["weight"],
        arguments["labels"],
        bias=arguments["bias"],
        class_weight=arguments.get("class_weight"),
        options=CrossEntropyOptions.pick(arguments),
        chunk_size=arguments["chunk_size"],
        token_chunk_size=arguments["token_chunk_size"],
        schedule=arguments["schedule"],
        weight_layout=arguments["weight_layout"],
        token_weight=arguments.get("token_weight"),
        where=arguments.get("where"),
        group=group,
        objective=objective,
    )
