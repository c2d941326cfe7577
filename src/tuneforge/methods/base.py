"""The method registry: everything a training method declares about itself, in one place.

A method owns its whole story: the typed parameters of its `method:` config section, the kinds of samples it
trains on, the checks it makes on a config before anything loads, which extra models it needs, how a micro-batch
is collated, its loss, the normaliser that makes gradient accumulation exact, and the metrics it reports.
`tuneforge.train` asks the registered `Method`; it holds no per-method knowledge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch

from tuneforge.config.schema import DataSection, MethodParams
from tuneforge.config.variants import METHOD_PARAMS
from tuneforge.data.render import RenderedSample
from tuneforge.errors import UserError
from tuneforge.registry import Registry

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig
    from tuneforge.data.quality import DataReport

__all__ = [
    "METHODS",
    "SAMPLE_KINDS",
    "Batch",
    "LossSums",
    "Metric",
    "Method",
    "MethodModels",
    "Objective",
    "register_method",
]

Batch = dict[str, torch.Tensor]
# what a rendered sample can be (see tuneforge.data.render.RenderedSample.kind)
SAMPLE_KINDS: dict[str, str] = {
    "chat": "conversations",
    "text": "raw text",
    "preference": "preference pairs (chosen/rejected)",
    "kto": "KTO-labelled conversations",
    "classify": "labelled texts (a text and its class)",
}
ExtraModel = Literal["reference", "reward", "teacher"]


Metric = float | tuple[float, float]


class LossSums(NamedTuple):
    """A micro-batch's loss and metrics, summed (not averaged) over its units (tokens, pairs, ...).

    The loop divides the loss and every plain-float metric by the unit count of the whole optimizer step (see
    `Method.count`). A metric given as (sum, weight) is averaged by its own weights instead, e.g. the mean reward
    of the desirable samples only: (sum of their rewards, how many there were).
    """

    loss: torch.Tensor
    metrics: dict[str, Metric]


@dataclass
class MethodModels:
    """What a method's loss may use besides the model being trained: the tokenizer (to decode what a model
    generates, e.g. for rule rewards), the frozen extra models it asked for (None where it needs none), and
    `state`: numbers the method carries from step to step (e.g. an adaptive KL coefficient), saved in checkpoints
    so that a resumed run continues with them."""

    tokenizer: Any = None
    reference: Any = None
    reward: Any = None
    teacher: Any = None
    state: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A training method.

    Attributes:
        params: the pydantic model of its `method:` section (registered for config validation).
        data_kinds: the sample kinds it trains on (keys of SAMPLE_KINDS); other data is refused before training.
        collate: micro-batch of samples, packing, pad id → model inputs.
        loss: (model, batch, params, extra models) → LossSums.
        count: batch → its units (supervised tokens, pairs, ...): the normaliser of loss and metrics.
        metrics: names of the metrics its loss reports besides the loss (logged per step and per validation).
        packing: whether rows may be best-fit packs of several samples (its collate handles both layouts).
        needs: (config) → the extra models it needs loaded, by role (reference, reward, teacher), each with its
            source: a model tuneforge loads, or None for a frozen copy of the base model. None: no extra models.
        check: (config) → None; raises UserError for settings the method cannot work with (runs before loading).
        prepare: (model with its adapter, params) → None; adds what the method trains besides the adapter (e.g. a
            reward model's scalar head), before the optimizer is built. None: nothing.
        save: (trained model, the run's model folder) → None; writes what `prepare` added, after the model is
            saved. None: nothing.
        prepare_data: (train and validation samples, the base model before any adapter, params) → None; work done
            once on the data with the untrained model (e.g. precomputed reference log-probabilities). None: none.
        data_format: the row format its data is read as when data.format is auto (e.g. classification rows).
            None: each row's format is detected from its keys.
        select_data: (config, train samples, validation samples, data report) → (train, validation): keeps the
            samples it can learn from and drops the others into the report with their location (e.g. a class not
            in method.labels); may complete its params from the data. Runs before `prepare`. None: keeps them all.
        final_eval: (trained model, validation samples, params, the run's eval folder) → lines to print: its own
            evaluation at the end of the run, written under eval/. None: none.
        export: (the run's model folder, a merged Hugging Face folder exported from it) → None; carries what
            `save` wrote into the export (e.g. a classification head and its labels). None: nothing.
        trains_on_distribution: whether its collate and loss train samples that carry the base model's
            next-token distribution toward it (data.replay.target: distribution).
        shardable: whether it can train sharded (train.fsdp): every process runs the same forward passes (a
            method that generates text while training does not).
    """

    params: type[MethodParams]
    data_kinds: frozenset[str]
    collate: Callable[[list[RenderedSample], bool, int], Batch]
    loss: Callable[[Any, Batch, MethodParams, MethodModels], LossSums]
    count: Callable[[Batch], int]
    metrics: tuple[str, ...] = ()
    packing: bool = True
    needs: Callable[[RunConfig], dict[ExtraModel, str | None]] | None = None
    check: Callable[[RunConfig], None] | None = None
    prepare: Callable[[Any, MethodParams], None] | None = None
    save: Callable[[Any, Path], None] | None = None
    prepare_data: Callable[[list[RenderedSample], Any, MethodParams], None] | None = None
    data_format: str | None = None
    select_data: (
        Callable[
            [RunConfig, list[RenderedSample], list[RenderedSample], DataReport],
            tuple[list[RenderedSample], list[RenderedSample]],
        ]
        | None
    ) = None
    final_eval: Callable[[Any, list[RenderedSample], MethodParams, Path], list[str]] | None = None
    export: Callable[[Path, Path], None] | None = None
    trains_on_distribution: bool = False
    shardable: bool = True

    def check_config(self, config: RunConfig) -> None:
        """Refuse impossible settings before anything loads."""
        if self.check is not None:
            self.check(config)
        replay = config.data.replay
        if replay is not None and replay.target == "distribution" and not self.trains_on_distribution:
            able = ", ".join(name for name in METHODS.names() if METHODS.get(name).trains_on_distribution)
            raise UserError(
                f"data.replay.target: distribution needs a method that trains toward a distribution ({able}); "
                f"method {config.method.name!r} does not: set data.replay.target to answer"
            )

    def data_section(self, data: DataSection) -> DataSection:
        """`data` as this method reads it: data.format auto means its own row format, when it declares one."""
        if self.data_format is None or data.format != "auto":
            return data
        return data.model_copy(update={"format": self.data_format})

    def check_data(self, name: str, kinds: set[str]) -> None:
        """Refuse sample kinds this method cannot learn from, naming what it needs."""
        wrong = kinds - self.data_kinds
        if wrong:
            wants = " and ".join(SAMPLE_KINDS[k] for k in sorted(self.data_kinds))
            has = ", ".join(SAMPLE_KINDS.get(k, k) for k in sorted(wrong))
            raise UserError(
                f"method {name!r} trains on {wants}, but the data holds {has}; use data of that kind, "
                "or a method built for this data"
            )

    def bind(self, params: MethodParams | None = None, models: MethodModels | None = None) -> Objective:
        """This method with its parameters (default: the defaults) and extra models: what the loop runs."""
        return Objective(self, params if params is not None else self.params(), models or MethodModels())


@dataclass
class Objective:
    """A method bound to its parameters and extra models; the training loop calls only this."""

    method: Method
    params: MethodParams
    models: MethodModels = field(default_factory=MethodModels)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.method.metrics

    def collate(self, samples: list[RenderedSample], packing: bool, pad_id: int) -> Batch:
        return self.method.collate(samples, packing, pad_id)

    def loss(self, model: Any, batch: Batch) -> LossSums:
        return self.method.loss(model, batch, self.params, self.models)

    def count(self, batch: Batch) -> int:
        return self.method.count(batch)


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, method: Method) -> Method:
    """Register `method` as `name`, and its parameter class for the `method:` config section."""
    declared = method.params.model_fields["name"].default
    if declared != name:
        raise ValueError(f"method {name!r}: its params class {method.params.__name__} declares name {declared!r}")
    unknown = set(method.data_kinds) - set(SAMPLE_KINDS)
    if unknown:
        raise ValueError(f"method {name!r}: unknown data kinds {sorted(unknown)}")
    METHOD_PARAMS.register(name)(method.params)
    return METHODS.register(name)(method)
