"""`train.report_to`: send the metrics records to TensorBoard, Weights & Biases or MLflow as well.

Each tracker's package is optional; asking for one that is not installed is a user error naming the pip package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from tuneforge.errors import UserError

__all__ = ["REPORTERS", "Reporter", "check_reporters", "close_reporters", "open_reporters"]

# tracker → (module to import, pip package)
_REQUIRES = {
    "tensorboard": ("torch.utils.tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
REPORTERS = tuple(_REQUIRES)


class Reporter(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a record, `step` excluded."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _import(name: str) -> Any:
    module, package = _REQUIRES[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"train.report_to lists {name}, but the {package!r} package is not installed: pip install {package} "
            f"(or remove {name} from train.report_to)"
        ) from None


def check_reporters(names: list[str]) -> None:
    """Fail early, before any training, when a tracker's package is missing."""
    for name in names:
        if name not in _REQUIRES:
            raise UserError(f"train.report_to: unknown tracker {name!r}; choose from {', '.join(_REQUIRES)}")
        _import(name)


class _TensorBoard:
    def __init__(self, run_dir: Path) -> None:
        self.writer = _import("tensorboard").SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        for key, value in _numbers(record).items():
            self.writer.add_scalar(f"train/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.wandb = _import("wandb")
        self.run = self.wandb.init(project="tuneforge", name=run_dir.name, dir=str(run_dir), config=config)

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(_numbers(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.mlflow = _import("mlflow")
        self.mlflow.start_run(run_name=run_dir.name)
        self.mlflow.log_dict(config, "tuneforge_config.json")

    def log(self, record: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_numbers(record), step=record["step"])

    def close(self) -> None:
        self.mlflow.end_run()


def open_reporters(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[Reporter]:
    """One reporter per name in `train.report_to`; `config` is the resolved config as plain data."""
    check_reporters(names)
    reporters: list[Reporter] = []
    for name in names:
        if name == "tensorboard":
            reporters.append(_TensorBoard(run_dir))
        elif name == "wandb":
            reporters.append(_Wandb(run_dir, config))
        else:
            reporters.append(_MLflow(run_dir, config))
    return reporters


def close_reporters(reporters: list[Reporter]) -> None:
    """Flush and close every reporter."""
    for reporter in reporters:
        reporter.close()
