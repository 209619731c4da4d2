"""The gateway as a user gets it: a wheel built from this tree, installed without `-e`.

One build (offline: `--no-build-isolation --no-index`, with the setuptools the test extras
install) serves every test here.  The wheel must hold exactly the gateway's own import
names and the demo fixtures as package data, byte for byte the repository's `fixtures/`;
installed into a folder of its own, `inference-gateway serve` run from an unrelated
directory must answer the demo model with the catalog shipped inside the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the wheel may add to a host's import names, and nothing else.
TOP_LEVEL = {"adaptors", "core", "frontends", "resource_server_async", "transports"}
SOURCE_ONLY = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "state"
)


def _run(*args: str | Path, cwd: Path, timeout: float = 120) -> None:
    done = subprocess.run(
        [*map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so nothing left in this tree's build/ can slip into the wheel.
    source = tmp_path_factory.mktemp("source") / "inference-gateway"
    shutil.copytree(ROOT, source, ignore=SOURCE_ONLY)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        out,
        source,
        cwd=source,
    )
    [built] = out.glob("inference_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(*pip, "install", "--no-deps", "--no-index", "--target", target, wheel, cwd=target)
    return target


def test_the_wheel_adds_only_the_gateways_own_import_names(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == TOP_LEVEL
    assert not any(name.startswith(("tests/", "bench/", "fixtures/")) for name in names)


def test_the_wheel_holds_every_package_of_the_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [
        init.relative_to(ROOT).as_posix()
        for top in sorted(TOP_LEVEL)
        for init in (ROOT / top).rglob("__init__.py")
    ]
    assert packages
    assert [p for p in packages if p not in names] == []


def test_the_wheel_ships_the_repository_fixtures_as_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.removeprefix("frontends/_fixtures/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("frontends/_fixtures/") and not name.endswith("/")
        }
    source = {
        path.relative_to(ROOT / "fixtures").as_posix(): path.read_bytes()
        for path in (ROOT / "fixtures").rglob("*")
        if path.is_file()
    }
    assert {"clusters.json", "endpoints.json", "examples/clusters.json"} <= set(source)
    assert shipped == source


def _installed_env(installed: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    # The installed copy comes first; the test venv supplies only the dependencies.
    env.update(PYTHONPATH=str(installed), INFERENCE_GATEWAY_STATE_DIR=str(tmp_path / "state"))
    return env


def test_the_installed_package_reads_its_fixtures_with_importlib_resources(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import frontends, frontends.settings as s; print(frontends.__file__); "
            "print(s.Settings().fixtures_dir)",
        ],
        cwd=elsewhere,
        env=_installed_env(installed, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    module, fixtures = map(Path, done.stdout.splitlines())
    assert module == installed / "frontends" / "__init__.py"
    assert fixtures == installed / "frontends" / "_fixtures"


@pytest.mark.e2e
def test_the_installed_command_serves_the_demo_model_from_any_directory(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process = subprocess.Popen(
        [installed / "bin" / "inference-gateway", "serve", "--port", "0"],
        cwd=elsewhere,
        env=_installed_env(installed, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(4)]
        url = re.search(r"on (http://\S+)/v1", banner[0])
        token = re.search(r"your token \(new.*\): (\S+)", banner[3])
        assert url and token, banner
        assert f"fixtures: {installed / 'frontends' / '_fixtures'} " in banner[1]
        reply = httpx.post(
            f"{url[1]}/v1/chat/completions",
            headers={"Authorization": f"Bearer {token[1]}"},
            json={"model": "demo-model", "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert "ping" in reply.json()["choices"][0]["message"]["content"]
        # The status page's files are package data, served from the installed copy.
        page = httpx.get(f"{url[1]}/status", timeout=30)
        assert page.status_code == 200 and "Inference gateway status" in page.text
        script = re.search(r'src="(/status/assets/page\.js\?v=\w+)"', page.text)
        assert script, page.text
        assert "/status/summary" in httpx.get(f"{url[1]}{script[1]}", timeout=30).text
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


# Written in pieces so that this file does not match itself.
MACHINE_PATHS = re.compile(
    "|".join(
        re.escape(piece)
        for piece in ("/" + "work/", "/" + "root/", "/" + "home/", "/" + "Users/", "../" + "shared")
    )
    + r"|/tmp/[A-Za-z]"
)


def _repository_files() -> list[Path]:
    """Tracked files and new ones git does not ignore (a venv, caches and builds are not
    the repository)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [ROOT / name for name in sorted(set(listed.split("\0"))) if name]


def test_no_path_of_a_particular_machine_appears_in_the_repository() -> None:
    files = [path for path in _repository_files() if path.is_file()]
    assert len(files) > 100
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATHS.search(line)
        ]
    assert found == []
