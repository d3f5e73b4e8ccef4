"""The model registry and the library functions behind ``stemsplit models ...``.

The released registry is checked against the spec's facts; everything that touches files or the
network uses a test registry of small random payloads named like official files, served by a
loopback server.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from httpserver import LoopbackServer
from stemsplit.errors import (
    CheckpointError,
    ChecksumError,
    CorruptCacheError,
    DownloadError,
    ModelUnavailableError,
    OfflineModeError,
    UnknownModelError,
    UnknownModelFileError,
)
from stemsplit.weights import download
from stemsplit.weights import registry as models
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.download import DownloadOptions, Transport
from stemsplit.weights.registry import MODELS, ModelSpec, WeightFile, make_registry

FAST = DownloadOptions(connect_timeout_s=2.0, read_timeout_s=2.0, max_attempts=2, backoff_s=0.001)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("STEMSPLIT_OFFLINE", "STEMSPLIT_MODEL_URL", "STEMSPLIT_CACHE_DIR", *PROXY_VARS):
        monkeypatch.delenv(var, raising=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the released registry ---------------------------------------------------------------------

# Facts from htdemucs-spec.md §3.3 (files and bag yamls) and §6 (paper Table 1).
SPEC_FILES = {
    "htdemucs": ["955717e8-8726e21a.th"],
    "htdemucs_ft": [
        "f7e0c4bc-ba3fe64a.th",
        "d12395a8-e57c48e6.th",
        "92cfc3b6-ef3bcb9c.th",
        "04573f0d-f3cf25b2.th",
    ],
    "htdemucs_6s": ["5c90dfd2-34c22ccb.th"],
    "hdemucs_mmi": ["75fc33f5-1941ce65.th"],
}
SPEC_SDR = {"htdemucs": 8.80, "htdemucs_ft": 9.00, "htdemucs_6s": None, "hdemucs_mmi": 8.34}


def test_registry_has_exactly_the_released_models() -> None:
    assert set(MODELS) == set(SPEC_FILES)
    assert models.DEFAULT_MODEL == "htdemucs"


@pytest.mark.parametrize("name", sorted(SPEC_FILES))
def test_registry_files_match_the_spec(name: str) -> None:
    spec = MODELS[name]
    assert [wf.filename for wf in spec.files] == SPEC_FILES[name]
    for wf in spec.files:
        signature, prefix = wf.filename.removesuffix(".th").split("-")
        assert wf.signature == signature
        assert wf.sha256 == prefix  # the hash checked is the one the official name carries
        assert not wf.full_hash
        # Unknown (not invented, nor taken from a third party): a cached file is checked by its hash.
        assert wf.size_bytes is None
        assert wf.url() == f"https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/{wf.filename}"
    assert spec.description and "\n" not in spec.description
    assert spec.origin


def test_default_model_url_is_the_one_in_the_spec() -> None:
    assert MODELS["htdemucs"].files[0].url() == (
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    )


def test_stems_and_bag_weights() -> None:
    assert MODELS["htdemucs"].sources == ("drums", "bass", "other", "vocals")
    assert MODELS["htdemucs_6s"].sources == ("drums", "bass", "other", "vocals", "guitar", "piano")
    ft = MODELS["htdemucs_ft"]
    assert ft.is_bag and not MODELS["htdemucs"].is_bag
    weights = ft.bag_weights()
    assert all(weights[m][k] == (1.0 if m == k else 0.0) for m in range(4) for k in range(4))
    assert MODELS["htdemucs_6s"].bag_weights() == ((1.0,) * 6,)


@pytest.mark.parametrize("name", sorted(SPEC_SDR))
def test_published_sdr(name: str) -> None:
    sdr = MODELS[name].sdr
    if SPEC_SDR[name] is None:
        assert sdr is None
    else:
        assert sdr is not None and sdr.overall == SPEC_SDR[name]
        assert [stem for stem, _ in sdr.per_stem] == list(MODELS[name].sources)


def test_per_stem_sdr_from_the_paper() -> None:
    sdr, v3 = MODELS["htdemucs"].sdr, MODELS["hdemucs_mmi"].sdr
    assert sdr is not None and v3 is not None
    assert dict(sdr.per_stem) == {"drums": 10.05, "bass": 9.78, "other": 6.42, "vocals": 8.93}
    assert dict(v3.per_stem) == {"drums": 9.31, "bass": 9.13, "other": 6.18, "vocals": 8.75}  # "retrained"


def test_windows_are_the_training_window_or_the_bag_segment() -> None:
    from fractions import Fraction

    assert {name: spec.segment for name, spec in MODELS.items()} == {
        "htdemucs": Fraction(39, 5), "htdemucs_ft": Fraction(39, 5), "htdemucs_6s": Fraction(39, 5),
        "hdemucs_mmi": Fraction(44),  # its bag yaml's segment (spec §3.3), applied by demucs 4.1.0
    }  # fmt: skip


def test_auto_picks_hdemucs_mmi_from_seven_minutes_on() -> None:
    assert models.auto_models() == ("htdemucs", "hdemucs_mmi")
    assert [models.pick_auto(s) for s in (None, 0.0, 419.99, 420.0, 3600.0)] == [
        "htdemucs", "htdemucs", "htdemucs", "hdemucs_mmi", "hdemucs_mmi",
    ]  # fmt: skip
    assert all(name in MODELS for name in models.auto_models())


def test_unknown_name_lists_the_valid_names_and_the_closest() -> None:
    with pytest.raises(UnknownModelError) as info:
        models.get_model_spec("htdemucs-ft")
    err = info.value
    assert isinstance(err, LookupError)
    assert err.suggestion == "htdemucs_ft"
    assert err.known == tuple(MODELS)
    for name in MODELS:
        assert name in str(err)
    assert "Did you mean 'htdemucs_ft'" in str(err)


def test_unknown_name_far_from_everything_has_no_suggestion() -> None:
    with pytest.raises(UnknownModelError) as info:
        models.get_model_spec("zzzzzz")
    assert info.value.suggestion is None
    assert "Did you mean" not in str(info.value)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        MODELS["x"] = MODELS["htdemucs"]  # type: ignore[index]


def test_make_registry_rejects_duplicates() -> None:
    spec = MODELS["htdemucs"]
    with pytest.raises(ValueError, match="duplicate"):
        make_registry(spec, spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": ((1.0, 0.0),)},  # wrong width
        {"weights": ((0.0, 0.0, 0.0, 0.0),)},  # no model contributes
        {"files": ()},
        {"sources": ("a", "a")},
    ],
)
def test_model_spec_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "name": "x",
        "description": "d",
        "sources": ("drums", "bass", "other", "vocals"),
        "files": MODELS["htdemucs"].files,
    }
    with pytest.raises(ValueError):
        ModelSpec(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("sha", ["1234567", "XYZ45678", "a" * 65])
def test_weight_file_rejects_bad_hashes(sha: str) -> None:
    with pytest.raises(ValueError):
        WeightFile("s", "s-12345678.th", "f/", sha)


def test_weight_file_url_with_a_mirror_keeps_the_sub_folder() -> None:
    wf = MODELS["htdemucs"].files[0]
    assert (
        wf.url("https://mirror.example/m")
        == "https://mirror.example/m/hybrid_transformer/955717e8-8726e21a.th"
    )


# --- a test registry served from loopback ------------------------------------------------------


def _weight(data: bytes, signature: str) -> WeightFile:
    digest = sha256(data)
    return WeightFile(signature, f"{signature}-{digest[:8]}.th", "hybrid_transformer/", digest[:8])


@dataclass
class World:
    server: LoopbackServer
    registry: models.Registry
    cache: Path
    data: dict[str, bytes]  # by file name

    @property
    def base(self) -> str:
        return self.server.url

    def kw(self) -> dict[str, object]:
        return {"registry": self.registry, "root": self.cache}

    def path(self, filename: str) -> Path:
        return self.cache / "checkpoints" / filename


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    rng = random.Random(1234)
    solo, first, second = (rng.randbytes(n) for n in (30_000, 20_000, 25_000))
    files = [_weight(solo, "aaaa0001"), _weight(first, "bbbb0001"), _weight(second, "bbbb0002")]
    registry = make_registry(
        ModelSpec("tiny", "A tiny test model.", ("drums", "bass"), (files[0],)),
        ModelSpec(
            "tiny_bag",
            "A bag of two specialists.",
            ("drums", "bass"),
            (files[1], files[2]),
            weights=((1.0, 0.0), (0.0, 1.0)),
        ),
    )
    data = {wf.filename: blob for wf, blob in zip(files, (solo, first, second), strict=True)}
    with LoopbackServer() as server:
        for filename, blob in data.items():
            server.serve(f"/hybrid_transformer/{filename}", blob)
        yield World(server, registry, tmp_path / "cache", data)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(download.TEMP_SUFFIX)] if folder.exists() else []


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> object:
        attempts.append("socket")
        raise OSError("test: sockets are forbidden")

    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    return attempts


def test_resolve_downloads_a_bag_and_returns_paths_and_weights(world: World) -> None:
    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve(
        "tiny_bag"
    )

    spec = world.registry["tiny_bag"]
    assert resolved.spec is spec
    assert resolved.paths == tuple(world.path(wf.filename) for wf in spec.files)
    assert [p.read_bytes() for p in resolved.paths] == [world.data[wf.filename] for wf in spec.files]
    assert resolved.weights == ((1.0, 0.0), (0.0, 1.0))
    assert (world.cache / "CACHEDIR.TAG").is_file()
    assert leftovers(world.cache / "checkpoints") == []


def test_resolve_a_second_time_uses_the_cache(world: World) -> None:
    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve("tiny")
    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve("tiny")
    assert len(world.server.hits) == 1


def test_model_url_env_replaces_the_base_url(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSPLIT_MODEL_URL", world.base + "mirror")
    filename = world.registry["tiny"].files[0].filename
    world.server.serve(f"/mirror/hybrid_transformer/{filename}", world.data[filename])

    ModelCache(**world.kw(), transport=Transport(options=FAST)).resolve("tiny")

    assert [h.path for h in world.server.hits] == [f"/mirror/hybrid_transformer/{filename}"]


def test_cache_dir_env_is_used_by_default(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "env-cache"))
    resolved = ModelCache(
        registry=world.registry, base_url=world.base, transport=Transport(options=FAST)
    ).resolve("tiny")
    assert resolved.paths[0].parent == tmp_path / "env-cache" / "checkpoints"
    assert ModelCache().folder() == tmp_path / "env-cache" / "checkpoints"


def test_resolve_offline_names_model_url_path_and_ways_out(
    world: World, no_sockets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEMSPLIT_OFFLINE", "1")
    wf = world.registry["tiny"].files[0]

    with pytest.raises(OfflineModeError) as info:
        ModelCache(base_url=world.base, **world.kw()).resolve("tiny")

    message = str(info.value)
    assert "'tiny'" in message
    assert wf.url(world.base) in message
    assert str(world.path(wf.filename)) in message
    assert "go online" in message and "stemsplit models import" in message
    assert no_sockets == []
    assert not world.cache.exists()  # nothing created either


def test_resolve_offline_with_cached_files_works_without_sockets(world: World, no_sockets: list[str]) -> None:
    for wf in world.registry["tiny_bag"].files:
        world.path(wf.filename).parent.mkdir(parents=True, exist_ok=True)
        world.path(wf.filename).write_bytes(world.data[wf.filename])

    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(offline=True)).resolve(
        "tiny_bag"
    )

    assert len(resolved.paths) == 2
    assert no_sockets == []


def test_resolve_wrong_hash_from_the_server_leaves_nothing(world: World) -> None:
    wf = world.registry["tiny"].files[0]
    impostor = random.Random(99).randbytes(30_000)
    world.server.serve(f"/hybrid_transformer/{wf.filename}", impostor)

    with pytest.raises(ChecksumError) as info:
        ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve("tiny")

    assert isinstance(info.value, ModelUnavailableError)  # what the CLI maps to exit code 3
    assert info.value.expected == sha256(world.data[wf.filename])[:8]
    assert info.value.actual == sha256(impostor)
    assert not world.path(wf.filename).exists()
    assert leftovers(world.path(wf.filename).parent) == []


@pytest.mark.parametrize("force", [False, True], ids=["first-use", "force"])
def test_resolve_download_failure_names_model_url_path_and_ways_out(world: World, force: bool) -> None:
    wf = world.registry["tiny"].files[0]
    base = world.base + "nowhere/"  # a server without the file: HTTP 404

    with pytest.raises(DownloadError) as info:
        ModelCache(base_url=base, **world.kw(), transport=Transport(options=FAST)).resolve(
            "tiny", force=force
        )

    first, *rest = str(info.value).splitlines()
    assert "model 'tiny'" in first and wf.filename in first and "HTTP 404" in first
    assert f"  url:   {wf.url(base)}" in rest
    assert f"  cache: {world.path(wf.filename)}" in rest
    assert any("stemsplit models import FILE" in line for line in rest)
    assert any("STEMSPLIT_MODEL_URL" in line for line in rest)


# --- list --------------------------------------------------------------------------------------


def test_list_reports_cache_state_without_touching_anything(world: World) -> None:
    before = ModelCache(base_url=world.base, **world.kw()).status()
    assert [row.name for row in before] == ["tiny", "tiny_bag"]
    assert not any(row.cached for row in before)
    assert before[0].size_bytes is None
    assert not world.cache.exists()

    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve("tiny")
    after = {row.name: row for row in ModelCache(base_url=world.base, **world.kw()).status()}

    tiny_file = world.registry["tiny"].files[0]
    assert after["tiny"].cached and not after["tiny_bag"].cached
    assert after["tiny"].size_bytes == len(world.data[tiny_file.filename])
    assert after["tiny"].files[0].url == tiny_file.url(world.base)
    assert after["tiny"].files[0].path == world.path(tiny_file.filename)


def test_list_rows_are_json_serialisable() -> None:
    rows = ModelCache().status()
    decoded = json.loads(json.dumps([row.to_dict() for row in rows]))
    by_name = {row["name"]: row for row in decoded}
    assert by_name["htdemucs"]["default"] is True
    assert by_name["htdemucs_ft"]["default"] is False
    assert by_name["htdemucs"]["stems"] == ["drums", "bass", "other", "vocals"]
    assert by_name["htdemucs"]["sdr"]["overall"] == 8.80
    assert by_name["htdemucs_6s"]["sdr"] is None
    assert len(by_name["htdemucs_ft"]["files"]) == 4


# --- download ----------------------------------------------------------------------------------


def test_download_all(world: World) -> None:
    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(None)
    assert [r.spec.name for r in resolved] == ["tiny", "tiny_bag"]
    assert all(row.cached for row in ModelCache(base_url=world.base, **world.kw()).status())


def test_download_checks_every_name_before_downloading(world: World) -> None:
    with pytest.raises(UnknownModelError):
        ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(
            ["tiny", "tinny_bag"]
        )
    assert world.server.hits == []


def test_download_force_replaces_a_damaged_cached_file(world: World) -> None:
    wf = world.registry["tiny"].files[0]
    path = world.path(wf.filename)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"damaged")

    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(
        ["tiny"], force=True
    )

    assert path.read_bytes() == world.data[wf.filename]


# --- import ------------------------------------------------------------------------------------


def test_import_a_right_file_installs_a_verified_copy(world: World, tmp_path: Path) -> None:
    wf = world.registry["tiny"].files[0]
    src = tmp_path / "downloads" / wf.filename
    src.parent.mkdir()
    src.write_bytes(world.data[wf.filename])

    result = ModelCache(**world.kw()).import_file(src)

    assert result.dest == world.path(wf.filename)
    assert result.models == ("tiny",)
    assert result.dest.read_bytes() == world.data[wf.filename]
    assert src.read_bytes() == world.data[wf.filename]  # the user's file is left alone
    assert (world.cache / "CACHEDIR.TAG").is_file()
    resolved = ModelCache(**world.kw(), transport=Transport(offline=True)).resolve(
        "tiny"
    )  # usable offline now
    assert resolved.paths == (result.dest,)


def test_import_recognises_a_renamed_file_by_its_hash(world: World, tmp_path: Path) -> None:
    wf = world.registry["tiny_bag"].files[1]
    src = tmp_path / f"{wf.filename.removesuffix('.th')} (1).th"  # as a browser saves a second copy
    src.write_bytes(world.data[wf.filename])

    result = ModelCache(**world.kw()).import_file(src)

    assert result.dest == world.path(wf.filename)
    assert result.models == ("tiny_bag",)


def test_import_a_wrong_file_is_refused_with_both_hashes(world: World, tmp_path: Path) -> None:
    wf = world.registry["tiny"].files[0]
    wrong = random.Random(7).randbytes(30_000)
    src = tmp_path / wf.filename
    src.write_bytes(wrong)

    with pytest.raises(ChecksumError) as info:
        ModelCache(**world.kw()).import_file(src)

    expected = sha256(world.data[wf.filename])[:8]
    assert info.value.expected == expected and expected in str(info.value)
    assert info.value.actual == sha256(wrong) and sha256(wrong) in str(info.value)
    assert not world.path(wf.filename).exists()
    assert leftovers(world.path(wf.filename).parent) == []


def test_import_an_unrelated_file_is_refused(world: World, tmp_path: Path) -> None:
    src = tmp_path / "song.mp3"
    src.write_bytes(b"ID3 not a model")

    with pytest.raises(UnknownModelFileError) as info:
        ModelCache(**world.kw()).import_file(src)

    assert info.value.actual == sha256(b"ID3 not a model")
    assert not world.cache.exists()


def test_import_a_missing_file(world: World, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelCache(**world.kw()).import_file(tmp_path / "nope.th")


# --- verify ------------------------------------------------------------------------------------


def test_verify_finds_a_corrupt_cached_file(world: World) -> None:
    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(None)
    bad = world.registry["tiny_bag"].files[0]
    damaged = bytearray(world.data[bad.filename])
    damaged[len(damaged) // 2] ^= 0x01  # same size: a normal load still trusts it
    world.path(bad.filename).write_bytes(bytes(damaged))

    results = {r.filename: r for r in ModelCache(**world.kw()).verify()}

    assert {f: r.state for f, r in results.items()} == {
        world.registry["tiny"].files[0].filename: "ok",
        bad.filename: "corrupt",
        world.registry["tiny_bag"].files[1].filename: "ok",
    }
    assert results[bad.filename].actual == sha256(bytes(damaged))
    assert results[bad.filename].expected == bad.sha256
    assert results[bad.filename].model == "tiny_bag"
    json.dumps([r.to_dict() for r in results.values()])


def test_verify_reports_missing_files_and_checks_names(world: World) -> None:
    results = ModelCache(**world.kw()).verify(["tiny"])
    assert [(r.model, r.state, r.actual) for r in results] == [("tiny", "missing", None)]
    with pytest.raises(UnknownModelError):
        ModelCache(**world.kw()).verify(["tiny", "huge"])


# --- remove and path ---------------------------------------------------------------------------


def test_remove_deletes_files_and_leftover_temp_files(world: World) -> None:
    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(None)
    bag_paths = [world.path(wf.filename) for wf in world.registry["tiny_bag"].files]
    stale = bag_paths[0].with_name(bag_paths[0].name + ".cafebabe" + download.TEMP_SUFFIX)
    stale.write_bytes(b"half")

    removed = ModelCache(**world.kw()).remove(["tiny_bag"])

    assert removed == bag_paths
    assert not any(p.exists() for p in bag_paths) and not stale.exists()
    assert world.path(world.registry["tiny"].files[0].filename).exists()  # other models untouched
    assert ModelCache(**world.kw()).remove(["tiny_bag"]) == []


def test_remove_checks_every_name_before_deleting(world: World) -> None:
    ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).download(["tiny"])
    with pytest.raises(UnknownModelError):
        ModelCache(**world.kw()).remove(["tiny", "nope"])
    assert world.path(world.registry["tiny"].files[0].filename).exists()


def test_cache_folder_is_the_checkpoints_folder(tmp_path: Path) -> None:
    assert ModelCache(root=tmp_path).folder() == tmp_path / "checkpoints"


# --- loading through the checkpoint loader -----------------------------------------------------


def test_load_resolved_runs_the_loader_per_file_in_bag_order(world: World) -> None:
    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve(
        "tiny_bag"
    )
    loaded = ModelCache().load(resolved, lambda path: path.read_bytes())
    assert loaded == [world.data[wf.filename] for wf in world.registry["tiny_bag"].files]


def _failing_loader(path: Path) -> object:
    raise CheckpointError("not a zip archive", path=path)


def test_a_damaged_cached_file_is_reported_with_the_fix(world: World) -> None:
    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve(
        "tiny"
    )
    resolved.paths[0].write_bytes(b"\0" * len(world.data[resolved.spec.files[0].filename]))

    with pytest.raises(CorruptCacheError) as info:
        ModelCache().load(resolved, _failing_loader)

    err = info.value
    assert isinstance(err, ModelUnavailableError)
    assert isinstance(err.__cause__, CheckpointError)
    assert err.model == "tiny" and err.path == resolved.paths[0]
    assert "stemsplit models remove tiny" in err.fix and "stemsplit models download tiny" in err.fix
    assert err.fix in str(err) and "stemsplit models verify" in str(err)


def test_a_verified_file_that_fails_to_load_keeps_the_loader_error(world: World) -> None:
    """Re-downloading cannot fix a file whose hash is right, so no cache advice is given."""
    resolved = ModelCache(base_url=world.base, **world.kw(), transport=Transport(options=FAST)).resolve(
        "tiny"
    )

    with pytest.raises(CheckpointError, match="not a zip archive") as info:
        ModelCache().load(resolved, _failing_loader)

    assert not isinstance(info.value, CorruptCacheError)
    assert info.value.__cause__ is None


def test_unwritable_cache_root_is_a_typed_download_error(world: World, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache root should be")
    with pytest.raises(ModelUnavailableError, match="STEMSPLIT_CACHE_DIR"):
        ModelCache(
            registry=world.registry, root=blocker, base_url=world.base, transport=Transport(options=FAST)
        ).resolve("tiny")
    assert world.server.hits == []
