"""A run's model work counted before it runs (srat_engine/config/workload.py) and the test-split
sizes it reads from the dataset catalog, against hand-computed values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fake_runs import prepare_from_env

from srat_engine.config.schema import EvalConfig
from srat_engine.config.workload import (
    evaluation_counts,
    evaluation_due,
    pgd_evaluation_forwards,
    pgd_training_forwards,
    run_workload,
)
from srat_engine.data.catalog import dataset_info


def test_forward_pass_equivalents_per_example() -> None:
    assert pgd_training_forwards(10) == 23 and pgd_training_forwards(0) == 3
    assert pgd_evaluation_forwards(20) == 41 and pgd_evaluation_forwards(0) == 1


def test_evaluation_counts_follow_the_trainer() -> None:
    assert evaluation_counts(200, EvalConfig()) == (0, 200)
    # every 5: epochs 5, 10, ..., 200 (40), robust on the multiples of 10 (20)
    assert evaluation_counts(200, EvalConfig(every=5, robust_every=10)) == (20, 20)
    # the digits protocol: every epoch, robust every 5th: 25 of 125
    assert evaluation_counts(125, EvalConfig(robust_every=5)) == (100, 25)
    # every 3 of 7: epochs 3, 6 and the last, 7; robust on 6 (even) and 7 (the last)
    assert evaluation_counts(7, EvalConfig(every=3, robust_every=2)) == (1, 2)


def test_evaluation_counts_in_closed_form_agree_with_the_trainer_s_rule_epoch_by_epoch() -> None:
    for every in range(1, 8):
        for robust_every in range(1, 8):
            config = EvalConfig(every=every, robust_every=robust_every)
            for epochs in range(0, 61):
                dues = [evaluation_due(done, epochs, config) for done in range(1, epochs + 1)]
                clean = sum(evaluated and not robust for evaluated, robust in dues)
                full = sum(robust for _, robust in dues)
                assert evaluation_counts(epochs, config) == (clean, full), config


def test_evaluation_counts_of_a_billion_epochs_by_hand() -> None:
    # every 3: floor((1e9 - 1) / 3) + 1 = 333,333,334 evaluated; robust on the multiples of
    # lcm(3, 2) = 6 and the last: floor((1e9 - 1) / 6) + 1 = 166,666,667 (a loop: minutes)
    config = EvalConfig(every=3, robust_every=2)
    assert evaluation_counts(10**9, config) == (333_333_334 - 166_666_667, 166_666_667)


def test_the_paper_s_cifar10_exp100_run_by_hand() -> None:
    prepared = prepare_from_env("cifar10-exp100-srat-ldam")
    work = run_workload(prepared.config, prepared.resolved)
    assert work is not None
    # 12,406 examples x 200 epochs x (2 x 10 + 3)
    assert work.train == 12_406 * 200 * 23 == 57_067_600
    # every epoch: 10,000 clean + 1,000 (100 a class) x (2 x 20 + 1)
    assert (work.test_size, work.robust_size) == (10_000, 1_000)
    assert work.per_epoch_eval == 200 * (10_000 + 1_000 * 41) == 10_200_000
    assert work.final_eval == 10_000 + 10_000 * 41 == 420_000
    assert work.evaluation_share == pytest.approx(10_620_000 / 67_687_600)
    # eval.every = 5: 40 evaluated epochs, all robust
    every5 = prepare_from_env("cifar10-exp100-srat-ldam", ("eval.every=5",))
    cheaper = run_workload(every5.config, every5.resolved)
    assert cheaper is not None and (cheaper.clean_epochs, cheaper.robust_epochs) == (0, 40)
    assert cheaper.per_epoch_eval == 40 * 51_000 and cheaper.train == work.train


def test_natural_training_and_taet_s_natural_stage() -> None:
    natural = prepare_from_env("digits-natural")
    work = run_workload(natural.config, natural.resolved)
    n, epochs = natural.resolved.train_size, natural.config.train.epochs
    assert work is not None and work.train == n * epochs * 3
    taet = prepare_from_env("digits-taet")
    work = run_workload(taet.config, taet.resolved)
    stage1 = taet.resolved.taet_stage2_epoch
    assert stage1 == 50  # 80 of 200 reference epochs on digits' 125
    steps, n, epochs = taet.config.attack.steps, taet.resolved.train_size, taet.config.train.epochs
    assert work is not None and work.train == n * (50 * 3 + (epochs - 50) * (2 * steps + 3))


def test_digits_robust_epochs_and_a_small_test_class() -> None:
    prepared = prepare_from_env("digits-ce", ("eval.robust_per_class=60",))
    work = run_workload(prepared.config, prepared.resolved)
    assert work is not None
    # 50 test digits a class: the robust subset takes all 50 of each, not 60
    assert (work.test_size, work.robust_size) == (500, 500)
    clean, robust = evaluation_counts(prepared.config.train.epochs, prepared.config.eval)
    per_example = 2 * prepared.config.eval.steps + 1
    assert work.per_epoch_eval == clean * 500 + robust * (500 + 500 * per_example)


def test_an_old_run_without_test_counts_has_no_workload() -> None:
    prepared = prepare_from_env("digits-ce")
    old = replace(prepared.resolved, test_class_counts=None)
    assert run_workload(prepared.config, old) is None


def test_catalog_test_split_sizes(tmp_path: Path) -> None:
    assert sum(dataset_info("cifar10", {}, tmp_path).test_class_sizes) == 10_000
    assert dataset_info("cifar100", {}, tmp_path).test_class_sizes == (100,) * 100
    assert sum(dataset_info("svhn", {}, tmp_path).test_class_sizes) == 26_032
    assert dataset_info("digits", {"test_per_class": 30}, tmp_path).test_class_sizes == (30,) * 10
    assert dataset_info("synthetic", {"classes": 3}, tmp_path).test_class_sizes == (1000,) * 3
    assert dataset_info("gaussian", {"test_per_class": 7}, tmp_path).test_class_sizes == (7, 7)
    # an image folder: its own test/ split counted per class, else 20% of the smallest held out
    for split, sizes in (("train", {"a": 10, "b": 25}), ("test", {"a": 3, "b": 4})):
        for name, count in sizes.items():
            folder = tmp_path / "own" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.png").touch()
    own = dataset_info("folder", {}, tmp_path / "own")
    assert own.train_class_sizes == (10, 25) and own.test_class_sizes == (3, 4)
    pooled = dataset_info("folder", {}, tmp_path / "own" / "train")
    assert pooled.train_class_sizes == (8, 23) and pooled.test_class_sizes == (2, 2)
