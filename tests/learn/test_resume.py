"""A training run killed with SIGKILL resumes from its last checkpoint and ends with exactly the
weights of a run that was never interrupted (CPU, same seed, same thread count)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from urbangeo import api

OPTIONS = {"preset": "tiny", "image_size": 32, "epochs": 3, "batch_size": 8, "lr": 2e-3,
           "checkpoint_every": 2, "device": "cpu"}


def _command(cells: Path, output: Path) -> list[str]:
    args = [sys.executable, "-m", "urbangeo.cli.main", "--progress", "none", "train",
            str(cells), "-o", str(output)]
    for name, value in OPTIONS.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _wait_for_checkpoint(process: subprocess.Popen[str], work: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(work.glob("step-*")):
        assert process.poll() is None, f"training ended before its first checkpoint: " \
                                       f"{process.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)


def test_sigkilled_training_resumes_bit_identical(city_cells: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses' setting: reductions split the same way
    try:
        api.train(city_cells, tmp_path / "straight", **OPTIONS)
    finally:
        torch.set_num_threads(threads)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(city_cells, killed), env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_checkpoint(process, tmp_path / "killed.partial", timeout=120)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not killed.exists(), "the run finished before it could be killed"

    rerun = subprocess.run(_command(city_cells, killed), env=env, text=True,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from step" in rerun.stdout
    assert not (tmp_path / "killed.partial").exists()

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(killed / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_checkpoints_replace_each_other_and_unchanged_best_weights_are_linked(
        tmp_path: Path) -> None:
    from urbangeo.learn.checkpoint import WorkDir

    work = WorkDir(tmp_path / "m.partial")
    assert not work.begin({"options": {"lr": 1.0}}, overwrite=False)
    work.mark_started({"options": {"lr": 1.0}})
    best = {"w": torch.arange(4.0)}
    first = work.save(1, {"w": torch.zeros(4)}, best, {"step": 1, "log": [{"a": 1.5}]})
    inode = (first / "best.safetensors").stat().st_ino
    (tmp_path / "m.partial" / ".step-000000003.tmp").mkdir()  # a write cut short by a kill
    second = work.save(2, {"w": torch.ones(4)}, best, {"step": 2, "log": []})
    assert (second / "best.safetensors").stat().st_ino == inode and not first.exists()
    third = work.save(3, {"w": torch.ones(4)}, {"w": torch.ones(4)}, {"step": 3, "log": []})
    assert (third / "best.safetensors").stat().st_ino != inode

    again = WorkDir(tmp_path / "m.partial")
    assert again.begin({"options": {"lr": 1.0}}, overwrite=False)
    latest = again.latest()
    assert latest is not None and latest.step == 3 and latest.state["step"] == 3
    assert torch.equal(latest.best["w"], torch.ones(4)) and torch.equal(latest.weights["w"],
                                                                        torch.ones(4))
