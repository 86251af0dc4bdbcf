"""Board profiles and detection on fake root folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.errors import ConfigError
from edgeops.hardware import BoardProfile, detect_board, get_profile, load_profiles
from edgeops.hardware.boards import normalize_machine


def fake_root(tmp_path: Path, *, model: str | None = None, tegra: str | None = None) -> Path:
    if model is not None:
        (tmp_path / "proc" / "device-tree").mkdir(parents=True)
        # the kernel's device-tree strings end in a NUL byte
        (tmp_path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    if tegra is not None:
        (tmp_path / "etc").mkdir(parents=True)
        (tmp_path / "etc" / "nv_tegra_release").write_text(tegra)
    return tmp_path


def test_every_required_board_has_a_profile() -> None:
    names = set(load_profiles())
    assert {
        "raspberrypi3",
        "raspberrypi4",
        "raspberrypi5",
        "jetson-nano",
        "jetson-orin-nano",
        "generic-x86_64",
        "generic-aarch64",
    } <= names


def test_profiles_roundtrip_and_are_sane() -> None:
    for profile in load_profiles().values():
        assert BoardProfile.from_json(profile.to_json()) == profile
        assert profile.thread_count() >= 1
        assert profile.agent_memory_max_mb >= 128
        if profile.cores is not None and profile.threads is not None:
            assert profile.threads <= profile.cores


@pytest.mark.parametrize(
    ("model", "machine", "expected"),
    [
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "armv7l", "raspberrypi3"),
        ("Raspberry Pi 4 Model B Rev 1.4", "aarch64", "raspberrypi4"),
        ("Raspberry Pi Compute Module 4 Rev 1.0", "aarch64", "raspberrypi4"),
        ("Raspberry Pi 5 Model B Rev 1.0", "aarch64", "raspberrypi5"),
        ("NVIDIA Jetson Nano Developer Kit", "aarch64", "jetson-nano"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "aarch64", "jetson-orin-nano"),
        ("Pine64 RockPro64 v2.1", "aarch64", "generic-aarch64"),
    ],
)
def test_device_tree_model(tmp_path: Path, model: str, machine: str, expected: str) -> None:
    assert detect_board(fake_root(tmp_path, model=model), machine=machine).name == expected


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        (
            "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64",
            "jetson-nano",
        ),
        (
            "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64",
            "jetson-orin-nano",
        ),
        ("# R99 (release), REVISION: 1.0", "generic-aarch64"),
    ],
)
def test_tegra_release_without_device_tree(tmp_path: Path, release: str, expected: str) -> None:
    assert detect_board(fake_root(tmp_path, tegra=release), machine="aarch64").name == expected


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "generic-x86_64"),
        ("AMD64", "generic-x86_64"),
        ("arm64", "generic-aarch64"),
        ("armv7l", "generic-armv7l"),
    ],
)
def test_machine_fallback(tmp_path: Path, machine: str, expected: str) -> None:
    assert detect_board(tmp_path, machine=machine).name == expected


def test_unknown_machine_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no board profile for machine 'riscv64'"):
        detect_board(tmp_path, machine="riscv64")


def test_get_profile_names_the_known_boards() -> None:
    assert get_profile("raspberrypi4").ram_mb == 4096
    with pytest.raises(ConfigError, match="unknown board 'pi9'; known boards"):
        get_profile("pi9")


def test_load_options_per_format_and_architecture() -> None:
    pi3 = get_profile("raspberrypi3")
    on_32bit = pi3.load_options(Path("m.tflite"), machine="armv7l")
    assert (on_32bit.runtime, on_32bit.threads) == ("tflite_runtime", 4)
    assert pi3.load_options(Path("m.tflite"), machine="aarch64").runtime == "ai_edge_litert"
    assert pi3.load_options(Path("m.onnx"), machine="aarch64").runtime == "onnxruntime"
    jetson = get_profile("jetson-orin-nano")
    onnx = jetson.load_options(Path("m.onnx"), machine="aarch64")
    assert onnx.runtime == "onnxruntime"
    assert "TensorrtExecutionProvider" in onnx.delegates
    tflite = jetson.load_options(Path("m.tflite"), machine="aarch64")
    assert (tflite.runtime, tflite.delegates) == ("ai_edge_litert", ())


def test_normalize_machine() -> None:
    assert normalize_machine("ARM64") == "aarch64"
    assert normalize_machine("armv6l") == "armv7l"
    assert normalize_machine("x86_64") == "x86_64"


def test_bad_profile_values_are_refused() -> None:
    entry = get_profile("raspberrypi4").to_json()
    with pytest.raises(ConfigError, match="expected a runtime"):
        BoardProfile.from_json({**entry, "runtime": "tensorflow"})
    with pytest.raises(ConfigError, match="malformed board profile"):
        BoardProfile.from_json({k: v for k, v in entry.items() if k != "cores"})
