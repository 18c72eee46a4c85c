"""Which pairs of runs get a pairwise saved view (``<A>-fp-<B>-right``): one per ordered pair of
settings (method, preset) when the runs are of several, every ordered pair when of one."""

from __future__ import annotations

from workbench.export.fiftyone import compared_pairs, saved_view_specs


def runs_info(*runs: tuple[str, str, str | None, int | None]) -> dict[str, dict]:
    """A dataset's ``info["runs"]`` for ``(name, method, preset, seed)`` runs, all evaluated."""
    return {name: {"method": method, "preset": preset, "seed": seed, "eval_key": f"{name}_eval",
                   "predictions": f"{name}_predictions"} for name, method, preset, seed in runs}


def test_two_methods_compare_both_ways():
    runs = runs_info(("frcnn", "faster_rcnn", "tiny", 0), ("kl", "kl_rpn", "tiny", 0))
    assert compared_pairs(runs) == [("frcnn", "kl"), ("kl", "frcnn")]


def test_seeds_of_a_setting_are_represented_by_its_first_run():
    runs = runs_info(*[(f"{m}_seed_{s}", m, "tiny", s) for s in (0, 1, 2)
                       for m in ("faster_rcnn", "kl_rpn", "ssd")])
    pairs = compared_pairs(runs)
    assert len(pairs) == 6 and {a for a, _ in pairs} == {"faster_rcnn_seed_0", "kl_rpn_seed_0", "ssd_seed_0"}
    specs = saved_view_specs(runs)
    assert sum(name.endswith("-right") for name, _, _ in specs) == 6
    # The runs every method missed still take every run into account.
    missed = next(filters for name, _, filters in specs if name == "missed-by-all")
    assert len(missed[0][2]) == 9


def test_twelve_methods_over_three_seeds_save_132_pair_views():
    runs = runs_info(*[(f"m{m}_seed_{s}", f"m{m}", "tiny", s) for s in (0, 1, 2) for m in range(12)])
    assert len(compared_pairs(runs)) == 12 * 11


def test_presets_are_settings_and_one_setting_compares_every_pair():
    presets = runs_info(("a", "kl_rpn", "tiny", 0), ("b", "kl_rpn", "paper", 0))
    assert compared_pairs(presets) == [("a", "b"), ("b", "a")]
    seeds = runs_info(("s0", "kl_rpn", "tiny", 0), ("s1", "kl_rpn", "tiny", 1), ("s2", "kl_rpn", "tiny", 2))
    assert len(compared_pairs(seeds)) == 6


def test_runs_exported_before_the_preset_was_recorded_group_by_method():
    runs = {n: {k: v for k, v in r.items() if k not in ("preset", "seed")}
            for n, r in runs_info(("a", "kl_rpn", None, None), ("b", "kl_rpn", None, None),
                                  ("c", "faster_rcnn", None, None)).items()}
    assert compared_pairs(runs) == [("a", "c"), ("c", "a")]
