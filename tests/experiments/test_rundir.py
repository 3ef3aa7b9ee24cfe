"""Run directories: claiming an output path, its lock, stale temporaries, atomic writes that
name the file on failure, strict YAML/JSON reading, θ0's fingerprint, concurrent attacks."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
import torch
from _cli_support import leftovers, lock_held_elsewhere
from safetensors.torch import save_file

from condimmune._files import replace_atomically
from condimmune.core.errors import StaleFilesWarning, UserError
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.experiments.rundir import (
    claim_output_dir,
    read_json,
    read_yaml_mapping,
    remove_stale_temporaries,
    run_dir_lock,
    write_directory_atomically,
)


def test_claim_creates_parents_and_removes_them_again_when_the_block_fails(tmp_path) -> None:
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError, match="compute failed"), claim_output_dir(out) as final:
        assert final == out and (tmp_path / "a" / "b").is_dir()
        assert (tmp_path / "a" / "b" / ".run.lock").is_file()
        raise RuntimeError("compute failed")
    assert list(tmp_path.iterdir()) == []


def test_claim_keeps_parents_that_got_other_content(tmp_path) -> None:
    out = tmp_path / "a" / "run"
    with pytest.raises(RuntimeError), claim_output_dir(out):
        (tmp_path / "a" / "other").write_text("x")
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["other"]


@pytest.mark.parametrize("content", [["x"], []], ids=["non-empty", "empty"])
def test_claim_refuses_an_existing_directory_unless_resuming(tmp_path, content) -> None:
    (tmp_path / "run").mkdir()
    for name in content:
        (tmp_path / "run" / name).write_text("x")
    message = r"already exists \(--out is a new directory that the command creates\)"
    with pytest.raises(UserError, match=message), claim_output_dir(tmp_path / "run"):
        pass
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == content  # left alone
    with claim_output_dir(tmp_path / "run", resume=True) as final:
        assert final == tmp_path / "run"
    assert leftovers(tmp_path) == []


def test_a_lock_held_by_another_process_refuses_and_is_left_alone(tmp_path) -> None:
    with lock_held_elsewhere(tmp_path / ".run.lock"):
        with (
            pytest.raises(UserError, match="another condimmune process") as err,
            claim_output_dir(tmp_path / "run"),
        ):
            pass
        assert str(tmp_path / "run") in str(err.value)
        assert (tmp_path / ".run.lock").exists()


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path) -> None:
    run = tmp_path / "run"
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with run_dir_lock(run):
                pass
        except BaseException as exc:
            errors.append(exc)

    with run_dir_lock(run), run_dir_lock(run):  # re-entrant
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], UserError)
    assert not (tmp_path / ".run.lock").exists()  # removed on release
    with run_dir_lock(run):  # and free again
        pass


def test_only_this_runs_temporaries_are_stale(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run.with_name("run.checkpoints")).mkdir()
    stale = [
        tmp_path / ".run.tmp-a1b2_c3",
        run / ".metrics.tmp123-abcd.json",
        run.with_name("run.checkpoints") / ".checkpoint.tmp9-ff.safetensors",
    ]
    kept = [
        tmp_path / ".run2.tmp-a1b2",  # another run's
        tmp_path / ".run.tmp-x.y",  # not a mkdtemp name
        run / "metrics.json",
        run / "sub" / ".x.tmp1-2.json",  # not at the top of the run directory
    ]
    for path in stale + kept:
        path.write_text("x")
    assert remove_stale_temporaries(run) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


def test_taking_the_lock_removes_stale_temporaries_with_a_warning(tmp_path) -> None:
    (tmp_path / ".run.tmp-abc").mkdir()
    with pytest.warns(StaleFilesWarning, match="interrupted run"), run_dir_lock(tmp_path / "run"):
        pass
    assert leftovers(tmp_path) == []


def disk_full(_path: Path) -> None:
    raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_full_disk_is_an_os_error_naming_the_destination(tmp_path) -> None:
    with pytest.raises(OSError) as err:
        write_directory_atomically(tmp_path / "run", disk_full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "run")
    with pytest.raises(OSError) as err:
        replace_atomically(tmp_path / "m.json", disk_full)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_of_a_writer_pass_unchanged(tmp_path) -> None:
    def bug(_path: Path) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        write_directory_atomically(tmp_path / "run", bug)
    with pytest.raises(KeyError):
        replace_atomically(tmp_path / "m.json", bug)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, reader, message",
    [
        (b"a: [1", read_yaml_mapping, "not valid YAML"),
        (b"- 1", read_yaml_mapping, "holds a list, not a mapping"),
        (b"", read_yaml_mapping, "holds nothing"),
        (b"\xff\xfe", read_yaml_mapping, "not UTF-8"),
        (b"{", read_json, "not valid JSON"),
        (b"[" * 100_000, read_json, "not valid JSON"),
        (b"\xff", read_json, "not UTF-8"),
    ],
)
def test_strict_readers_name_the_file(tmp_path, content, reader, message) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        reader(path, "fix it")
    assert str(path) in str(err.value) and "fix it" in str(err.value)


def test_theta0_carries_the_fingerprint_of_what_it_depends_on(tmp_path) -> None:
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.original import (
        _load_original,
        _save_original,
        original_fingerprint,
    )

    config = default_config("mnist-cnn")

    def fingerprint_of(*sets: str) -> str:
        return original_fingerprint(resolve_plan(apply_overrides(config, list(sets))))

    fingerprint = fingerprint_of()
    for key, value in (("epochs", 7), ("lr", 0.5)):  # immunization settings: same θ0
        assert fingerprint_of(f"train.{key}={value}") == fingerprint
    assert fingerprint_of("method.harmful_weight=3") == fingerprint
    assert fingerprint_of(f"model.cache_dir={tmp_path}", "data.num_workers=2") == fingerprint
    other = fingerprint_of("train.pretrain_epochs=3")
    assert other != fingerprint
    path = tmp_path / "ckpt" / "original.safetensors"
    _save_original(path, {"w": torch.ones(2)}, fingerprint, [2.5, 1.25])
    assert leftovers(tmp_path) == []
    tensors, losses = _load_original(path, fingerprint)
    assert torch.equal(tensors["w"], torch.ones(2)) and losses == [2.5, 1.25]  # resumed runs
    with pytest.raises(UserError, match="another configuration") as err:
        _load_original(path, other)
    assert str(path) in str(err.value)


def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path) -> None:
    from condimmune.deep.checkpoint import load_checkpoint

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_file({"model.weight": torch.zeros(2, 2)}, tmp_path / "checkpoint.safetensors")
    data = (tmp_path / "checkpoint.safetensors").read_bytes()
    (tmp_path / "checkpoint.safetensors").write_bytes(data[:-4])
    with pytest.raises(UserError, match="not a readable safetensors file") as err:
        load_checkpoint(tmp_path, model, optimizer, "fp")
    assert str(tmp_path / "checkpoint.safetensors") in str(err.value)


def test_a_damaged_image_is_refused_naming_it(tmp_path) -> None:
    from condimmune.deep.images import _ImageFile

    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="not a readable image") as err:
        _ImageFile(tmp_path / "x.jpg")()
    assert str(tmp_path / "x.jpg") in str(err.value)
