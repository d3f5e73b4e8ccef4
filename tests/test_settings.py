"""settings: environment variables resolved at call time, the cache folder and its CACHEDIR.TAG."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from stemsplit import settings

ALL_VARS = (
    "STEMSPLIT_CACHE_DIR",
    "STEMSPLIT_OFFLINE",
    "STEMSPLIT_MODEL_URL",
    "STEMSPLIT_DEBUG",
    "STEMSPLIT_CPU_BACKEND",
    *settings.CA_BUNDLE_VARS,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ALL_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " y ", "t"])
def test_is_true_accepts_the_usual_spellings_of_yes(value: str) -> None:
    assert settings._is_true(value)


@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "off", "2", "enable"])
def test_is_true_rejects_everything_else(value: str | None) -> None:
    assert not settings._is_true(value)


def test_cache_dir_defaults_to_the_platform_cache() -> None:
    assert settings.cache_dir() == platformdirs.user_cache_path("stemsplit")
    assert settings.checkpoints_dir() == platformdirs.user_cache_path("stemsplit") / "checkpoints"


def test_cache_dir_env_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "a"))
    assert settings.cache_dir() == tmp_path / "a"
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "b"))
    assert settings.cache_dir() == tmp_path / "b"
    assert settings.checkpoints_dir() == tmp_path / "b" / "checkpoints"


def test_cache_dir_expands_the_home_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", "~/models")
    assert settings.cache_dir() == tmp_path / "models"


def test_empty_cache_dir_env_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", "  ")
    assert settings.cache_dir() == platformdirs.user_cache_path("stemsplit")


def test_ensure_cache_dir_creates_folders_and_a_valid_cachedir_tag(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    folder = settings.ensure_cache_dir(root)

    assert folder == root / "checkpoints" and folder.is_dir()
    tag = (root / "CACHEDIR.TAG").read_bytes()
    # The spec (bford.info/cachedir) requires exactly this 43-byte signature at the start.
    assert tag.startswith(b"Signature: 8a477f597d28d172789f06886806bc55")


def test_ensure_cache_dir_keeps_an_existing_tag(tmp_path: Path) -> None:
    (tmp_path / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n# mine\n")
    settings.ensure_cache_dir(tmp_path)
    assert (tmp_path / "CACHEDIR.TAG").read_text().endswith("# mine\n")


def test_ensure_cache_dir_uses_the_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path))
    assert settings.ensure_cache_dir() == tmp_path / "checkpoints"
    assert (tmp_path / "CACHEDIR.TAG").is_file()


def test_offline_reads_env_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.offline() is False
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "yes")
    assert settings.offline() is True
    assert settings.offline(False) is False
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "0")
    assert settings.offline() is False
    assert settings.offline(True) is True


def test_model_base_url_always_ends_with_a_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.model_base_url() is None
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", "https://mirror.example/demucs")
    assert settings.model_base_url() == "https://mirror.example/demucs/"
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", "https://mirror.example/demucs/")
    assert settings.model_base_url() == "https://mirror.example/demucs/"
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", "")
    assert settings.model_base_url() is None


def test_debug_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.debug() is False
    monkeypatch.setenv("STEMSPLIT_DEBUG", "1")
    assert settings.debug() is True


def test_ca_bundle_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.ca_bundle() is None
    monkeypatch.setenv("SSL_CERT_DIR", "/certs")
    assert settings.ca_bundle() == "/certs"
    monkeypatch.setenv("SSL_CERT_FILE", "/ssl.pem")
    assert settings.ca_bundle() == "/ssl.pem"
    monkeypatch.setenv("CURL_CA_BUNDLE", "/curl.pem")
    assert settings.ca_bundle() == "/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/requests.pem")
    assert settings.ca_bundle() == "/requests.pem"


def test_cpu_backend_is_auto_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.cpu_backend() == "auto"
    monkeypatch.setenv("STEMSPLIT_CPU_BACKEND", " OpenVINO ")
    assert settings.cpu_backend() == "openvino"
    monkeypatch.setenv("STEMSPLIT_CPU_BACKEND", "")
    assert settings.cpu_backend() == "auto"
