"""AutoAugment / RandAugment drawn per sample on the device (srat_engine/data/autoaugment.py),
against torchvision's own transforms and functional ops."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_runs import TINY_RUN, prepare_from_env
from torchvision.transforms import v2
from torchvision.transforms.v2 import AutoAugmentPolicy
from torchvision.transforms.v2 import functional as tvf

from srat_engine.config.schema import validate_config
from srat_engine.data.augment import random_crop_flip
from srat_engine.data.autoaugment import (
    AUTOAUGMENT_BINS,
    AUTOAUGMENT_CIFAR10,
    RANDAUGMENT_BINS,
    RANDAUGMENT_MAGNITUDE,
    RANDAUGMENT_NUM_OPS,
    RANDAUGMENT_OPS,
    SIGNED,
    PolicyName,
    PolicyTables,
    apply_variants,
    draw_variants,
    magnitude,
    policy_augment,
    policy_tables,
)
from srat_engine.errors import SratError

CPU = torch.device("cpu")
POLICIES: tuple[PolicyName, ...] = ("autoaugment", "randaugment")
# CIFAR/SVHN images, digits, and an odd size
SHAPES = [(3, 32, 32), (1, 8, 8), (3, 7, 5)]
_AA = v2.AutoAugment(AutoAugmentPolicy.CIFAR10)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, c: int, h: int, w: int, seed: int = 5) -> torch.Tensor:
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=_gen(seed))
    x[: max(n // 4, 1)] //= 5  # low contrast: AutoContrast and Equalize stretch these
    x[-1] = 77  # a constant image: AutoContrast and Equalize leave it alone
    return x


def _torchvision_op(image: torch.Tensor, op: str, mag: float) -> torch.Tensor:
    """The op as torchvision's AutoAugment and RandAugment apply it (their shared method)."""
    return _AA._apply_image_or_video_transform(
        image, op, mag, interpolation=v2.InterpolationMode.NEAREST, fill=_AA._fill
    )


def _copy(generator: torch.Generator) -> torch.Generator:
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


# --- the tables are torchvision's ------------------------------------------------------------


def test_the_policy_and_op_list_are_torchvisions() -> None:
    assert list(AUTOAUGMENT_CIFAR10) == _AA._policies
    assert tuple(v2.RandAugment._AUGMENTATION_SPACE) == RANDAUGMENT_OPS
    assert v2.RandAugment(2, 8).num_magnitude_bins == RANDAUGMENT_BINS
    for space in (v2.AutoAugment._AUGMENTATION_SPACE, v2.RandAugment._AUGMENTATION_SPACE):
        assert {op for op, (_, signed) in space.items() if signed} == SIGNED


@pytest.mark.parametrize("bins", [AUTOAUGMENT_BINS, RANDAUGMENT_BINS])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (8, 8), (7, 5)])
def test_magnitudes_are_torchvisions(bins: int, height: int, width: int) -> None:
    for op, (values_of, _) in v2.AutoAugment._AUGMENTATION_SPACE.items():
        values = values_of(bins, height, width)
        for index in range(bins):
            expected = 0.0 if values is None else float(values[index])
            assert magnitude(op, index, bins, height, width) == expected, (op, index)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_variant_is_torchvisions_functional_op(policy: PolicyName, shape: tuple) -> None:
    """One batch, each sample through its own variant: the same 8 images (2 of low contrast,
    1 constant) through each of the policy's variants."""
    c, h, w = shape
    tables = policy_tables(policy, h, w, CPU)
    images = _images(8, c, h, w)
    x = images.repeat(len(tables.variants), 1, 1, 1)
    variant = torch.arange(len(tables.variants)).repeat_interleave(len(images))
    out = apply_variants(x, variant, tables)
    for n in range(len(x)):
        op, mag = tables.variants[int(variant[n])]
        assert torch.equal(out[n], _torchvision_op(x[n], op, mag)), (n, op, mag)


def test_translate_by_hand() -> None:
    # RandAugment's TranslateX at bin 8 of 31 on a 32-wide image: 150/331 * 32 * 8/30 = 3.87,
    # truncated to 3 pixels; content moves right, the left 3 columns are filled with 0
    tables = policy_tables("randaugment", 32, 32, CPU)
    right = tables.variants.index(("TranslateX", magnitude("TranslateX", 8, 31, 32, 32)))
    x = _images(4, 3, 32, 32)
    out = apply_variants(x, torch.full((4,), right), tables)
    assert torch.equal(out[..., 3:], x[..., :-3])
    assert not out[..., :3].any()


# --- the draws ------------------------------------------------------------------------------


def test_a_sub_policy_drawn_with_probability_one_is_torchvisions_ops() -> None:
    """Only sub-policy 4, (AutoContrast 0.5, Equalize 0.9), with both probabilities set to 1:
    every sample is Equalize(AutoContrast(x)), by torchvision's functional ops."""
    tables = policy_tables("autoaugment", 32, 32, CPU)
    assert tables.prob is not None
    assert [op for op, _, _ in AUTOAUGMENT_CIFAR10[4]] == ["AutoContrast", "Equalize"]
    forced = dataclasses.replace(
        tables,
        choice=tables.choice[4].expand_as(tables.choice).clone(),
        prob=torch.ones_like(tables.prob),
    )
    x = _images(32, 3, 32, 32)
    variants = draw_variants(forced, len(x), _gen(1))
    out = x
    for stage in variants:
        out = apply_variants(out, stage, forced)
    assert torch.equal(out, tvf.equalize(tvf.autocontrast(x)))


def _policy_by_torchvision(x: torch.Tensor, tables: PolicyTables, variants: torch.Tensor) -> Any:
    out = []
    for n, image in enumerate(x):
        for stage in variants[:, n].tolist():
            image = _torchvision_op(image, *tables.variants[stage])
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_the_batch_is_each_samples_draws_through_torchvisions_ops(
    policy: PolicyName, shape: tuple
) -> None:
    x = _images(96, *shape)
    g = _gen(2)
    variants = draw_variants(policy_tables(policy, *shape[1:], CPU), len(x), _copy(g))
    out = policy_augment(x, policy, generator=g)
    tables = policy_tables(policy, *shape[1:], CPU)
    assert torch.equal(out, _policy_by_torchvision(x, tables, variants))


def test_autoaugment_draws_a_sub_policy_and_applies_each_stage_with_its_probability() -> None:
    tables = policy_tables("autoaugment", 32, 32, CPU)
    assert tables.prob is not None
    n = 50_000
    variants = draw_variants(tables, n, _gen(3))
    for stage in range(2):
        # a stage is one of its sub-policy's two variants (+/- sign) or Identity (0)
        allowed = set(tables.choice[:, stage].flatten().tolist()) | {0}
        assert set(variants[stage].tolist()) <= allowed
        expected_identity = 1 - float(tables.prob[:, stage].mean())
        assert float((variants[stage] == 0).float().mean()) == pytest.approx(
            expected_identity, abs=0.01
        )
    equalize = tables.variants.index(("Equalize", 0.0))
    both = ((variants[0] == equalize) & (variants[1] == equalize)).float().mean()
    share = (0.6 * 0.5 + 0.2 * 0.6) / 25  # sub-policies 8 and 16 have Equalize twice
    assert float(both) == pytest.approx(share, abs=0.002)


def test_randaugment_draws_two_uniform_ops_with_random_signs() -> None:
    tables = policy_tables("randaugment", 32, 32, CPU)
    n = 56_000
    variants = draw_variants(tables, n, _gen(4))
    assert variants.shape == (RANDAUGMENT_NUM_OPS, n)
    ops = [[tables.variants[v][0] for v in stage.tolist()] for stage in variants]
    for stage in ops:
        for op in RANDAUGMENT_OPS:
            assert stage.count(op) / n == pytest.approx(1 / 14, abs=0.006), op
    rotate = magnitude("Rotate", RANDAUGMENT_MAGNITUDE, RANDAUGMENT_BINS, 32, 32)
    left = (variants == tables.variants.index(("Rotate", -rotate))).sum()
    right = (variants == tables.variants.index(("Rotate", rotate))).sum()
    assert float(left / (left + right)) == pytest.approx(0.5, abs=0.03)
    # the two stages are independent draws
    assert float((variants[0] == variants[1]).float().mean()) < 0.2


@pytest.mark.parametrize("policy", POLICIES)
def test_same_generator_state_same_batch_and_samples_differ(policy: PolicyName) -> None:
    x = _images(1, 3, 32, 32).expand(64, 3, 32, 32).contiguous()  # one image, 64 times
    first = policy_augment(x, policy, generator=_gen(7))
    again = policy_augment(x, policy, generator=_gen(7))
    other = policy_augment(x, policy, generator=_gen(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    distinct = {bytes(image.flatten().tolist()) for image in first}
    assert len(distinct) > 10  # the same input, augmented differently per sample
    assert first.shape == x.shape and first.dtype == torch.uint8 and first.device == x.device


def test_images_with_other_channel_counts_are_refused() -> None:
    with pytest.raises(SratError, match="1 or 3 channels"):
        policy_augment(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), "autoaugment", generator=_gen())
    with pytest.raises(SratError, match="uint8"):
        policy_augment(torch.zeros(2, 3, 8, 8), "randaugment", generator=_gen())


# --- the config, the step, the presets ------------------------------------------------------


def test_policy_is_a_data_field() -> None:
    assert validate_config({}).data.policy == "none"
    assert validate_config({"data": {"policy": "randaugment"}}).data.policy == "randaugment"
    with pytest.raises(SratError, match="policy"):
        validate_config({"data": {"policy": "trivialaugment"}})


def test_the_step_draws_the_policy_before_the_crop_and_flip() -> None:
    from srat_engine.training.step import _augment

    config = validate_config({"data": {"policy": "autoaugment", "augment": "crop_flip"}})
    x = _images(16, 3, 32, 32)
    g = _gen(9)
    twin = _copy(g)
    expected = random_crop_flip(
        policy_augment(x, "autoaugment", generator=twin), pad=4, flip=True, generator=twin
    )
    assert torch.equal(_augment(x, config, g), expected)
    vectors = torch.randn(16, 2)
    assert _augment(vectors, config, g) is vectors  # vectors are not images: unchanged


def test_the_cifar_presets_are_at_bsl_with_a_policy() -> None:
    base = prepare_from_env("at-bsl-cifar10-ir50").config
    pairs = (("at-bsl-aua-cifar10-ir50", "autoaugment"), ("at-bsl-ra-cifar10-ir50", "randaugment"))
    for preset, policy in pairs:
        config = prepare_from_env(preset).config
        assert config.method == "AT-BSL" and config.data.policy == policy
        assert config.data.augment == "crop_flip" and config.data.pad == 4
        same = {"name": True, "data": {"policy"}}
        assert config.model_dump(exclude=same) == base.model_dump(exclude=same)


@pytest.mark.parametrize("preset", ["digits-at-bsl-aua", "digits-at-bsl-ra"])
def test_digits_presets_train(preset: str) -> None:
    from srat_engine.config.prepare import create_run
    from srat_engine.runs.home import Home
    from srat_engine.training.trainer import execute

    prepared = prepare_from_env(preset, (*TINY_RUN, "train.epochs=2"))
    assert prepared.config.method == "AT-BSL" and prepared.config.data.policy != "none"
    run = create_run(prepared, Home.from_env().runs)
    final = execute(run, heartbeat_s=None)
    assert run.exit_record()["status"] == "finished"
    assert 0 <= final["std_overall"] <= 100 and final["rob_overall"] is not None


def test_a_policy_run_stopped_mid_epoch_resumes_to_the_uninterrupted_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy's draws come from the checkpointed generator: a run stopped after its 2nd
    batch (of 4 per epoch) and resumed ends with the uninterrupted run's metrics, to the bit."""
    import srat_engine.training.trainer as trainer_module
    from srat_engine.config.prepare import create_run
    from srat_engine.errors import RunPreempted
    from srat_engine.training.trainer import execute

    overrides = (*TINY_RUN, "train.epochs=2", "train.batch_size=40")

    def results(root: Path, stop_after: int | None) -> list[dict[str, Any]]:
        run = create_run(prepare_from_env("digits-at-bsl-aua", overrides), root=root)
        if stop_after is None:
            execute(run, heartbeat_s=None)
        else:
            event, real, calls = threading.Event(), trainer_module.graphed_step, [0]

            def counting(step: Any, on_fallback: Any = None) -> Any:
                inner = real(step, on_fallback=on_fallback)

                def counted(*args: Any, **kwargs: Any) -> None:
                    inner(*args, **kwargs)
                    calls[0] += 1
                    if calls[0] == stop_after:
                        event.set()

                return counted

            with monkeypatch.context() as patch:
                patch.setattr(trainer_module, "graphed_step", counting)
                with pytest.raises(RunPreempted):
                    execute(run, checkpoint_request=event, heartbeat_s=None)
            execute(run, resume=True, heartbeat_s=None)
        timing = ("time", "train_seconds", "eval_seconds")
        return [
            {k: v for k, v in r.items() if k not in timing}
            for r in run.metrics()
            if r["event"] in ("epoch", "final")
        ]

    assert results(tmp_path / "resumed", 2) == results(tmp_path / "straight", None)


# --- CUDA: no host sync, and the graphed step is the eager one --------------------------------

CUDA = pytest.mark.cuda


@CUDA
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_policy_never_syncs_with_the_host(policy: PolicyName) -> None:
    device = torch.device("cuda")
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, device=device)
    policy_augment(x, policy, generator=g)  # warm-up: the tables are made once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = policy_augment(x, policy, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape


@CUDA
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_policy_is_torchvisions_ops(policy: PolicyName) -> None:
    device = torch.device("cuda")
    x = _images(64, 3, 32, 32).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    tables = policy_tables(policy, 32, 32, device)
    variants = draw_variants(tables, len(x), _copy(g))
    out = policy_augment(x, policy, generator=g)
    expected = _policy_by_torchvision(x.cpu(), policy_tables(policy, 32, 32, CPU), variants.cpu())
    assert torch.equal(out.cpu(), expected)


@CUDA
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_graph_replays_the_policy_step_like_the_eager_one(policy: PolicyName) -> None:
    from srat_engine.bench.benchmark import bench_config, bench_engine_step, build_pair
    from srat_engine.training.graphs import GraphedTrainStep

    device = torch.device("cuda")

    def make() -> Any:
        model, _, sgd = build_pair("small_cnn", device, seed=0)
        config = bench_config("small_cnn", 8, 3, (f"data.policy={policy}",))
        return bench_engine_step(model, sgd, config, torch.Generator(device=device).manual_seed(3))

    torch.backends.cudnn.deterministic = True
    try:
        eager, graphed = make(), GraphedTrainStep(make())
        g = torch.Generator(device=device).manual_seed(4)
        sums = {"eager": torch.zeros(4, device=device), "graphed": torch.zeros(4, device=device)}
        for _ in range(6):
            x = torch.randint(0, 256, (8, 3, 32, 32), generator=g, device=device, dtype=torch.uint8)
            y = torch.randint(0, 10, (8,), generator=g, device=device)
            eager(x, y, sums=sums["eager"])
            graphed(x, y, sums=sums["graphed"])
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.deterministic = False
    assert graphed.graphs.failed is None and graphed.graphs.captured == 1
    assert torch.allclose(sums["eager"], sums["graphed"], rtol=1e-5, atol=1e-5)
    assert torch.equal(eager.generator.get_state(), graphed.step.generator.get_state())
