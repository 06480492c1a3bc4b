"""Finding darknet and telling the forks apart."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from darknet_runner import binary
from darknet_runner.binary import ALEXEYAB, HANK, PJREDDIE, DarknetNotFound

# What each fork prints for `darknet version` (facts §0 and each fork's src/darknet.c:main).
PJ_TEXT = "Not an option: version\n"
AB_TEXT = " GPU isn't used \n OpenCV isn't used - data augmentation will be slow \nNot an option: version\n"
AB_GPU_TEXT = " CUDA-version: 12020 (12020), cuDNN: 8.9.7, GPU count: 1  \n OpenCV version: 4.6.0\n"
HANK_CPU_TEXT = 'Darknet V4 "Slate" v4.0-51-g53faaf9c\nDarknet is compiled to use the CPU. GPU is disabled.\n'
HANK_GPU_TEXT = 'Darknet V5 "Moonlit" v5.1-104-gf684e1d7\nCUDA runtime version 12020\n=> 0: NVIDIA GeForce\n'


@pytest.fixture(autouse=True)
def _fresh_cache():
    binary.clear_cache()
    yield
    binary.clear_cache()


def _script(path: Path, text: str, before: str = "", after: str = "") -> Path:
    """An executable that prints ``text`` the way a darknet build answers ``darknet version``."""
    output = path.with_name(path.name + ".out")
    output.write_text(text)
    path.write_text(f"#!/bin/sh\n{before}/bin/cat '{output}'\n{after}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_empty_output_is_no_fork():
    assert binary.detect_fork("") is None
    with pytest.raises(DarknetNotFound, match="^d is not darknet: it did not answer like any darknet fork$"):
        binary.info_from_output("d", "")


def test_a_program_that_exits_0_without_darknet_text_is_refused(tmp_path):
    """/usr/bin/true (real) exits 0 and prints nothing: it is not 'pjreddie darknet'."""
    true = Path("/usr/bin/true").resolve()
    with pytest.raises(DarknetNotFound) as err:
        binary.find_darknet(str(true))
    assert str(err.value) == f"{true} is not darknet: it did not answer like any darknet fork"
    chatty = _script(tmp_path / "hello", "hello, this is not the program you are looking for\n")
    with pytest.raises(DarknetNotFound, match="hello is not darknet: it did not answer like any darknet fork$"):
        binary.find_darknet(str(chatty))


def test_a_folder_and_a_file_that_is_not_executable_are_refused(tmp_path):
    with pytest.raises(DarknetNotFound) as err:
        binary.find_darknet(str(tmp_path))
    assert str(err.value) == f"{tmp_path} is a folder, not a darknet binary: give the darknet program inside it"
    plain = tmp_path / "darknet"
    plain.write_text(PJ_TEXT)
    with pytest.raises(DarknetNotFound) as err:
        binary.find_darknet(str(plain))
    assert str(err.value) == f"{plain} is not executable: make it so (chmod +x) or give the darknet binary itself"


def test_the_search_passes_over_a_program_that_is_not_darknet(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    _script(tmp_path / "bin" / "darknet", "")  # a darknet on PATH that is not darknet
    real = _script(tmp_path / "real", PJ_TEXT)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(binary, "FALLBACK_PATHS", (str(real),))
    monkeypatch.delenv("DARKNET", raising=False)
    assert binary.find_darknet().path == str(real)


def test_usage_without_arguments_is_darknets_answer(tmp_path):
    """A build whose ``version`` answer is unknown still says ``usage: darknet <function>`` with no argument."""
    script = tmp_path / "darknet"
    script.write_text('#!/bin/sh\n[ "$#" = 0 ] && echo "usage: ./darknet <function>"\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert binary.find_darknet(str(script)).fork == PJREDDIE


@pytest.mark.parametrize("fixture, fork", [("alexeyab_cpu_yolov3tiny_map.log", ALEXEYAB),
                                           ("hankai_cpu_yolov3tiny_map.log", HANK),
                                           ("hankai_detector_map_nocolour.log", HANK)])
def test_the_banner_each_fork_printed_is_recognised(tmp_path, fixture, fork):
    """The first lines of real runs of each fork (what the binary prints before anything else)."""
    from tests.support.fixtures import DARKNET_FIXTURES

    banner = "".join((DARKNET_FIXTURES / fixture).read_text(errors="replace").splitlines(keepends=True)[:3])
    assert binary.find_darknet(str(_script(tmp_path / "darknet", banner))).fork == fork


def test_real_debian_darknet_answers_with_usage_when_called_bare(darknet_bin):
    assert binary.detect_fork(binary.probe(Path(darknet_bin), ())) == PJREDDIE


@pytest.mark.parametrize("text, fork", [(PJ_TEXT, PJREDDIE), ("usage: darknet <function>\n", PJREDDIE),
                                        (AB_TEXT, ALEXEYAB), (AB_GPU_TEXT, ALEXEYAB),
                                        (HANK_CPU_TEXT, HANK), (HANK_GPU_TEXT, HANK)])
def test_detect_fork(text, fork):
    assert binary.detect_fork(text) == fork


def test_capabilities_per_fork():
    pj, ab = binary.info_from_output("d", PJ_TEXT), binary.info_from_output("d", AB_TEXT)
    hank_cpu, hank_gpu = binary.info_from_output("d", HANK_CPU_TEXT), binary.info_from_output("d", HANK_GPU_TEXT)
    assert (pj.supports_map, pj.supports_dont_show, pj.supports_nocolour, pj.needs_yes_prompt) == (
        False, False, False, False)
    assert (ab.supports_map, ab.supports_dont_show, ab.supports_nocolour, ab.needs_yes_prompt) == (
        True, True, False, False)
    assert (hank_cpu.supports_nocolour, hank_cpu.needs_yes_prompt) == (True, True)
    assert (hank_gpu.supports_nocolour, hank_gpu.needs_yes_prompt) == (True, False)


def test_debian_darknet_is_pjreddie(darknet_bin):
    info = binary.find_darknet(darknet_bin)
    assert info.path == str(Path(darknet_bin).resolve())
    assert (info.fork, info.supports_map, info.supports_dont_show) == (PJREDDIE, False, False)
    assert "Not an option: version" in info.version_text


def test_setting_that_does_not_exist_names_it(tmp_path):
    with pytest.raises(DarknetNotFound, match=f"the darknet binary '{tmp_path}/nope' does not exist"):
        binary.find_darknet(str(tmp_path / "nope"))


def test_nothing_found_lists_the_ways_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DARKNET", raising=False)
    monkeypatch.setattr(binary, "FALLBACK_PATHS", ())
    with pytest.raises(DarknetNotFound) as err:
        binary.find_darknet()
    message = str(err.value)
    assert "apt-get install darknet" in message and "AlexeyAB" in message and "hank-ai" in message


def test_order_is_setting_then_env_then_path(tmp_path, monkeypatch):
    first = _script(tmp_path / "first", AB_TEXT)
    env = _script(tmp_path / "env-darknet", HANK_CPU_TEXT)
    (tmp_path / "bin").mkdir()
    _script(tmp_path / "bin" / "darknet", PJ_TEXT)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("DARKNET", str(env))
    assert binary.find_darknet(str(first)).fork == ALEXEYAB
    assert binary.find_darknet().fork == HANK
    monkeypatch.delenv("DARKNET")
    assert binary.find_darknet().path == str(tmp_path / "bin" / "darknet")


def test_probe_is_cached_per_path_and_mtime(tmp_path):
    counter = tmp_path / "calls"
    script = _script(tmp_path / "darknet", AB_TEXT, before=f"/bin/echo x >> '{counter}'\n")
    assert binary.find_darknet(str(script)).fork == ALEXEYAB
    assert binary.find_darknet(str(script)).fork == ALEXEYAB
    assert counter.read_text() == "x\n"
    _script(script, HANK_CPU_TEXT, before=f"/bin/echo x >> '{counter}'\n")
    later = time.time() + 5
    os.utime(script, (later, later))
    assert binary.find_darknet(str(script)).fork == HANK
    assert counter.read_text() == "x\nx\n"


def test_a_binary_that_hangs_is_cut_short(tmp_path, monkeypatch):
    monkeypatch.setattr(binary, "PROBE_TIMEOUT_S", 0.5)
    script = _script(tmp_path / "darknet", AB_TEXT, after="exec /bin/sleep 30\n")
    start = time.monotonic()
    assert binary.find_darknet(str(script)).fork == ALEXEYAB
    assert time.monotonic() - start < 5
