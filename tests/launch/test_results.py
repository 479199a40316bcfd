"""The results writer (no Ray): what a stopped and resumed run leaves in metrics.parquet."""

from __future__ import annotations

import pyarrow.parquet as pq

from dfml.launch.results import PARTS, ResultsWriter, read_metrics
from dfml.records import RoundRecord

TEST_SIZES = {0: 5, 1: 7}


def record(rnd: int, offset: float = 0.0) -> RoundRecord:
    metrics = {
        c: {"accuracy": rnd / 10 + c / 100 + offset, "train_loss": 1.0 / (rnd + 1)} for c in (0, 1)
    }
    return RoundRecord(rnd, metrics, bytes_sent=10 * rnd, seconds=0.1, trained=frozenset({0, 1}))


def rows(table) -> list[tuple]:
    cols = ["round", "client", "accuracy", "train_loss", "test_samples"]
    return sorted(zip(*(table.column(c).to_pylist() for c in cols), strict=True))


def test_a_resume_after_ctrl_c_keeps_every_earlier_round(tmp_path):
    """Ctrl-C merges the parts into metrics.parquet; the resumed run's merge must not
    replace the rounds before its checkpoint with nothing."""
    first = ResultsWriter(tmp_path, TEST_SIZES)
    history = [record(r) for r in range(4)]
    for rec in history:
        first.on_round_end(rec)
    first.finalize()  # the interrupted run ends: parts merged, folder removed
    interrupted = rows(pq.read_table(tmp_path / "metrics.parquet"))
    assert not (tmp_path / PARTS).exists()

    resumed = ResultsWriter(tmp_path, TEST_SIZES)
    resumed.on_resume(history[:2])  # the checkpoint was taken after round 1
    for rnd in (2, 3, 4):
        resumed.on_round_end(record(rnd, offset=0.5))  # rounds 2, 3 redone, 4 new
    resumed.finalize()
    final = rows(pq.read_table(tmp_path / "metrics.parquet"))
    assert [r for r in final if r[0] < 2] == [r for r in interrupted if r[0] < 2]
    assert [r[:2] for r in final] == [(r, c) for r in range(5) for c in (0, 1)]
    assert all(abs(r[2] - (r[0] / 10 + r[1] / 100 + 0.5)) < 1e-12 for r in final if r[0] >= 2)


def test_a_resume_after_a_kill_drops_the_rounds_it_redoes(tmp_path):
    first = ResultsWriter(tmp_path, TEST_SIZES)
    history = [record(r) for r in range(3)]
    for rec in history:
        first.on_round_end(rec)  # SIGKILL: no finalize, the parts stay
    resumed = ResultsWriter(tmp_path, TEST_SIZES)
    resumed.on_resume(history[:1])
    assert sorted(set(read_metrics(tmp_path).column("round").to_pylist())) == [0]
    resumed.on_round_end(record(1, offset=0.5))
    resumed.finalize()
    final = rows(pq.read_table(tmp_path / "metrics.parquet"))
    assert [r[0] for r in final] == [0, 0, 1, 1] and final[2][2] == 0.1 + 0.5
