"""train.replay: a fixed share of every optimizer step comes from general data, in an order fixed by the data
position (so a resumed run replays exactly what an uninterrupted one would)."""

from __future__ import annotations

import itertools

import pytest

from tuneforge.train.batches import plan_steps, replay_rows_per_step, replay_step_groups
from tuneforge.train.settings import LoopSettings


def settings(**changes) -> LoopSettings:
    values = dict(
        learning_rate=1e-3, epochs=2, max_steps=-1, batch_size=2, grad_accum=2, max_grad_norm=1.0,
        scheduler="constant", warmup_ratio=0.0, weight_decay=0.0, seed=3, eval_steps=None, logging_steps=1,
        packing=False, pad_id=0, replay_share=0.25,
    )  # fmt: skip
    return LoopSettings(**{**values, **changes})


MAIN = [[i] for i in range(9)]
REPLAY = [[100 + i] for i in range(5)]


def test_every_step_holds_its_share_of_replay_rows_and_each_main_row_once_per_epoch():
    config = settings()
    assert replay_rows_per_step(config) == 1  # 25% of 4 rows
    per_epoch, total = plan_steps(len(MAIN), config)
    assert (per_epoch, total) == (3, 6)  # 9 main rows, 3 per step
    steps = list(itertools.islice(replay_step_groups(MAIN, REPLAY, config), total))
    for epoch in (0, 1):
        rows = [row for e, _, group in steps if e == epoch for micro in group for row in micro]
        assert sorted(r for r in rows if r[0] < 100) == MAIN
        assert sum(r[0] >= 100 for r in rows) == per_epoch
    for _, _, group in steps:
        rows = [row for micro in group for row in micro]
        assert len(group) <= 2 and sum(r[0] >= 100 for r in rows) == 1
    replayed = [row for _, _, group in steps for micro in group for row in micro if row[0] >= 100]
    assert len(set(map(tuple, replayed[:5]))) >= 3  # the replay rows rotate instead of repeating one


def test_a_data_position_fixes_everything_that_follows():
    config = settings()
    uninterrupted = list(itertools.islice(replay_step_groups(MAIN, REPLAY, config), 6))
    resumed = list(itertools.islice(replay_step_groups(MAIN, REPLAY, config, epoch=1, index=1), 2))
    assert resumed == uninterrupted[4:6]


@pytest.mark.parametrize(("share", "rows"), [(0.01, 1), (0.5, 2), (0.99, 3)])
def test_the_share_is_at_least_one_row_and_never_all(share: float, rows: int):
    assert replay_rows_per_step(settings(replay_share=share)) == rows
    assert replay_rows_per_step(settings(replay_share=0.0)) == 0
