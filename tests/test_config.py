"""The typed run config: paper defaults, overrides, one-line errors, and the resolved block."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from srat_engine.config.methods import METHODS
from srat_engine.config.resolve import Resolved, resolve
from srat_engine.config.schema import RunConfig, scaled_epoch, set_override, validate_config
from srat_engine.errors import SratError
from srat_engine.runs.home import Home

CIFAR10_EXP100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
LDAM_METHODS = sorted(name for name, spec in METHODS.items() if spec.loss == "ldam")
REWEIGHTED = sorted(name for name, spec in METHODS.items() if spec.reweight != "none")
UNWEIGHTED = sorted(name for name, spec in METHODS.items() if spec.reweight == "none")


def config_with(*assignments: str) -> RunConfig:
    """A validated config built from `--set`-style assignments on top of the defaults."""
    raw: dict[str, Any] = {}
    for assignment in assignments:
        set_override(raw, assignment)
    return validate_config(raw)


def resolve_with(*assignments: str) -> Resolved:
    """`resolve` on `config_with(*assignments)`, datasets in the test home's (none are read)."""
    return resolve(config_with(*assignments), Home.from_env().data_dir)


# --- defaults -------------------------------------------------------------------------------


def test_defaults_follow_the_paper_protocol() -> None:
    config = validate_config({})
    train, attack, evaluation = config.train, config.attack, config.eval
    assert train.epochs == 200
    assert train.lr == 0.1
    assert train.momentum == 0.9
    assert train.weight_decay == 2e-4
    assert train.batch_size == 128
    assert train.lr_milestones == [160, 180]
    assert train.lr_gamma == 0.01
    assert train.reweight_epoch == 160
    assert train.reference_epochs == 200
    assert attack.steps == 10
    assert attack.eps == pytest.approx(8 / 255, abs=1e-12)
    assert attack.step_size == pytest.approx(2 / 255, abs=1e-12)
    assert attack.random_start is True
    assert evaluation.steps == 20
    assert evaluation.eps == pytest.approx(8 / 255, abs=1e-12)
    assert config.method == "SRAT-LDAM"
    assert config.data.dataset == "cifar10"
    assert config.model.arch == "resnet18"


def test_default_lists_are_not_shared_between_configs() -> None:
    first, second = validate_config({}), validate_config({})
    first.train.lr_milestones.append(190)
    assert second.train.lr_milestones == [160, 180]


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), ("2/255", 2 / 255), ("1 / 255", 1 / 255), ("16/255", 16 / 255)],
)
def test_fraction_strings_parse_to_floats(text: str, value: float) -> None:
    config = validate_config({"attack": {"eps": text}, "eval": {"step_size": text}})
    assert isinstance(config.attack.eps, float)
    assert config.attack.eps == pytest.approx(value, abs=1e-12)
    assert config.eval.step_size == pytest.approx(value, abs=1e-12)


def test_fraction_via_set_override() -> None:
    config = config_with("attack.eps=4/255", "attack.step_size=1/255")
    assert config.attack.eps == pytest.approx(4 / 255, abs=1e-12)
    assert config.attack.step_size == pytest.approx(1 / 255, abs=1e-12)


@pytest.mark.parametrize("text", ["8/0", "eight/255", "abc"])
def test_unparseable_budget_is_one_line_error(text: str) -> None:
    with pytest.raises(SratError) as caught:
        validate_config({"attack": {"eps": text}})
    assert "attack.eps" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("assignment", "path", "expected"),
    [
        ("train.epochs=20", ("train", "epochs"), 20),
        ("train.lr=0.05", ("train", "lr"), 0.05),
        ("data.ratio=1e2", ("data", "ratio"), 100.0),
        ("data.download=true", ("data", "download"), True),
        ("attack.random_start=false", ("attack", "random_start"), False),
        ("train.lr_milestones=[10, 20]", ("train", "lr_milestones"), [10, 20]),
        ("data.dataset=svhn", ("data", "dataset"), "svhn"),
        ('name="my run"', ("name",), "my run"),
        ("method=SRAT-CE", ("method",), "SRAT-CE"),
        ("data.options.test_per_class=40", ("data", "options", "test_per_class"), 40),
        ("a.b.c=x=y", ("a", "b", "c"), "x=y"),
    ],
)
def test_set_override_parses_toml_values(
    assignment: str, path: tuple[str, ...], expected: object
) -> None:
    raw: dict[str, Any] = {}
    set_override(raw, assignment)
    node: Any = raw
    for part in path:
        node = node[part]
    assert node == expected
    assert type(node) is type(expected)


def test_set_override_keeps_sibling_keys_and_nests() -> None:
    raw: dict[str, Any] = {"train": {"epochs": 5, "lr": 0.2}}
    set_override(raw, "train.epochs=7")
    set_override(raw, "loss.sep_tau=0.5")
    assert raw == {"train": {"epochs": 7, "lr": 0.2}, "loss": {"sep_tau": 0.5}}


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf"])
def test_set_override_nonfinite_words_become_floats(text: str) -> None:
    raw: dict[str, Any] = {}
    set_override(raw, f"loss.sep_lambda={text}")
    value = raw["loss"]["sep_lambda"]
    assert isinstance(value, float)
    assert not math.isfinite(value)


@pytest.mark.parametrize("assignment", ["noequals", "=3", " = 3"])
def test_set_override_rejects_missing_key_or_equals(assignment: str) -> None:
    with pytest.raises(SratError, match="key=value"):
        set_override({}, assignment)


def test_set_override_rejects_descending_into_a_value() -> None:
    raw: dict[str, Any] = {"train": 3}
    with pytest.raises(SratError, match="not a section"):
        set_override(raw, "train.epochs=2")


# --- one-line errors naming the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "field"),
    [
        ("data.ratio=0.5", "data.ratio"),
        ("data.ratio=-1", "data.ratio"),
        ("data.ratio=nan", "data.ratio"),
        ("loss.sep_lambda=nan", "loss.sep_lambda"),
        ("loss.sep_lambda=-0.5", "loss.sep_lambda"),
        ("loss.sep_lambda=inf", "loss.sep_lambda"),
        ("loss.sep_tau=0", "loss.sep_tau"),
        ("loss.sep_tau=-0.1", "loss.sep_tau"),
        ("loss.sep_tau=nan", "loss.sep_tau"),
        ("attack.eps=-1", "attack.eps"),
        ("attack.eps=-8/255", "attack.eps"),
        ("attack.step_size=-0.1", "attack.step_size"),
        ("eval.eps=-0.1", "eval.eps"),
        ("eval.eps=nan", "eval.eps"),
        ("data.dataset=imagenet", "data.dataset"),
        ("data.imbalance=linear", "data.imbalance"),
        ("method=foo", "method"),
        ("device=gpu", "device"),
        ("device=cuda:x", "device"),
        ("device=cuda:", "device"),
        ("train.lr_milestones=[180, 160]", "train.lr_milestones"),
        ("train.epochs=0", "train.epochs"),
        ("train.lr=0", "train.lr"),
        ("train.momentum=1", "train.momentum"),
        ("loss.cb_beta=1", "loss.cb_beta"),
        ("loss.class_weights=[1, -1]", "loss.class_weights"),
        ("model.arch=vgg", "model.arch"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),  # past NumPy's and scikit-learn's 32-bit seeds
        ("train.lr=1e39", "train.lr"),  # past float32: torch raised inside training
        ("loss.sep_lambda=1e39", "loss.sep_lambda"),
        ("loss.class_weights=[1e308, 1e308]", "loss.class_weights"),
        ("attack.eps=1e39", "attack.eps"),
    ],
)
def test_bad_value_is_one_line_error_naming_the_field(assignment: str, field: str) -> None:
    with pytest.raises(SratError) as caught:
        config_with(assignment)
    message = str(caught.value)
    assert "\n" not in message
    assert field in message


@pytest.mark.parametrize(
    "assignment", ["train.epochs=true", "attack.eps=false", "loss.sep_lambda=true", "seed=true"]
)
def test_a_boolean_is_not_a_number(assignment: str) -> None:
    # pydantic's lax mode would read true as 1 (one epoch) and false as 0 (no budget)
    field = assignment.partition("=")[0]
    with pytest.raises(SratError) as caught:
        config_with(assignment)
    assert str(caught.value) == (
        f"invalid config: {field}: must be a number (got {assignment.endswith('true')})"
    )


def test_booleans_still_set_boolean_fields() -> None:
    config = config_with("data.download=true")
    assert (
        config.data.download is True
        and config_with("train.compile=true").train.compile == "default"
    )


def test_a_crop_padding_wider_than_the_image_is_refused_before_a_run_exists(
    tmp_path: Path,
) -> None:
    from srat_engine.config.resolve import resolve

    # digits are 8x8: pad 8 still crops inside the image, pad 9 would show only padding
    assert resolve(config_with("data.dataset=digits", "data.pad=8"), tmp_path) is not None
    with pytest.raises(SratError, match=r"data.pad=9 pads more than a whole digits image"):
        resolve(config_with("data.dataset=digits", "data.pad=9"), tmp_path)
    # no crop, no padding: the value is not used, so not refused
    resolve(config_with("data.dataset=digits", "data.pad=9", "data.augment=flip"), tmp_path)


def test_the_bound_errors_say_what_was_given_and_float32_s_limit_in_words() -> None:
    with pytest.raises(SratError) as caught:
        config_with("train.lr=1e39")
    assert str(caught.value) == (
        "invalid config: train.lr: must be at most 3.4e38, float32's largest number "
        "(training computes in float32) (got 1e+39)"
    )
    # "greater than 0" holds the digit of an input of 0: the input is still said
    with pytest.raises(SratError, match=r"greater than 0 \(got 0\)$"):
        config_with("train.lr=0")
    with pytest.raises(SratError, match=r"less than 1 \(got 1\)$"):
        config_with("loss.cb_beta=1")
    assert config_with("seed=4294967295").seed == 2**32 - 1  # the largest seed is taken


@pytest.mark.parametrize("assignment", ["loss.sep_lambda=nan", "loss.sep_tau=nan"])
def test_nan_says_finite(assignment: str) -> None:
    with pytest.raises(SratError, match="finite"):
        config_with(assignment)


def test_unknown_method_suggests_the_near_name() -> None:
    with pytest.raises(SratError) as caught:
        validate_config({"method": "SRAT-LDMA"})
    message = str(caught.value)
    assert "\n" not in message
    assert "did you mean SRAT-LDAM" in message


def test_unknown_key_suggests_the_field() -> None:
    with pytest.raises(SratError) as caught:
        config_with("loss.sep_lamda=1")
    message = str(caught.value)
    assert "\n" not in message
    assert "loss.sep_lamda" in message
    assert "did you mean loss.sep_lambda" in message


def test_unknown_section_suggests_the_section() -> None:
    with pytest.raises(SratError, match="did you mean train"):
        validate_config({"trian": {"epochs": 1}})


def test_device_error_quotes_the_input_once() -> None:
    with pytest.raises(SratError) as caught:
        config_with("device=gpu")
    assert str(caught.value).count("'gpu'") == 1


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", " CUDA:1 ", "mps"])
def test_good_devices_are_normalised(device: str) -> None:
    assert validate_config({"device": device}).device == device.strip().lower()


def test_equal_milestones_are_accepted() -> None:
    assert validate_config({"train": {"lr_milestones": [100, 100]}}).train.lr_milestones == [
        100,
        100,
    ]


# --- methods and heads ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_names_are_case_insensitive_and_canonical(name: str) -> None:
    for spelling in (name, name.lower(), name.upper(), f"  {name.swapcase()} "):
        assert validate_config({"method": spelling}).method == name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_auto_head_is_cosine_exactly_for_ldam(name: str) -> None:
    config = validate_config({"method": name})
    expected = {"ldam": "cosine", "robal": "robal"}.get(METHODS[name].loss, "linear")
    assert config.head() == expected
    assert config.spec is METHODS[name]


def test_explicit_head_wins() -> None:
    assert validate_config({"method": "SRAT-LDAM", "model": {"head": "linear"}}).head() == "linear"
    assert validate_config({"method": "CE", "model": {"head": "cosine"}}).head() == "cosine"


# --- epoch scaling -------------------------------------------------------------------------


def test_scaled_epoch_short_run() -> None:
    config = config_with("train.epochs=20")
    assert scaled_epoch(160, config) == 16
    assert scaled_epoch(180, config) == 18
    assert scaled_epoch(0, config) == 0


@pytest.mark.parametrize("epoch", [0, 1, 100, 160, 180, 199, 200])
def test_scaled_epoch_is_identity_at_reference_length(epoch: int) -> None:
    assert scaled_epoch(epoch, validate_config({})) == epoch


def test_scaled_epoch_uses_reference_epochs() -> None:
    config = config_with("train.epochs=120", "train.reference_epochs=120")
    assert scaled_epoch(60, config) == 60
    config = config_with("train.epochs=60", "train.reference_epochs=120")
    assert scaled_epoch(60, config) == 30


# --- resolve --------------------------------------------------------------------------------


def test_resolve_cifar10_exp100_counts_and_tail() -> None:
    resolved = resolve_with("method=CE")
    assert resolved.class_counts == CIFAR10_EXP100
    assert resolved.train_size == sum(CIFAR10_EXP100)
    assert resolved.under_classes == [5, 6, 7, 8, 9]
    assert resolved.num_classes == 10
    assert resolved.class_names[0] == "airplane"
    assert resolved.input_shape == (3, 32, 32)


def test_resolve_cifar10_step100_counts() -> None:
    resolved = resolve_with("data.imbalance=step", "data.ratio=100")
    assert resolved.class_counts == [5000] * 5 + [50] * 5
    assert resolved.under_classes == [5, 6, 7, 8, 9]


@pytest.mark.parametrize("method", REWEIGHTED)
def test_reweighted_methods_get_class_balanced_weights(method: str) -> None:
    weights = resolve_with(f"method={method}").class_weights
    assert len(weights) == 10
    assert sum(weights) == pytest.approx(10.0)
    assert all(a < b for a, b in pairwise(weights))  # tail heavier
    assert weights[-1] > 1.0 > weights[0]


def test_class_balanced_weights_on_step_profile() -> None:
    weights = resolve_with("method=SRAT-CE", "data.imbalance=step").class_weights
    assert sum(weights) == pytest.approx(10.0)
    head, tail = weights[:5], weights[5:]
    assert max(head) == pytest.approx(min(head))
    assert max(tail) == pytest.approx(min(tail))
    assert tail[0] > head[0]


@pytest.mark.parametrize("method", UNWEIGHTED)
def test_unweighted_methods_get_unit_weights(method: str) -> None:
    assert resolve_with(f"method={method}").class_weights == [1.0] * 10


@pytest.mark.parametrize("method", sorted(METHODS))
def test_ldam_margins_only_for_ldam(method: str) -> None:
    margins = resolve_with(f"method={method}").ldam_margins
    if METHODS[method].loss != "ldam":
        assert margins is None
        return
    assert margins is not None
    assert len(margins) == 10
    assert max(margins) == pytest.approx(0.5)
    assert margins[-1] == pytest.approx(0.5)  # the rarest class gets the largest margin
    assert all(a <= b for a, b in pairwise(margins))


def test_ldam_max_margin_is_honoured() -> None:
    margins = resolve_with("method=LDAM", "loss.ldam_max_margin=0.3").ldam_margins
    assert margins is not None
    assert max(margins) == pytest.approx(0.3)


def test_resolve_schedule_scaled_to_run_length() -> None:
    srat = resolve_with("method=SRAT-LDAM", "train.epochs=20")
    assert srat.lr_milestones == [16, 18]
    assert srat.reweight_epoch == 16
    assert srat.gair_begin_epoch is None
    assert srat.head == "cosine"
    assert resolve_with("method=CB-Reweight").reweight_epoch == 0
    assert resolve_with("method=CE").reweight_epoch is None
    # GAIRAT's begin epoch is 1-based: its 100th of 200 epochs is 10th of 20, 0-based 9
    assert resolve_with("method=GAIRAT", "train.epochs=20").gair_begin_epoch == 9


def test_gair_begins_where_gairat_does() -> None:
    """GAIRAT.py weights from `(epoch + 1) >= args.begin_epoch` over a 0-based loop: with its
    120 epochs and begin_epoch 60, the first weighted epoch is 0-based 59."""
    gairat = ("method=GAIRAT", "train.epochs=120", "train.reference_epochs=120")
    assert resolve_with(*gairat, "gair.begin_epoch=60").gair_begin_epoch == 59
    assert resolve_with(*gairat, "gair.begin_epoch=1").gair_begin_epoch == 0
    assert resolve_with(*gairat, "gair.begin_epoch=0").gair_begin_epoch == 0


def test_explicit_class_weights_are_used_summing_to_class_count() -> None:
    weights = [float(i) for i in range(1, 11)]  # sum 55
    resolved = resolve_with("method=DRCB-CE", f"loss.class_weights={weights}")
    assert resolved.class_weights == pytest.approx([w * 10 / 55 for w in weights])
    with pytest.raises(SratError, match="all 0"):
        resolve_with("method=DRCB-CE", f"loss.class_weights={[0.0] * 10}")


def test_class_weights_of_wrong_length_rejected() -> None:
    with pytest.raises(SratError, match="class_weights") as caught:
        resolve_with("method=SRAT-CE", "loss.class_weights=[1, 2, 3]")
    assert "\n" not in str(caught.value)


def test_class_weights_with_ce_rejected() -> None:
    weights = [1.0] * 10
    with pytest.raises(SratError, match="class_weights") as caught:
        resolve_with("method=CE", f"loss.class_weights={weights}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "assignments",
    [
        ("data.n_max=6000",),
        ("data.dataset=digits", "data.n_max=200"),
        ("data.dataset=svhn", "data.imbalance=none", "data.n_max=5000"),
    ],
)
def test_n_max_beyond_a_class_rejected(assignments: tuple[str, ...]) -> None:
    with pytest.raises(SratError, match="n_max") as caught:
        resolve_with(*assignments)
    assert "\n" not in str(caught.value)


def test_ratio_leaving_an_empty_class_rejected() -> None:
    with pytest.raises(SratError, match="ratio"):
        resolve_with("data.dataset=digits", "data.ratio=1000")


@pytest.mark.parametrize("section", ["attack", "eval"])
@pytest.mark.parametrize("dataset", ["cifar10", "digits", "synthetic"])
def test_a_budget_wider_than_the_pixel_range_is_refused_on_images(
    section: str, dataset: str
) -> None:
    with pytest.raises(SratError) as caught:
        resolve_with(f"data.dataset={dataset}", f"{section}.eps=8")
    assert str(caught.value) == (
        f"{section}.eps=8 is wider than the whole pixel range [0, 1] of {dataset} images: "
        "budgets are in pixel units (8/255, not 8)"
    )
    # the whole range itself is a budget (every pixel anywhere), if a strange one
    assert resolve_with(f"data.dataset={dataset}", f"{section}.eps=1").class_counts != []


def test_a_gaussian_mixture_budget_is_not_in_pixels() -> None:
    """The Eq. 1 features are unbounded: an eps of 3 is a radius like any other."""
    resolved = resolve_with(
        "data.dataset=gaussian", "model.arch=linear", "attack.eps=3", "eval.eps=3"
    )
    assert len(resolved.class_counts) == 2  # resolved, not refused


def test_resolve_needs_no_data_files(srat_home: Path) -> None:
    assert list(srat_home.iterdir()) == []
    for dataset in ("cifar10", "cifar100", "svhn", "digits"):
        resolved = resolve_with(f"data.dataset={dataset}", "data.ratio=10")
        assert resolved.data_root == str(srat_home / "data")
        assert sum(resolved.class_counts) == resolved.train_size > 0
    assert list(srat_home.iterdir()) == []


def test_resolve_data_root_follows_srat_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRAT_DATA", str(tmp_path / "elsewhere"))
    data_dir = Home.from_env().data_dir  # the edge reads $SRAT_DATA
    assert resolve(validate_config({}), data_dir).data_root == str(tmp_path / "elsewhere")
    explicit = resolve_with(f'data.root="{tmp_path / "mine"}"')
    assert explicit.data_root == str(tmp_path / "mine")


def test_seed_ranges_are_capped_before_they_are_built() -> None:
    from srat_engine.config.seeds import MAX_SEEDS, parse_seeds

    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS
    for typo in (f"0-{MAX_SEEDS}", "0-10000000000", f"5 0-{MAX_SEEDS - 1}"):
        with pytest.raises(SratError, match=f"at most {MAX_SEEDS} seeds"):
            parse_seeds(typo)
