"""The alpha-beta-gamma model that `tune` fits, on synthetic measurements with known costs."""

from __future__ import annotations

import pytest
from mpicoll.bench.model import Fit, coefficients, fit


def test_coefficients_follow_the_textbook_costs():
    assert coefficients("ring", 4) == (6, 1.5, 0.75)
    assert coefficients("recursive_doubling", 4) == (2.0, 2.0, 2.0)
    assert coefficients("recursive_doubling", 5) == (4.0, 4.0, 3.0)  # folded: 2 more messages of n
    assert coefficients("rabenseifner", 8) == (6.0, 1.75, 0.875)
    assert coefficients("tree", 2) == (2, 2.0, 1.0)
    assert coefficients("native", 4) is None
    assert coefficients("ring", 1) == (0.0, 0.0, 0.0)


def test_fit_recovers_known_costs():
    truth = Fit(alpha=20e-6, beta=1 / 5e9, gamma=1 / 8e9)
    points = [(algo, p, n, truth.predict(algo, p, n)) for algo in ("ring", "recursive_doubling", "rabenseifner",
                                                                    "tree")
              for p in (2, 3, 4) for n in (4096, 1 << 20, 1 << 26)]
    points.append(("native", 2, 4096, 1.0))  # not modelled: ignored
    got = fit(points)
    assert got.alpha == pytest.approx(truth.alpha, rel=1e-6)
    assert got.beta == pytest.approx(truth.beta, rel=1e-6)
    assert got.gamma == pytest.approx(truth.gamma, rel=1e-6)
    assert "20.0 us" in got.describe() and "5.00 GB/s" in got.describe()


def test_fit_needs_points_and_stays_non_negative():
    assert fit([("ring", 2, 100, 1e-5)]) is None
    # times that shrink with size would need a negative bandwidth cost: it is dropped instead
    got = fit([("ring", 2, n, 1e-3 - n * 1e-12) for n in (1e3, 1e5, 1e7, 1e8)])
    assert got is not None and got.alpha >= 0 and got.beta >= 0 and got.gamma >= 0


def test_model_report_takes_the_median_over_launches(tmp_path, capsys):
    """``model-report --median``: files of one configuration from several launches make one row per
    path and size, the median prediction against the median measurement, each launch's error beside."""
    import argparse
    import json

    from mpicoll.bench import costmodel

    model = {"links": {"inter": {"alpha": 1e-5, "beta": 4e-8}}, "gamma": 2e-10, "flops": 1e10}
    measured = {"a": 0.100, "b": 0.200, "c": 0.120}  # one noisy launch in three
    files = []
    for launch, seconds in measured.items():
        (tmp_path / launch).mkdir()
        path = tmp_path / launch / "check-2x1-50mbit.json"
        path.write_text(json.dumps({"model": model, "rows": [
            {"path": "ring", "bytes": 1 << 22, "predicted_s": 0.110, "measured_s": seconds, "ranks": 2, "hosts": 2}]}))
        files.append(str(path))
    parser = argparse.ArgumentParser()
    costmodel.add_parser(parser.add_subparsers(dest="command"))
    assert costmodel.run_model_report(parser.parse_args(["model-report", "--median", *files])) == 0
    out = capsys.readouterr().out
    assert "| check-2x1-50mbit | ring | 4M | 110.0 | 120.0 | -8% | +10%, -45%, -8% |" in out, out
    assert "1 of 1 predictions" in out
    assert costmodel.run_model_report(parser.parse_args(["model-report", *files])) == 0
    out = capsys.readouterr().out
    assert out.count("| check-2x1-50mbit | ring |") == 3 and "2 of 3 predictions" in out, out
