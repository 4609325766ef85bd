"""The Slurm backend's pure parts: time limits, option validation and merging
(`jobs.slurm_options`), the device a job trains on and what reaches submitit (`jobs.slurm`).
No Slurm here: tests/test_slurm_cluster.py and its kind run a real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from srat_engine.errors import SratError
from srat_engine.jobs.slurm import _sbatch_parameters, check_cluster, job_device
from srat_engine.jobs.slurm_options import (
    SlurmOptions,
    load_defaults,
    parse_assignments,
    slurm_options,
    slurm_time_minutes,
)
from srat_engine.runs.rundir import RunDir

# --- slurm_time_minutes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),  # M
        ("1", 1),
        ("1:30", 2),  # M:S, 90 s rounded up
        ("0:30", 1),  # 30 s rounded up
        ("90:00", 90),  # M:S with minutes past 59: still minutes
        ("2:00:00", 120),  # H:M:S
        ("0:00:01", 1),
        ("1:02:03", 63),  # 3723 s -> 62.05 min -> 63
        ("1-12", 2160),  # D-H: 36 h
        ("1-0", 1440),
        ("1-0:30", 1470),  # D-H:M: 24 h 30 min
        ("1-2:03", 1563),  # 26 h 3 min
        ("1-2:03:04", 1564),  # 26 h 3 min 4 s -> rounded up
        ("0-0:0:1", 1),
        (" 90 ", 90),  # surrounding spaces ignored
    ],
)
def test_slurm_time_minutes(text: str, minutes: int) -> None:
    assert slurm_time_minutes(text) == minutes


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1h", "is not a Slurm time"),
        ("", "is not a Slurm time"),
        ("-5", "is not a Slurm time"),
        ("1-", "is not a Slurm time"),
        ("1:2:3:4", "is not a Slurm time"),
        ("1.5", "is not a Slurm time"),
        ("0", "longer than zero"),  # Slurm's 0 is no limit at all: srat never asks for that
        ("0:00:00", "longer than zero"),
        ("1:75:00", "go up to 59"),
        ("1:00:60", "go up to 59"),
        ("1-2:60", "go up to 59"),
    ],
)
def test_bad_slurm_times_are_refused(text: str, why: str) -> None:
    with pytest.raises(SratError, match=why) as caught:
        slurm_time_minutes(text)
    assert repr(text) in str(caught.value)


# --- SlurmOptions -----------------------------------------------------------------------------


def test_defaults_and_cleaned_values() -> None:
    options = SlurmOptions()
    assert (options.time, options.minutes, options.signal_s) == ("12:00:00", 720, 300)
    assert options.partition is None and options.gpus_per_run is None and options.extra == {}
    cleaned = SlurmOptions(partition=" gpu ", mem=" 32G ", time=" 2:00:00 ", account="lab")
    assert (cleaned.partition, cleaned.mem, cleaned.time, cleaned.minutes) == (
        "gpu", "32G", "2:00:00", 120,
    )  # fmt: skip


@pytest.mark.parametrize("mem", ["32G", "32g", "4000M", "4000", "512K", "1T"])
def test_slurm_memory_sizes(mem: str) -> None:
    assert SlurmOptions(mem=mem).mem == mem


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"mem": "32 GB"}, "not a Slurm memory size"),
        ({"mem": "32GB"}, "not a Slurm memory size"),
        ({"mem": "G"}, "not a Slurm memory size"),
        ({"mem": "-1G"}, "not a Slurm memory size"),
        ({"partition": "gpu a100"}, "not a Slurm name"),
        ({"partition": ""}, "not a Slurm name"),
        ({"account": "my lab"}, "not a Slurm name"),
        ({"qos": "hi\tgh"}, "not a Slurm name"),
        ({"time": "1h"}, "not a Slurm time"),
        ({"gpus_per_run": -1}, "greater than or equal to 0"),
        ({"cpus_per_run": 0}, "greater than or equal to 1"),
        ({"max_parallel": 0}, "greater than or equal to 1"),
        ({"signal_s": 0}, "greater than or equal to 1"),
        ({"nodes": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_option_values_are_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SlurmOptions(**fields)


def test_extra_keys_are_normalised_to_sbatch_option_names() -> None:
    options = SlurmOptions(
        extra={"mail_type": "END", "--exclusive": "", " constraint ": "a100", "gres-flags": "x"}
    )
    assert options.extra == {
        "mail-type": "END", "exclusive": "", "constraint": "a100", "gres-flags": "x",
    }  # fmt: skip


@pytest.mark.parametrize(
    "key",
    # each of these is an option srat (through submitit) sets itself for every job; open_mode
    # and --job_name are refused after normalisation too
    ["output", "error", "array", "signal", "--signal", "open_mode", "--job_name", "time",
     "partition", "gpus-per-node", "cpus_per_task", "mem", "account", "qos", "requeue", "wrap"],
)  # fmt: skip
def test_extra_may_not_set_what_srat_manages(key: str) -> None:
    with pytest.raises(ValidationError, match="is set by srat"):
        SlurmOptions(extra={key: "x"})


@pytest.mark.parametrize("key", ["Constraint", "1x", "mail type", "", "--", "a=b"])
def test_extra_keys_that_are_no_sbatch_option_names(key: str) -> None:
    with pytest.raises(ValidationError, match="is not an sbatch option name"):
        SlurmOptions(extra={key: "x"})


@pytest.mark.parametrize(
    ("gpus_per_run", "device", "gpus"),
    [
        (None, "cpu", 0),
        (None, "auto", 1),
        (None, "cuda", 1),
        (None, "cuda:3", 1),  # Slurm picks the GPU: one, whatever N was
        (0, "auto", 0),
        (2, "cuda", 2),
        (2, "cpu", 2),  # an explicit request wins (the job still trains on the cpu)
    ],
)
def test_gpus_for(gpus_per_run: int | None, device: str, gpus: int) -> None:
    assert SlurmOptions(gpus_per_run=gpus_per_run).gpus_for(device) == gpus


def test_check_signal_leaves_room_for_slurms_check_period() -> None:
    # --time 10 is 600 s: the signal may come 30 s late, so 569 s ahead is the most it may ask
    SlurmOptions(time="10", signal_s=569).check_signal()
    SlurmOptions().check_signal()  # 300 s before 12 h
    for options in (SlurmOptions(time="10", signal_s=570), SlurmOptions(time="5")):
        with pytest.raises(SratError, match="leaves no training time") as caught:
            options.check_signal()
        assert f"--signal-s {options.signal_s}" in str(caught.value)
        assert f"--time {options.time}" in str(caught.value)


# --- parse_assignments ------------------------------------------------------------------------


def test_parse_assignments() -> None:
    items = ["constraint=a100", "exclusive=", " comment = a=b ", "constraint=h100"]
    assert parse_assignments(items) == {"constraint": "h100", "exclusive": "", "comment": "a=b"}
    assert parse_assignments(()) == {}


@pytest.mark.parametrize("item", ["exclusive", "=a100", " =x", ""])
def test_parse_assignments_refuses_items_without_a_key(item: str) -> None:
    with pytest.raises(SratError, match="--slurm expects KEY=VALUE") as caught:
        parse_assignments(["constraint=a100", item])
    assert repr(item) in str(caught.value)


# --- load_defaults and slurm_options ----------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_load_defaults(tmp_path: Path) -> None:
    assert load_defaults(tmp_path / "missing.toml") == {}
    assert load_defaults(write_config(tmp_path, "")) == {}
    assert load_defaults(write_config(tmp_path, "[backend.local]\nx = 1\n")) == {}
    text = '[backend.slurm]\npartition = "gpu"\nsignal_s = 60\n[backend.slurm.extra]\nx = "y"\n'
    assert load_defaults(write_config(tmp_path, text)) == {
        "partition": "gpu", "signal_s": 60, "extra": {"x": "y"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[backend.slurm\n", "cannot read"),
        ('partition = "gpu\n', "cannot read"),
        ("backend = 3\n", r"\[backend.slurm\] must be a table"),
        ("[backend]\nslurm = 3\n", r"\[backend.slurm\] must be a table"),
        ('[backend]\nslurm = ["gpu"]\n', r"\[backend.slurm\] must be a table"),
    ],
)
def test_load_defaults_refuses_a_bad_file(tmp_path: Path, text: str, match: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(SratError, match=match) as caught:
        load_defaults(path)
    assert str(path) in str(caught.value)


def test_load_defaults_refuses_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SratError, match="cannot read"):
        load_defaults(tmp_path)  # a directory


LAB_CONFIG = """\
[backend.slurm]
partition = "gpu"
time = "2:00:00"
mem = "32G"
account = "mylab"
max_parallel = 4
[backend.slurm.extra]
constraint = "a100"
mail_type = "END"
"""


def test_command_options_override_the_files_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path, LAB_CONFIG)
    overrides = {"partition": "debug", "time": None, "mem": None, "gpus_per_run": 2, "qos": None}
    options = slurm_options(config, overrides, {"constraint": "h100", "mail-type": "ALL"})
    assert options == SlurmOptions(
        partition="debug",  # the command's
        time="2:00:00",  # None on the command: the file's
        gpus_per_run=2,
        mem="32G",
        account="mylab",
        max_parallel=4,
        # the command's extra over the file's, once both are sbatch names
        extra={"constraint": "h100", "mail-type": "ALL"},
    )
    assert slurm_options(config, {}) == SlurmOptions(
        partition="gpu", time="2:00:00", mem="32G", account="mylab", max_parallel=4,
        extra={"constraint": "a100", "mail-type": "END"},
    )  # fmt: skip


def test_no_config_file_gives_slurms_defaults(tmp_path: Path) -> None:
    assert slurm_options(tmp_path / "config.toml", {"time": None}) == SlurmOptions()
    assert slurm_options(tmp_path / "config.toml", {"time": "1:00:00"}, {}).minutes == 60


def test_a_command_value_replaces_a_bad_default(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[backend.slurm]\nmem = "32 GB"\n')
    assert slurm_options(config, {"mem": "16G"}).mem == "16G"


def one_line_error(config: Path, overrides: dict[str, Any], extra: dict[str, str] | None) -> str:
    with pytest.raises(SratError) as caught:
        slurm_options(config, overrides, extra)
    message = str(caught.value)
    assert "\n" not in message and not message.startswith("Value error")
    return message


@pytest.mark.parametrize(
    ("text", "overrides", "extra", "flag", "from_file"),
    [
        ('mem = "32 GB"', {}, None, "--mem: '32 GB' is not a Slurm memory size", True),
        ("", {"mem": "32 GB"}, None, "--mem: '32 GB' is not a Slurm memory size", False),
        ('time = "1h"', {}, None, "--time: '1h' is not a Slurm time", True),
        ("", {"time": "1h"}, None, "--time: '1h' is not a Slurm time", False),
        ('partition = "a b"', {}, None, "--partition: 'a b' is not a Slurm name", True),
        ("gpus_per_run = -1", {}, None, "--gpus-per-run: Input should be greater", True),
        ("", {"gpus_per_run": -1}, None, "--gpus-per-run: Input should be greater", False),
        ("", {"max_parallel": 0}, None, "--max-parallel: Input should be greater", False),
        ('[backend.slurm.extra]\noutput = "x"', {}, None, "--slurm: --output is set by srat",
         True),
        ("", {}, {"array": "0-3"}, "--slurm: --array is set by srat", False),
        ('[backend.slurm.extra]\nconstraint = "a100"', {}, {"signal": "USR1"},
         "--slurm: --signal is set by srat", False),
        ("", {}, {"mail type": "END"}, "--slurm: 'mail type' is not an sbatch option name",
         False),
    ],
)  # fmt: skip
def test_bad_values_name_their_flag_and_the_file_they_came_from(
    tmp_path: Path,
    text: str,
    overrides: dict[str, Any],
    extra: dict[str, str] | None,
    flag: str,
    from_file: bool,
) -> None:
    config = write_config(tmp_path, f"[backend.slurm]\n{text}\n")
    message = one_line_error(config, overrides, extra)
    assert message.startswith(flag)
    assert (f"(in {config} [backend.slurm])" in message) is from_file


def test_an_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[backend.slurm]\npartiton = 'gpu'\n")
    message = one_line_error(config, {}, None)
    assert message.startswith(f"unknown Slurm option 'partiton' (in {config} [backend.slurm])")
    assert "known: partition, time, gpus_per_run" in message


@pytest.mark.parametrize(
    ("text", "overrides", "from_file"),
    [
        ('time = "5"', {}, True),  # 300 s: all of it the default lead
        ('time = "5"', {"signal_s": 300}, True),  # the file's time leaves no room either
        ("signal_s = 600", {"time": "10"}, True),
        ("", {"time": "5"}, False),
        ('time = "5"', {"time": "5", "signal_s": 300}, False),  # the command's, both
    ],
)
def test_a_signal_with_no_time_left_is_refused(
    tmp_path: Path, text: str, overrides: dict[str, Any], from_file: bool
) -> None:
    config = write_config(tmp_path, f"[backend.slurm]\n{text}\n")
    message = one_line_error(config, overrides, None)
    assert message.startswith("--signal-s ") and "leaves no training time in --time " in message
    assert (f"(in {config} [backend.slurm])" in message) is from_file


def test_a_shorter_signal_fits_the_files_time(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[backend.slurm]\ntime = "5"\n')
    assert slurm_options(config, {"signal_s": 60}).signal_s == 60


# --- jobs.slurm: the job's device, what reaches submitit, a cluster without Slurm ---------------


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [
        ("cpu", 0, "cpu"),
        ("cpu", 2, "cpu"),
        ("auto", 0, "cpu"),  # auto with no GPU asked for
        ("auto", 1, "cuda"),
        ("cuda", 1, "cuda"),
        ("cuda:3", 1, "cuda"),  # the GPU Slurm gave the job, whatever N named on another host
        ("CUDA:0", 2, "cuda"),
    ],
)
def test_job_device(device: str, gpus: int, expected: str) -> None:
    assert job_device(device, gpus) == expected


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_job_device_refuses_a_cuda_run_without_gpus(device: str) -> None:
    with pytest.raises(SratError, match=f"device {device} needs a GPU: --gpus-per-run 0"):
        job_device(device, 0)


def members(tmp_path: Path, *ids: str, stack: int = 1) -> list[list[tuple[RunDir, str]]]:
    """The units of one job array: one run each, or stacks of `stack` runs."""
    runs = [(RunDir(tmp_path / run_id), f"launch-{run_id}") for run_id in ids]
    return [runs[i : i + stack] for i in range(0, len(runs), stack)]


def test_a_stack_is_one_array_task_named_for_its_first_run(tmp_path: Path) -> None:
    options = SlurmOptions(time="10")
    one = _sbatch_parameters(options, 1, members(tmp_path, "a", "b", stack=2))
    assert (one["job_name"], one["array_parallelism"]) == ("srat-stack-a", 1)
    two = _sbatch_parameters(options, 1, members(tmp_path, "a", "b", "c", "d", stack=2))
    assert (two["job_name"], two["array_parallelism"]) == ("srat-2-stacks", 2)


def test_sbatch_parameters_of_an_array(tmp_path: Path) -> None:
    options = SlurmOptions(partition="gpu", time="2:00:00", cpus_per_run=8, mem="32G",
                           qos="high", extra={"constraint": "a100"})  # fmt: skip
    parameters = _sbatch_parameters(options, 1, members(tmp_path, "a", "b", "c"))
    assert parameters == {
        "job_name": "srat-3-runs",
        "time": 120,  # minutes, as submitit writes --time
        "signal_delay_s": 300,
        "array_parallelism": 3,  # no max_parallel: all at once
        "stderr_to_stdout": True,
        "additional_parameters": {"constraint": "a100"},
        "partition": "gpu",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem": "32G",
        "qos": "high",
        # account: None, left to Slurm
    }


def test_sbatch_parameters_of_one_cpu_run(tmp_path: Path) -> None:
    options = SlurmOptions(time="1:30", max_parallel=4, signal_s=20, account="lab")
    parameters = _sbatch_parameters(options, 0, members(tmp_path, "run-a"))
    assert parameters == {
        "job_name": "srat-run-a",
        "time": 2,
        "signal_delay_s": 20,
        "array_parallelism": 4,
        "stderr_to_stdout": True,
        "additional_parameters": {},
        "account": "lab",
        # no gpus_per_node for 0 GPUs; no partition, cpus, mem or qos: Slurm's defaults
    }


def test_submitit_writes_the_sbatch_options_srat_asked_for(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string  # what update_parameters checks with

    options = SlurmOptions(partition="gpu", time="1-0:30", mem="32G", max_parallel=2,
                           signal_s=120, extra={"mail_type": "END"})  # fmt: skip
    parameters = _sbatch_parameters(options, 1, members(tmp_path, "a", "b", "c"))
    script = _make_sbatch_string(command="true", folder=tmp_path / "%j", map_count=3,
                                 **parameters)  # fmt: skip
    lines = set(script.splitlines())
    wanted = "--array=0-2%2 --time=1470 --signal=USR2@120 --gpus-per-node=1 --partition=gpu"
    wanted += " --mem=32G --mail-type=END --job-name=srat-3-runs"
    assert {f"#SBATCH {line}" for line in wanted.split()} <= lines
    assert not any(line.startswith("#SBATCH --error") for line in lines)  # one log per job


def test_check_cluster_without_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for options in (SlurmOptions(), SlurmOptions(partition="gpu")):  # sbatch is asked for first
        with pytest.raises(SratError, match="no sbatch on PATH"):
            check_cluster(options)
