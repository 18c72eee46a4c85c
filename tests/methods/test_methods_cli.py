"""``workbench methods``: every registered method with its paper, baseline, presets and records."""

from __future__ import annotations

from workbench.cli import main
from workbench.methods import METHODS, describe_method, get_method


def test_every_method_declares_its_paper_and_a_registered_baseline():
    baselines = set()
    for name in METHODS:
        method = get_method(name)
        assert method.paper, name
        if method.baseline is not None:
            assert method.baseline in METHODS and method.baseline != name, (name, method.baseline)
            assert "tiny" in get_method(method.baseline).presets, name
        else:
            baselines.add(name)
        assert "tiny" in method.presets, name
    assert "faster_rcnn" in baselines


def test_describe_method_lists_records_with_their_views():
    info = describe_method("kl_rpn")
    assert info["baseline"] == "faster_rcnn" and "KL" in info["paper"]
    assert info["presets"][0] == "tiny"
    assert ("boxes", "predictions") in info["records"]["detections"]
    assert set(info["records"]) == set(get_method("kl_rpn").records)


def test_cli_lists_every_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        method = get_method(name)
        assert f"{name}: {method.description}" in out
        assert method.paper in out
        assert f"presets:  {', '.join(method.presets)}" in out
    assert "baseline: faster_rcnn" in out and "baseline: - (a baseline)" in out
    assert "records:  detections (boxes predictions" in out
    assert f"figures:  {get_method('refinedet').run_figures[0].title}; " in out and "figures:  -" in out
