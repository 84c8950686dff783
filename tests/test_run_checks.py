"""Checks around a run that need no model: free-space estimates, out= folders of other runs, replicate seeds,
what an interrupt reports and its exit status, and the images-per-prompt an imported folder records."""
from __future__ import annotations

import os
import signal

import pytest

from mubench.errors import UsageError


def test_the_free_space_estimate_counts_every_image_and_a_whole_image(tmp_path):
    """store, cache and out needs grow with prompts x images per prompt; one image is at least its raw pixels."""
    from mubench.config import RunConfig
    from mubench.pathcheck import MIN_FREE, image_bytes, run_needs
    from mubench.suites.toy import ToyParams

    params = ToyParams(images_per_prompt=4)
    needs = {n.key: n for n in run_needs(RunConfig(out=str(tmp_path / "o")), params, 10, tmp_path / "c", 64)}
    assert needs["cache"].bytes_needed == MIN_FREE + 40 * image_bytes(params.sampler.resolution or 64)
    assert needs["store"].bytes_needed == MIN_FREE + 40 * 4096
    assert needs["out"].bytes_needed == MIN_FREE + 40 * 1024
    assert image_bytes(512) >= 512 * 512 * 3


def test_out_of_a_run_of_another_model_is_refused(tmp_path):
    """out= holding the results of the same suite and method on another model is not silently replaced."""
    import json

    from mubench.pathcheck import check_out_folder

    (tmp_path / "results.json").write_text(json.dumps({"suite": "toy", "method": "sd", "model": "micro"}))
    with pytest.raises(UsageError, match="holds the results of another run"):
        check_out_folder(str(tmp_path), "toy", "sd", "tiny-sd")
    check_out_folder(str(tmp_path), "toy", "sd", "micro")  # the same run: resumes / refreshes


def test_space_short_by_a_little_is_refused(tmp_path, monkeypatch):
    """A disk with less free space than the run needs is refused, even when it is short by little."""
    import shutil
    from collections import namedtuple

    from mubench.pathcheck import PathNeed, check_path

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 40, 0, 100 << 20))
    with pytest.raises(UsageError, match="MiB free"):
        check_path(PathNeed("cache", tmp_path / "c", folder=True, bytes_needed=101 << 20))
    check_path(PathNeed("cache", tmp_path / "c", folder=True, bytes_needed=99 << 20))


def test_duplicate_replicate_seeds_and_seed_with_seeds_are_refused():
    """seeds=0,0 would pool one run twice as two replicates; seed= with seeds= would silently drop seed=."""
    from mubench.commands.run import split_seeds

    assert split_seeds(["suite=toy", "seeds=0,1"]) == (["suite=toy"], [0, 1])
    with pytest.raises(UsageError, match="distinct"):
        split_seeds(["seeds=0,0"])
    with pytest.raises(UsageError, match="not both"):
        split_seeds(["seed=1", "seeds=0,1"])


def test_an_interrupt_after_planning_says_how_many_images_are_kept():
    """Once images are planned the message says how many are kept, even when none is finished yet."""
    from mubench.commands.run import _kept

    class Planned:
        def kept(self):
            return 0, 4

    assert _kept([Planned()]).startswith("0 of 4 images kept")


def test_sigterm_raises_interrupted_with_its_exit_status_and_handlers_are_restored():
    """SIGTERM inside the command stops it as Interrupted with exit status 128+15; afterwards the process's own
    handlers are back."""
    from mubench.interrupts import Interrupted, exit_code_of, interrupts_raise

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as err:
        with interrupts_raise():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert exit_code_of(err.value) == 128 + signal.SIGTERM == 143
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert {s: signal.getsignal(s) for s in before} == before


class SignalledWhileCollected:
    """Sends this process a SIGTERM from its finaliser, whose handler then runs inside ``__del__``."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the finaliser
            pass


def test_a_signal_that_lands_in_a_finaliser_still_stops_the_command():
    """Python prints and drops an exception raised inside ``__del__``: a SIGTERM whose handler runs there (a
    ZipFile being collected, seen in CI) must not be lost, but raise Interrupted as soon as the finaliser is done."""
    import time

    from mubench.interrupts import Interrupted, interrupts_raise

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    with pytest.raises(Interrupted) as err:
        with interrupts_raise():
            obj = SignalledWhileCollected()
            del obj
            for _ in range(300):
                time.sleep(0.01)
    assert err.value.signum == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_leaving_the_command_cancels_a_pending_redelivery():
    """A signal from a finaliser is redelivered 10 ms later; a command that ends before then leaves no alarm behind
    to fire under the process's own SIGALRM handler."""
    import time

    from mubench.interrupts import interrupts_raise

    alarms: list[int] = []
    own = signal.signal(signal.SIGALRM, lambda s, f: alarms.append(s))
    try:
        with interrupts_raise():
            obj = SignalledWhileCollected()
            del obj  # the body ends at once, before the redelivery is due
        time.sleep(0.05)
        assert alarms == [] and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, own)


def test_images_per_prompt_of_an_even_folder_is_one_number(tmp_path):
    """A folder with the same count for every prompt records that count; uneven ones record the range."""
    from mubench.imported import images_per_prompt
    from mubench.suites.base import ImportedImage, PromptItem

    a, b = PromptItem(id="a", prompt="x"), PromptItem(id="b", prompt="y")
    imgs = [ImportedImage(a, 0, tmp_path / "a0"), ImportedImage(b, 0, tmp_path / "b0"),
            ImportedImage(b, 1, tmp_path / "b1")]
    assert images_per_prompt(imgs[:2]) == 1
    assert images_per_prompt(imgs) == "1-2"
