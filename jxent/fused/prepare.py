"""Preparing a fused objective from a public function's arguments: checks, configuration and row context."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

from jxent import _checks
from jxent._options import CrossEntropyOptions
from jxent.fused.config import check_head, check_linear_inputs, make_config, per_class, row_weights
from jxent.fused.cross_entropy import CrossEntropy
from jxent.fused.group import LOCAL, VocabGroup
from jxent.fused.kernel import Problem
from jxent.fused.objective import Head, Labels, Objective

__all__ = ["is_scalar_loss", "prepare", "prepare_arguments", "prepare_pair"]


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
    scalar: bool = True,
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
        scalar=scalar,
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
        scalar=is_scalar_loss(arguments),
    )


def is_scalar_loss(arguments: Mapping[str, Any]) -> bool:
    """Whether a public function's arguments ask for one reduced loss and nothing per token."""
    return arguments.get("reduction", "none") != "none" and not arguments.get("return_lse", False)


def prepare_pair(arguments: Mapping[str, Any], objective: Objective, group: VocabGroup = LOCAL) -> Problem:
    """A student head ``(hidden, weight, bias)`` and a teacher head ``(teacher_hidden, teacher_weight,
    teacher_bias)`` over the same vocabulary, from a public function's ``locals()``: checks, configuration and
    row weights (``where``)."""
    layout = arguments["weight_layout"]
    hidden, weight = check_head(arguments["hidden"], arguments["weight"], layout)
    t_hidden, t_weight = check_head(
        arguments["teacher_hidden"], arguments["teacher_weight"], layout, ("teacher_hidden", "teacher_weight")
    )
    vocab_axis = 1 if layout == "dv" else 0
    vocab = weight.shape[vocab_axis]
    if t_weight.shape[vocab_axis] != vocab:
        raise ValueError(
            f"`weight` and `teacher_weight` must have the same vocabulary; got V = {vocab} and "
            f"V = {t_weight.shape[vocab_axis]}."
        )
    batch_shape = tuple(hidden.shape[:-1])
    if tuple(t_hidden.shape[:-1]) != batch_shape:
        raise ValueError(
            f"`teacher_hidden` must have the batch shape of `hidden`, {batch_shape} (the shape without D); got "
            f"shape {tuple(t_hidden.shape)}."
        )
    bias = per_class(arguments["bias"], vocab, "bias")
    t_bias = per_class(arguments["teacher_bias"], vocab, "teacher_bias")
    options = CrossEntropyOptions.pick(arguments)
    cfg, arrays = make_config(
        num_tokens=math.prod(batch_shape),
        vocab=vocab,
        hidden_size=max(hidden.shape[-1], t_hidden.shape[-1]),
        dtypes=(hidden.dtype, weight.dtype, t_hidden.dtype, t_weight.dtype),
        weight_dtype=jax.numpy.promote_types(weight.dtype, t_weight.dtype),
        has_class_weight=False,
        options=options,
        chunk_size=arguments["chunk_size"],
        token_chunk_size=arguments["token_chunk_size"],
        schedule=arguments["schedule"],
        group=group,
        vocab_axis=vocab_axis,
        num_heads=2,
        scalar=is_scalar_loss(arguments),
    )
    heads = (
        Head(hidden.reshape(-1, hidden.shape[-1]), weight, bias),
        Head(t_hidden.reshape(-1, t_hidden.shape[-1]), t_weight, t_bias),
    )
    rw = row_weights(None, arguments.get("where"), batch_shape, cfg.acc_dtype)
    return Problem(cfg, objective, arrays, heads, (), None, rw, batch_shape)
