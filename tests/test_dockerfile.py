"""The container, read as text: CI has no container engine to build it.

docker-smoke builds and runs the image for real; these tests keep the promises
an operator relies on from silently going away in a later edit.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from serve import FLAGS

ROOT = Path(__file__).resolve().parent.parent


class Instruction(NamedTuple):
    keyword: str  # upper case: "RUN", "COPY", ...
    args: str  # the rest, with `\` continuations joined


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        # Comments and blank lines may also sit inside a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return instructions


def ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: * and ? stop at /, ** crosses it."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def is_ignored(path: str) -> bool:
    """The last pattern matching the path or one of its folders decides, as in Docker."""
    parts = path.split("/")
    candidates = [path] + ["/".join(parts[:n]) for n in range(1, len(parts))]
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        regex = ignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not keep
    return ignored


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    """From the last FROM on: what the image that runs is made of."""
    last_from = max(i for i, instruction in enumerate(dockerfile) if instruction.keyword == "FROM")
    return dockerfile[last_from:]


def args_of(instructions: list[Instruction], keyword: str) -> list[str]:
    return [instruction.args for instruction in instructions if instruction.keyword == keyword]


def test_build_from_python_slim(dockerfile: list[Instruction]) -> None:
    stages: set[str] = set()
    bases = []
    for args in args_of(dockerfile, "FROM"):
        words = [word for word in args.split() if not word.startswith("--")]
        if words[0] not in stages:
            bases.append(words[0])
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    assert bases
    assert {base.partition("@")[0] for base in bases} == {"python:3.11-slim"}


def test_run_as_non_root_user(final_stage: list[Instruction]) -> None:
    users = args_of(final_stage, "USER")
    assert users, "no USER in the final stage: the image would run as root"
    user = users[-1].partition(":")[0]
    assert user not in ("", "root", "0")


def test_check_health_on_healthz(final_stage: list[Instruction]) -> None:
    healthchecks = args_of(final_stage, "HEALTHCHECK")
    assert healthchecks, "no HEALTHCHECK in the final stage"
    _, _, command = healthchecks[-1].partition("CMD ")
    assert command, f"HEALTHCHECK has no command: {healthchecks[-1]}"
    argv = json.loads(command) if command.startswith("[") else shlex.split(command)
    # python is in the image already; curl and wget are not.
    assert argv[0] in ("python", "python3")
    assert "/healthz" in command


def test_declare_data_volume(final_stage: list[Instruction]) -> None:
    volumes: list[str] = []
    for args in args_of(final_stage, "VOLUME"):
        volumes += json.loads(args) if args.startswith("[") else args.split()
    assert "/data" in volumes


@pytest.mark.parametrize(("name", "value"), [("DATA_DIR", "/data"), ("PYTHONUNBUFFERED", "1")])
def test_set_environment(final_stage: list[Instruction], name: str, value: str) -> None:
    env = {}
    for args in args_of(final_stage, "ENV"):
        words = shlex.split(args)
        if "=" not in words[0]:  # the old `ENV NAME value` form
            words = [f"{words[0]}={' '.join(words[1:])}"]
        for word in words:
            key, _, val = word.partition("=")
            env[key] = val
    assert env.get(name) == value


def test_expose_port_8000(final_stage: list[Instruction]) -> None:
    ports = [port for args in args_of(final_stage, "EXPOSE") for port in args.split()]
    assert "8000" in ports or "8000/tcp" in ports


def test_install_requirements_before_code(dockerfile: list[Instruction]) -> None:
    """A code change must reuse the layer with the installed packages."""
    requirements_copied, pip_installed, code_copied = [], [], []
    for i, (keyword, args) in enumerate(dockerfile):
        if keyword in ("COPY", "ADD") and "--from" not in args:
            sources = [word for word in shlex.split(args) if not word.startswith("--")][:-1]
            if all(re.fullmatch(r"requirements.*\.txt", source) for source in sources):
                requirements_copied.append(i)
            else:
                code_copied.append(i)
        if keyword == "RUN" and "pip install" in args and "requirements" in args:
            pip_installed.append(i)
    assert requirements_copied, "requirements.txt is not copied on its own"
    assert pip_installed, "no `pip install -r requirements.txt`"
    assert code_copied, "the code is never copied"
    assert requirements_copied[0] < pip_installed[0] < code_copied[0]


def test_build_tools_stay_in_the_builder(final_stage: list[Instruction]) -> None:
    """Compilers and headers build Pillow and psycopg's C part in a stage that
    is thrown away; the image gets only the libraries they link to."""
    for args in args_of(final_stage, "RUN"):
        words = args.split()
        assert not {"gcc", "binutils", "build-essential"} & set(words), args
        assert not [word for word in words if word.endswith("-dev")], args


def test_start_uvicorn_in_exec_form(final_stage: list[Instruction]) -> None:
    commands = args_of(final_stage, "CMD")
    assert commands, "no CMD in the final stage"
    assert commands[-1].startswith("["), "shell form: a shell would be PID 1, not uvicorn"
    argv = json.loads(commands[-1])
    assert argv[:3] == ["python", "-m", "serve"]  # uvicorn runs in this process, PID 1
    assert "--proxy-headers" in argv
    assert "--reload" not in argv
    # The worker count comes from WEB_CONCURRENCY, which uvicorn reads itself.
    assert "--workers" not in argv


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_users.py",
        ".venv/bin/python",
        "data/messageapp.db",
        "data/secret_key",
        ".git/HEAD",
        "bench/ws_fanout.py",
        "__pycache__/main.cpython-311.pyc",
        "static/__pycache__/x.pyc",
        "static/messageapp.db-wal",
        "alembic/__pycache__/env.cpython-311.pyc",
    ],
)
def test_ignore_what_the_image_must_not_hold(path: str) -> None:
    assert is_ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "requirements.txt",
        "main.py",
        "realtime.py",
        "static/index.html",
        "alembic.ini",
        "alembic/env.py",
        "alembic/versions/0001_initial_schema.py",
    ],
)
def test_send_what_the_image_needs(path: str) -> None:
    """Every top-level module, one added later too, reaches the image unasked."""
    assert not is_ignored(path)


def test_every_server_start_uses_serve(final_stage: list[Instruction]) -> None:
    """The image, `make run`, `make demo` and the real-server tests all start
    `python -m serve`, so they bound requests alike, and uvicorn's flags are
    written in serve.py only."""
    argv = json.loads(args_of(final_stage, "CMD")[-1])
    assert argv[:3] == ["python", "-m", "serve"]
    makefile = (ROOT / "Makefile").read_text()
    assert len(re.findall(r"\$\(BIN\)/python -m serve ", makefile)) == 2  # run, demo
    assert '"-m", "serve"' in (ROOT / "tests" / "server.py").read_text()
    for path in ("Makefile", "Dockerfile", "tests/server.py", "README.md"):
        for flag in FLAGS[::2]:
            assert flag not in (ROOT / path).read_text(), f"{flag} in {path}: serve.py has it"


# In a subprocess: the compiled modules of the packages the image strips them
# from cannot be imported, as in the image (python -c "<this> <packages>").
WITHOUT_COMPILED_MODULES = """
import importlib.machinery as machinery, importlib.util, os, sys
stripped = sys.argv[1:]

class NoCompiledModules:
    def find_spec(self, name, path=None, target=None):
        if name.rpartition(".")[0] in stripped:
            spec = machinery.PathFinder.find_spec(name, path)
            if spec and isinstance(spec.loader, machinery.ExtensionFileLoader):
                # Deleted: a module.py beside it is found instead, if there is one.
                source = os.path.join(os.path.dirname(spec.origin), name.rpartition(".")[2] + ".py")
                if os.path.exists(source):
                    return importlib.util.spec_from_file_location(name, source)
                raise ModuleNotFoundError(f"stripped from the image: {name}", name=name)
        return None

sys.meta_path.insert(0, NoCompiledModules())
import aiohttp, charset_normalizer, pywebpush, requests
assert charset_normalizer.from_bytes("später, bitte".encode()).best().encoding == "utf_8"
loaded = [m.__name__ for m in list(sys.modules.values())
          if isinstance(getattr(m, "__loader__", None), machinery.ExtensionFileLoader)]
assert not [name for name in loaded if name.rpartition(".")[0] in stripped], loaded
# How many of their modules loaded (as Python): the packages were imported.
print(len([name for name in sys.modules if name.rpartition(".")[0] in stripped]))
"""


def test_stripped_accelerators_have_pure_python_fallbacks(dockerfile: list[Instruction]) -> None:
    """The image deletes the optional C accelerators of what Web Push pulls in:
    pywebpush and requests must still import, on the packages' pure-Python code,
    after an upgrade too."""
    stripped = sorted(
        {
            match.replace("/", ".")
            for args in args_of(dockerfile, "RUN")
            for match in re.findall(r'"\$sp"/([\w/]+)/\*\.so', args)
        }
    )
    assert {"aiohttp", "multidict", "yarl", "frozenlist", "propcache", "charset_normalizer"} <= set(
        stripped
    )
    # What the app cannot do without: never stripped.
    assert not {"cryptography", "pydantic_core", "psycopg_c", "PIL", "uvloop", "sqlalchemy"} & {
        name.partition(".")[0] for name in stripped
    }
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_COMPILED_MODULES, *stripped],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20  # their modules did load, in Python
