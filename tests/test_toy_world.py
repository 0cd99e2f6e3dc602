"""The toy world has what the gate needs to see bugs that real datasets would show (issue: a toy world with signal).

Odd class counts make base-to-new rounding visible, unequal class sizes make per-class sampling and averaging
visible, several templates per dataset make the template ensemble visible, one source without a validation
split exercises the few-shot fallback, and a colour cast per source camera leaves zero-shot room below few-shot.
"""

from __future__ import annotations

from clipbench import plan
from clipbench.data.metadata import templates
from clipbench.data.toy.suite import TOY_DATASETS, dataset_images

SOURCES = [d for d in TOY_DATASETS.values() if d.per_class[0]]
TARGETS = [d for d in TOY_DATASETS.values() if not d.per_class[0]]


def test_every_source_has_an_odd_class_count_and_unequal_class_sizes():
    for d in SOURCES:
        assert len(d.classes) % 2 == 1, d.name
        sizes = {d.count("train", label) for label in range(len(d.classes))}
        assert len(sizes) > 1 and min(sizes) >= 0.5 * max(sizes), (d.name, sizes)


def test_sources_with_and_without_their_own_validation_split():
    has_val = {d.name: bool(d.per_class[1]) for d in SOURCES}
    assert True in has_val.values() and False in has_val.values(), has_val


def test_every_toy_dataset_has_several_templates():
    for name in TOY_DATASETS:
        assert len(templates(name, "custom")) >= 2, name


def test_sources_have_a_camera_cast_and_targets_do_not():
    assert all(d.cast != (1.0, 1.0, 1.0) for d in SOURCES)
    assert all(d.cast == (1.0, 1.0, 1.0) for d in TARGETS)


def test_planned_sizes_are_the_generated_ones():
    d = TOY_DATASETS["toy_scenes"]
    size = plan.dataset_size(d.name)
    assert size.test == sum(1 for _ in dataset_images(d, "test")) == d.split_size("test")
    assert size.val == 0 and size.classes == len(d.classes)
