"""Training: the run orchestration, its loss, metrics, plots and run-directory artifacts."""

__all__: list[str] = []
