"""algorithm='auto': table lookup, user tables, malformed tables, and rules built by `tune`."""

from __future__ import annotations

import json

import pytest
from mpicoll.bench.harness import Record
from mpicoll.bench.tune import rules_from

import mpicoll
from mpicoll.collectives import auto
from mpicoll.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    auto.reset()
    yield
    auto.reset()


def write(tmp_path, table):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    return str(path)


def test_bundled_table_is_valid_and_covers_every_collective():
    table = json.loads(auto.bundled_table_text())
    auto.check_table(table, "bundled")
    for collective in ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "alltoall"):
        assert auto.choose(collective, 1 << 30, 7) in mpicoll.algorithm_names(collective)


def test_choose_by_size_and_rank_count(tmp_path):
    table = {"format": 1, "allreduce": {"2": [[1000, "native"], [None, "ring"]],
                                        "default": [[10, "tree"], [None, "rabenseifner"]]}}
    with mpicoll.config.override(auto_table=write(tmp_path, table)):
        assert auto.choose("allreduce", 1000, 2) == "native"
        assert auto.choose("allreduce", 1001, 2) == "ring"
        assert auto.choose("allreduce", 10, 3) == "tree"
        assert auto.choose("allreduce", 11, 3) == "rabenseifner"
        assert auto.choose("broadcast", 11, 3) == "native"  # collective missing from the table


def test_user_table_is_read_when_present(tmp_path):
    user = auto.user_table_path()
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"format": 1, "allreduce": {"default": [[None, "tree"]]}}))
    auto.reset()
    assert auto.table_path() == str(user)
    assert auto.choose("allreduce", 5, 4) == "tree"


@pytest.mark.parametrize(("table", "message"), [
    ({"format": 2}, "format"),
    ({"format": 1, "allreduce": {"2": []}}, "non-empty"),
    ({"format": 1, "allreduce": {"2": [[None, "bogus"]]}}, "bad rule"),
    ({"format": 1, "allreduce": {"2": [[100, "ring"]]}}, "limit null"),
])
def test_malformed_tables_raise(tmp_path, table, message):
    with mpicoll.config.override(auto_table=write(tmp_path, table)), pytest.raises(ConfigError, match=message):
        auto.choose("allreduce", 1, 2)


def test_unreadable_table(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with mpicoll.config.override(auto_table=str(path)), pytest.raises(ConfigError, match="rerun `mpicoll-bench tune`"):
        auto.choose("allreduce", 1, 2)


def record(size, algorithm, time_us):
    return Record("allreduce", algorithm, 2, size, size // 4, "float32", "sum", -1, time_us, 0, 0, 0, 1, "x")


def test_rules_from_measurements_merge_runs_of_winners():
    records = [record(4096, "native", 10), record(4096, "ring", 12),
               record(16384, "native", 20), record(16384, "ring", 30),
               record(65536, "native", 90), record(65536, "ring", 60),
               record(262144, "native", 300), record(262144, "ring", 200)]
    assert rules_from(records) == [[16384, "native"], [None, "ring"]]


def test_format_table_round_trips_with_one_line_per_rule_list():
    table = json.loads(auto.bundled_table_text())
    text = auto.format_table(table)
    assert json.loads(text) == table
    assert '  "2": [[1048576, "recursive_doubling"], [null, "ring"]]' in text
