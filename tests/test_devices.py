"""Every tensor of the editor follows the device of the layer it belongs to (issue 13, part 3: C6).

What is tested where:

* On the CPU, a **split model on two emulated devices**. A second device is made from PyTorch's PrivateUse1 slot
  (renamed "fakegpu", registered with torch's Python-backend hooks): a `Placed` tensor holds real CPU data and says
  it lives on "fakegpu:0"; a dispatch mode runs every aten op on the CPU data and, before it, checks the rule a real
  accelerator enforces: all operands on one device, except 0-dim CPU tensors (scalars), CPU index tensors in
  advanced indexing, and copies/`.to` (which move data). An op that mixes "fakegpu:0" and "cpu" tensors raises
  `DeviceMismatch`, as `cuda:0` and `cuda:1` (or `cuda:0` and `cpu`) do on a GPU machine. The tiny model is split
  layer-wise between "cpu" and "fakegpu:0" with accelerate's own hooks (`attach_align_device_hook_on_blocks`, what
  `dispatch_model`/`device_map="auto"` attach: each block's inputs are moved to its device, outputs stay there), in
  both orders (the first device, holding the embeddings, is the emulated one or the CPU), and the whole editor runs
  on it: targets (batched and per request), keys, residuals, solves, cache_c, norm anchoring, checkpoints and
  snapshots, the second moments and the scoring pass. The edits must equal those of the unsplit model (the data are
  the same CPU numbers; only the route through the ops differs) and every per-layer tensor must sit on its layer's
  device. Limits: torch's Python device guard serves one device index, so the two devices are "cpu" and
  "fakegpu:0" rather than two accelerators; kernels are the CPU's, so nothing here measures GPU numerics or speed.
  A map that puts layers on "meta" would not do: meta tensors hold no numbers to compare.
  Registering the device is process-wide and irreversible (it also makes `torch.accelerator` report "fakegpu"),
  so these tests (test_emulated_*) run in a child process started by `test_emulated_devices_in_a_fresh_process`,
  which registers it before anything else; in the main test process they are skipped.
* `test_emulated_devices_catch_a_tensor_left_on_the_first_device` plants the bugs the issue names (index tensors
  made on the first device, cache_c allocated on the CPU: `DeviceMismatch`; every per-layer tensor on the first
  device: the placement check fails), so the emulation and the checks are not vacuous. The code before this change
  fails every split test with `DeviceMismatch` (first in the targets: h0 read with an index on the first device).
* Also emulated: a model moved whole with `.to` (no hooks: the library moves ids itself) computes statistics and keys;
  `fused_head=True` targets and MEMIT with `norm_constraint` on the split; `Projector.key_ratio` across devices; the
  statistics' float64 products run on each layer's device (ops logged by `Recording`).
* On the plain CPU: the state of a float64 and of a bfloat16 model sits on the weights' device and W keeps its dtype;
  an edited layer offloaded to "meta" is refused with a message; `Projector.to` moves a copy.
* With CUDA (skipped otherwise): a tiny model on one GPU edits like the CPU (relative 1e-4), and with two GPUs a
  layer-wise `device_map` across cuda:0/cuda:1 edits like one GPU. `benchmarks/device_check.py` prints the same
  comparison as a table.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from tiny import REQUESTS, TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter, layerwise_device_map
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import Projector, projector_from_cov

FAKE = "fakegpu"
CUDA = torch.cuda.is_available()
N_CUDA = torch.cuda.device_count() if CUDA else 0


# ------------------------------------------------------------------------------------------------ emulated device
class DeviceMismatch(RuntimeError):
    """An op mixed tensors of two devices (what a real accelerator refuses)."""


def _register() -> None:
    """Make "fakegpu:0" a device torch accepts (once per process; PrivateUse1 can be named only once). It must run
    before the process's first backward pass: the autograd engine sizes its per-device queues then, so this module
    registers at import in the child process that runs the emulated tests, before any test."""
    if torch._C._get_privateuse1_backend_name() == FAKE:
        return
    from torch.utils import backend_registration as br

    class Guard(torch._C._acc.DeviceGuard):
        def type_(self):
            return torch._C._autograd.DeviceType.PrivateUse1

    br._setup_privateuseone_for_python_backend(rename=FAKE, device_guard=Guard())


# The emulated device is registered process-wide (and makes `torch.accelerator` report "fakegpu"), so its tests
# run in a child process of their own (`test_emulated_devices_in_a_fresh_process`), never in the main test process.
CHILD_ENV = "ALPHAEDIT_DEVICE_EMULATION"
IN_CHILD = os.environ.get(CHILD_ENV) == "1"
EMULATION = ""
if IN_CHILD:
    try:
        _register()
    except Exception as err:  # another backend owns PrivateUse1, or this torch lacks the Python-backend hooks
        EMULATION = f"cannot emulate a second device here: {type(err).__name__}: {err}"
needs_emulation = pytest.mark.skipif(
    not IN_CHILD or bool(EMULATION),
    reason=EMULATION or "runs in its own process, from test_emulated_devices_in_a_fresh_process")


def _dev(t: torch.Tensor) -> torch.device:
    return t.tag if isinstance(t, Placed) else t.device


_MOVES = {"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize", "detach", "alias", "lift_fresh"}
_INDEX = {"index", "index_put_", "index_put", "_index_put_impl_"}


def _check(func, args, kwargs) -> None:
    name = func.overloadpacket.__name__
    if name in _MOVES:
        return
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    if name in _INDEX:  # indices may sit on the CPU (or on self's device), as on CUDA
        home = _dev(args[0])
        for t in tree_flatten(args[1])[0]:
            if isinstance(t, torch.Tensor) and _dev(t) not in (home, torch.device("cpu")):
                raise DeviceMismatch(f"{func}: an index on {_dev(t)} for a tensor on {home}")
        tensors = [args[0]] + [a for a in args[2:3] if isinstance(a, torch.Tensor)]
    devices = {_dev(t) for t in tensors if not (_dev(t).type == "cpu" and t.dim() == 0)}
    if len(devices) > 1:
        raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, "
                             f"{' and '.join(sorted(map(str, devices)))} ({func})")


def _run(func, args, kwargs):
    _check(func, args, kwargs)
    kwargs = dict(kwargs or {})
    target = kwargs.get("device")
    if target is not None:
        target = torch.device(target)
        kwargs["device"] = torch.device("cpu")
    devices = [_dev(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    unwrap = lambda t: t.elem if isinstance(t, Placed) else t  # noqa: E731
    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    if func.overloadpacket.__name__.endswith("_") and args and isinstance(args[0], Placed):
        return args[0]  # in place: the wrapper itself
    if target is None:
        target = next((d for d in devices if d.type != "cpu"), torch.device("cpu"))
    if target.type == "cpu":
        return out
    return tree_map(lambda t: Placed(t, target) if type(t) is torch.Tensor else t, out)


class Placed(torch.Tensor):
    """CPU data that says it lives on `tag` (the emulated device)."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor, tag: torch.device):
        r = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                device=tag, requires_grad=False)
        r.elem, r.tag = elem, torch.device(tag)
        return r

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs)

    # reading numbers back works on an accelerator (it synchronises); numpy does not
    def item(self):
        return self.elem.item()

    def tolist(self):
        return self.elem.tolist()

    def __float__(self):
        return float(self.elem)

    def __int__(self):
        return int(self.elem)

    def __index__(self):
        return self.elem.__index__()

    def __bool__(self):
        return bool(self.elem)

    def numpy(self, *args, **kwargs):
        raise TypeError(f"can't convert {self.tag} device type tensor to numpy. Use Tensor.cpu() first.")

    def __repr__(self):
        return f"Placed({self.elem!r}, {self.tag})"


class EmulatedDevices(TorchDispatchMode):
    """Within it, "fakegpu:0" is a device: factories and `.to` put data there, mixed ops raise `DeviceMismatch`."""

    def __enter__(self):
        _register()
        self._lift = torch._C._only_lift_cpu_tensors()
        torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(..., device=...) goes through the mode
        return super().__enter__()

    def __exit__(self, *exc):
        torch._C._set_only_lift_cpu_tensors(self._lift)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs)


class Recording(EmulatedDevices):
    """`EmulatedDevices` that also logs every op's result as (op name, device, dtype, shape) in `ops`."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if isinstance(out, torch.Tensor):
            self.ops.append((func.overloadpacket.__name__, _dev(out), out.dtype, tuple(out.shape)))
        return out


def split(model, first: str, other: str) -> dict[str, str]:
    """Place the model layer-wise over two devices (`layerwise_device_map`: embeddings and layers 0-1 on `first`,
    layers 2-3 and the final norm on `other`, the LM head on `other`, or on `first` when tied to the embeddings) with
    accelerate's hooks, those `dispatch_model` attaches when nothing is offloaded. Returns the map."""
    from accelerate.hooks import attach_align_device_hook_on_blocks

    device_map = layerwise_device_map(model, [first, other])
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    skip = list(getattr(model, "_skip_keys_device_placement", None) or [])
    attach_align_device_hook_on_blocks(model, execution_device={"": first, **device_map},
                                       offload={k: False for k in device_map}, skip_keys=skip)
    if tied:
        model.tie_weights()  # the parameters were replaced one module at a time: tie them again
    return device_map


# ------------------------------------------------------------------------------------------------ set-up
def hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def statistics(model, tok, layers=(1, 2), rank_drop: int = 8):
    """Second moments of the test text's keys (top `rank_drop` directions) and their projectors, on the CPU."""
    a = ModelAdapter.from_model(model)
    store = {}
    handles = [a.mlp_out(l).register_forward_pre_hook(lambda m, args, l=l: store.__setitem__(l, args[0]))
               for l in layers]
    with torch.no_grad():
        model(**tok(TEXT.split("\n"), return_tensors="pt", padding=True))
    for h in handles:
        h.remove()
    covs, projectors = {}, {}
    for l in layers:
        k = store[l].reshape(-1, a.d_ff)
        u, s, _ = torch.linalg.svd(k.T.double(), full_matrices=False)
        covs[l] = ((u[:, :rank_drop] * s[:rank_drop] ** 2) @ u[:, :rank_drop].T / len(k)).float()
        projectors[l] = projector_from_cov(covs[l], threshold=1e-6)
    return covs, projectors


def run_edits(model, tok, method: str, h: EditHParams, covs, projectors, requests=REQUESTS[:3], **kw) -> Editor:
    ed = Editor(model, tok, h, method=method, projectors=projectors, covs=covs, progress=False, **kw)
    ed.run(requests, batch_size=h.batch_size)
    return ed


def assert_state_on_layer_devices(ed: Editor) -> None:
    """Every per-layer tensor of the editor sits on its layer's device (the edited weight's)."""
    for l in ed.hp.layers:
        dev = ed.adapter.weight_view(l).device
        assert ed.devices[l] == dev
        assert ed.original[l].device == dev
        if l in ed.cache_c:
            assert ed.cache_c[l].device == dev and ed.cache_c[l].dtype == torch.float32
        if ed.method == "memit":
            assert ed.covs[l].device == dev
        else:
            assert ed.projectors[l].basis.device == dev and ed.projectors[l].eigenvalues.device == dev


def assert_same_edits(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor], rel: float = 1e-4) -> None:
    for l in a:
        x, y = a[l].detach().cpu().double(), b[l].detach().cpu().double()
        scale = float(x.abs().max())
        assert scale > 0, f"layer {l}: no edit"
        err = float((x - y).abs().max())
        assert err <= rel * scale, f"layer {l}: max |dW - dW_ref| = {err:.3g}, {err / scale:.3g} of max |dW|"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------ plain CPU
def test_projector_to_moves_a_copy_and_keeps_the_numbers():
    p = projector_from_cov(torch.diag(torch.linspace(0, 1, 16)), threshold=0.3)
    q = p.to("cpu")
    assert isinstance(q, Projector) and q is not p and q.device == torch.device("cpu")
    assert (q.complement, q.n_kept) == (p.complement, p.n_kept)
    assert torch.equal(q.basis, p.basis) and torch.equal(q.eigenvalues, p.eigenvalues)
    x = torch.randn(16, 3, dtype=torch.float64)
    assert torch.equal(q.apply(x), p.apply(x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_state_follows_the_weights_device_and_the_model_keeps_its_dtype(tok, dtype):
    """A float64 or bfloat16 model edits; the editor's state sits on the weights' device; W keeps its dtype (the
    state's own dtypes are fixed: cache_c float32, solves float64, Δ cast to W's dtype)."""
    model = tiny_model("qwen2").to(dtype)
    covs, projectors = statistics(tiny_model("qwen2"), tok)
    ed = run_edits(model, tok, "alphaedit", hp(), covs, projectors)
    assert_state_on_layer_devices(ed)
    for l, d in ed.weight_deltas().items():
        assert ed.adapter.weight_view(l).dtype == dtype and float(d.float().abs().max()) > 0


def test_offloaded_edited_layer_is_refused(tok):
    model = tiny_model("llama")
    covs, projectors = statistics(model, tok)
    down = model.model.layers[2].mlp.down_proj
    down.weight = torch.nn.Parameter(torch.empty(down.weight.shape, device="meta"), requires_grad=False)
    with pytest.raises(ValueError, match=r"layer\(s\) \[2\] are offloaded"):
        Editor(model, tok, hp(), projectors=projectors, progress=False)


# ------------------------------------------------------------------------------------------------ emulated split
def test_emulated_devices_in_a_fresh_process():
    """Runs the tests below (named test_emulated_*) in a child process that registers the emulated device first."""
    if IN_CHILD:
        pytest.skip("this is the child process")
    env = {**os.environ, CHILD_ENV: "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
                        "-k", "test_emulated_ and not fresh_process"], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).parents[1])
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, f"emulated-device tests failed:\n{tail}"
    summary = [line for line in r.stdout.splitlines() if line.strip()][-1]
    assert "passed" in summary and "skipped" not in summary, tail


@needs_emulation
def test_emulated_device_refuses_mixed_operands_like_an_accelerator():
    with EmulatedDevices():
        a = torch.ones(3, device=f"{FAKE}:0")
        b = torch.ones(3)
        assert a.device == torch.device(f"{FAKE}:0") and (a + a).device == a.device
        with pytest.raises(DeviceMismatch):
            a + b
        with pytest.raises(DeviceMismatch):
            b[torch.tensor([0, 1], device=a.device)]  # an index on another device than its tensor
        assert (a + torch.tensor(2.0)).device == a.device  # a CPU scalar is fine, as on CUDA
        assert a[torch.tensor([0, 2])].device == a.device  # a CPU index too
        assert torch.equal((a.to("cpu") + b), torch.full((3,), 2.0))


# (arch, method, first device, options): edited layers 1 and 2 sit on different devices; in the "fakegpu" maps the
# first device (embeddings, input ids) is the emulated one and layer L = 2 is on the CPU, in the "cpu" maps the reverse
SPLITS = [
    ("qwen2", "alphaedit", FAKE, {"value_anchor": "nas"}),  # NAS: LLaMA-like models only (Gemma refuses it)
    ("qwen2", "alphaedit", "cpu", {"fast_targets": False}),
    ("gpt2", "memit", FAKE, {"norm_constraint": 0.5}),  # μ I made on A's device (a CPU eye would mix devices)
    ("gemma3", "alphaedit", "cpu", {"target_stop": "most_probable", "norm_constraint": 0.5}),
]


@needs_emulation
@pytest.mark.parametrize("arch,method,first,options", SPLITS, ids=[f"{a}-{m}-{f}-first" for a, m, f, _ in SPLITS])
def test_emulated_split_model_edits_like_one_device(tok, tmp_path, arch, method, first, options):
    """The editor on a model split over two (emulated) devices: no device error, every per-layer tensor on its
    layer's device, the edits (and cache_c) of the unsplit model; a checkpoint and a snapshot of the split run load
    back onto the right devices."""
    options = dict(options)
    fast = options.pop("fast_targets", True)
    h = hp(**options)
    covs, projectors = statistics(tiny_model(arch), tok)
    ref = run_edits(tiny_model(arch), tok, method, h, covs, projectors, fast_targets=fast)
    first_dev = torch.device(f"{FAKE}:0" if first == FAKE else "cpu")
    other_dev = torch.device("cpu" if first == FAKE else f"{FAKE}:0")
    model = tiny_model(arch)
    with EmulatedDevices():
        split(model, str(first_dev), str(other_dev))
        ed = run_edits(model, tok, method, h, covs, projectors, fast_targets=fast)
        a = ed.adapter
        assert a.input_device == first_dev
        assert a.layer_device(1) == first_dev and a.layer_device(2) == other_dev
        assert_state_on_layer_devices(ed)
        # relative 1e-3: the split run copies tensors between devices, so some matmuls take another memory layout and
        # sum in another order; the targets' Adam steps and the solve carry that to up to 1.4e-4 of max |dW| (gpt2,
        # MEMIT, on the 2-core AMD development machine); a device bug (stale or misplaced state) moves dW by O(1)
        assert_same_edits(ref.weight_deltas(), ed.weight_deltas(), rel=1e-3)
        for l in ref.cache_c:
            assert_same_edits({l: ref.cache_c[l]}, {l: ed.cache_c[l]})
        # checkpoint and snapshot: CPU tensors on disk, back onto each layer's device
        ed.save(tmp_path / "ck")
        snap = ed.save_snapshot(tmp_path / "snap.safetensors")
        edited = {l: a.weight_view(l).detach().cpu().clone() for l in h.layers}
        cache = {l: c.cpu().clone() for l, c in ed.cache_c.items()}
        for load in (lambda e: e.load(tmp_path / "ck"), lambda e: e.load_snapshot(snap)):
            ed.restore()
            load(ed)
            assert_state_on_layer_devices(ed)
            for l in h.layers:
                assert torch.equal(a.weight_view(l).detach().cpu(), edited[l])
                if l in cache:
                    assert torch.equal(ed.cache_c[l].cpu(), cache[l])


def _index_on_the_first_device(h, rows, cols):
    return h[rows, cols]  # the index tensors left where they were made (the input device), as before the fix


@needs_emulation
@pytest.mark.parametrize("plant", ["index", "cache_c", "layer_device"])
def test_emulated_devices_catch_a_tensor_left_on_the_first_device(tok, monkeypatch, plant):
    """Planted bugs, each a tensor left on the model's first device (or the CPU) instead of its layer's, on a model
    split with the embeddings and layer 1 on the emulated device, layer 2 on the CPU:
    "index": the activations are indexed with index tensors made on the input device (keys, targets, NAS values);
    "cache_c": cache_c allocated on the CPU, as before the fix; both fail with DeviceMismatch.
    "layer_device": every per-layer tensor put on the first device (`next(model.parameters()).device`): the code
    moves Δ onto W's device at the end, so the edits come out right, but the state is on the wrong device (every
    batch would move it): the placement check fails."""
    covs, projectors = statistics(tiny_model("qwen2"), tok)
    model = tiny_model("qwen2")
    if plant == "index":
        import alphaedit_core.keys
        import alphaedit_core.targets

        monkeypatch.setattr(alphaedit_core.keys, "at_positions", _index_on_the_first_device)
        monkeypatch.setattr(alphaedit_core.targets, "at_positions", _index_on_the_first_device)
    if plant == "layer_device":
        monkeypatch.setattr(ModelAdapter, "layer_device", lambda self, layer: self.input_device)
    with EmulatedDevices():
        split(model, f"{FAKE}:0", "cpu")
        ed = Editor(model, tok, hp(), projectors=projectors, progress=False)
        if plant == "cache_c":
            ed.cache_c = {l: torch.zeros(ed.adapter.d_ff, ed.adapter.d_ff) for l in ed.cache_c}
        if plant in ("index", "cache_c"):
            with pytest.raises(DeviceMismatch):
                ed.run(REQUESTS[:3])
        else:
            ed.run(REQUESTS[:3])
            ref = run_edits(tiny_model("qwen2"), tok, "alphaedit", hp(), covs, projectors)
            assert_same_edits(ref.weight_deltas(), ed.weight_deltas())
            with pytest.raises(AssertionError):
                assert_state_on_layer_devices(ed)


@needs_emulation
def test_emulated_second_moments_and_scores_on_a_split_model(tok):
    """The statistics pass (sums on each layer's device, masks following the keys) and the shared-prefix scoring
    pass (cache rows selected on every layer's device) give the unsplit model's numbers."""
    from alphaedit_core.metrics.scoring import Probe, score_and_decode
    from alphaedit_core.stats import compute_second_moments

    class Corpus:
        identity = "test-text"

        def texts(self):
            return iter(TEXT.split("\n"))

    pairs = [Probe(p, t) for p in ("The capital of France is", "Berlin is located in", "x")
             for t in ("Paris", "Rome is large", "a")]
    prompts = ["The capital of France is", "Tokyo is"]

    def measure(model):
        a = ModelAdapter.from_model(model)
        covs, _ = compute_second_moments(model, tok, a, [1, 2], Corpus(), n_tokens=100, seq_len=16, progress=False)
        scores, answers = score_and_decode(model, tok, pairs, prompts, max_new_tokens=3, batch_size=2)
        return covs, scores, answers

    ref = measure(tiny_model("llama"))
    model = tiny_model("llama")
    with Recording() as rec:
        split(model, f"{FAKE}:0", "cpu")
        got = measure(model)
    # the float64 sums accumulate on each layer's device: one k^T k per layer (1 then 2) and batch (100 tokens: one)
    d_ff = ModelAdapter.from_model(model).d_ff
    products = [d for op, d, dtype, shape in rec.ops if op == "mm" and dtype == torch.float64 and shape == (d_ff, d_ff)]
    assert products == [torch.device(f"{FAKE}:0"), torch.device("cpu")]
    for l in (1, 2):
        assert got[0][l].device == torch.device("cpu")  # returned (and cached) on the CPU
        torch.testing.assert_close(got[0][l], ref[0][l], rtol=1e-4, atol=1e-7)
    assert got[2] == ref[2]
    for p in pairs:
        assert got[1][p].argmax == ref[1][p].argmax
        torch.testing.assert_close(torch.tensor(got[1][p].logprobs), torch.tensor(ref[1][p].logprobs),
                                   atol=1e-5, rtol=0)


@needs_emulation
def test_emulated_key_ratio_is_returned_on_the_projectors_device():
    """`Projector.key_ratio` moves the keys to the projector (keys left on their device: the ratio comes back there).
    P keeps the 5 smallest-variance coordinates of a diagonal C, so the ratio is |k[:5]| / |k|."""
    p = projector_from_cov(torch.diag(torch.linspace(0, 1, 16)), threshold=0.3)
    keys = torch.zeros(2, 16)
    keys[0, 0], keys[0, 4], keys[0, 10] = 3.0, 4.0, 12.0  # 5 / 13
    keys[1, 15] = 2.0  # 0
    expected = torch.tensor([5 / 13, 0.0], dtype=torch.float64)
    with EmulatedDevices():
        fake = torch.device(f"{FAKE}:0")
        for proj, k in ((p, keys.to(fake)), (p.to(fake), keys)):
            r = proj.key_ratio(k)
            assert r.device == proj.device
            torch.testing.assert_close(r.cpu().double(), expected)


@needs_emulation
def test_emulated_model_moved_whole_computes_statistics_and_keys(tok):
    """A model moved whole with `.to(device)` (as `load_model(device=...)`: no accelerate hooks move its inputs):
    the statistics pass and `keys_and_outputs` must put the token ids (and indices) on the model's device themselves,
    else the embedding lookup mixes devices; the numbers are the CPU model's."""
    from alphaedit_core.keys import keys_and_outputs
    from alphaedit_core.stats import compute_second_moments

    class Corpus:
        identity = "test-text"

        def texts(self):
            return iter(TEXT.split("\n"))

    templates = ["{}", "Therefore {}"]

    def measure(model):
        a = ModelAdapter.from_model(model)
        covs, _ = compute_second_moments(model, tok, a, [1, 2], Corpus(), n_tokens=100, seq_len=16, progress=False)
        keys, values = keys_and_outputs(model, tok, a, REQUESTS[:2], templates, [1, 2], out_layer=2)
        return covs, keys, values

    ref = measure(tiny_model("llama"))
    fake = torch.device(f"{FAKE}:0")
    model = tiny_model("llama")
    with EmulatedDevices():
        model.to(fake)
        assert ModelAdapter.from_model(model).input_device == fake
        covs, keys, values = measure(model)
    for l in (1, 2):
        torch.testing.assert_close(covs[l], ref[0][l], rtol=1e-4, atol=1e-7)
        assert keys[l].device == fake
        torch.testing.assert_close(keys[l].cpu(), ref[1][l], rtol=1e-4, atol=1e-6)
    assert values.device == fake
    torch.testing.assert_close(values.cpu(), ref[2], rtol=1e-4, atol=1e-6)


@needs_emulation
def test_emulated_fused_head_targets_on_a_split_model(tok):
    """`compute_targets(..., fused_head=True)` with the LM head on the emulated device (qwen2: untied head, on the
    second device with layer L): the fused NLL's accumulator is made on the logits' device (a CPU one mixes devices
    in `index_add`); z equals the unsplit model's and sits on layer L's device."""
    from alphaedit_core.targets import compute_targets

    h, templates = hp(), ["{}", "Therefore {}"]
    model = tiny_model("qwen2")
    ref = compute_targets(model, tok, ModelAdapter.from_model(model), REQUESTS[:3], templates, h, fused_head=True)
    model = tiny_model("qwen2")
    with EmulatedDevices():
        split(model, "cpu", f"{FAKE}:0")
        a = ModelAdapter.from_model(model)
        assert a.layer_device(2) == torch.device(f"{FAKE}:0")
        assert model.get_output_embeddings().weight.device == torch.device(f"{FAKE}:0")
        got = compute_targets(model, tok, a, REQUESTS[:3], templates, h, fused_head=True)
    assert got.z.device == torch.device(f"{FAKE}:0")
    assert torch.equal(got.steps, ref.steps)
    assert_same_edits({0: ref.z - ref.h0}, {0: got.z.cpu() - got.h0.cpu()}, rel=1e-3)


# ------------------------------------------------------------------------------------------------ real GPUs
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device: this machine has none (the emulated split above runs "
                                     "the same code paths on the CPU)")
@pytest.mark.parametrize("arch,method", [("llama", "alphaedit"), ("gpt2", "memit"), ("gemma3", "alphaedit")])
def test_cuda_model_edits_like_the_cpu(tok, tmp_path, arch, method):
    h = hp()
    covs, projectors = statistics(tiny_model(arch), tok)
    ref = run_edits(tiny_model(arch), tok, method, h, covs, projectors)
    ed = run_edits(tiny_model(arch).to("cuda"), tok, method, h, covs, projectors)
    assert all(ed.devices[l].type == "cuda" for l in h.layers)
    assert_state_on_layer_devices(ed)
    assert_same_edits(ref.weight_deltas(), ed.weight_deltas())
    ed.save(tmp_path / "ck")
    edited = {l: ed.adapter.weight_view(l).detach().clone() for l in h.layers}
    ed.restore()
    ed.load(tmp_path / "ck")
    assert_state_on_layer_devices(ed)
    for l in h.layers:
        assert torch.equal(ed.adapter.weight_view(l), edited[l])


@pytest.mark.skipif(N_CUDA < 2, reason=f"needs two CUDA devices for a device_map split, this machine has {N_CUDA}")
@pytest.mark.parametrize("arch,method", [("qwen2", "alphaedit"), ("gpt2", "memit")])
def test_device_map_across_two_gpus_edits_like_one_gpu(tok, arch, method):
    """A layer-wise device_map over cuda:0 and cuda:1 (accelerate's dispatch_model, as from_pretrained with a
    device_map does) edits like the same model on cuda:0 alone."""
    from accelerate import dispatch_model

    h = hp()
    covs, projectors = statistics(tiny_model(arch), tok)
    one = run_edits(tiny_model(arch).to("cuda:0"), tok, method, h, covs, projectors)
    model = tiny_model(arch)
    device_map = layerwise_device_map(model, [0, 1])
    dispatch_model(model, device_map, skip_keys=list(getattr(model, "_skip_keys_device_placement", None) or []))
    two = run_edits(model, tok, method, h, covs, projectors)
    assert two.devices[1] == torch.device("cuda:0") and two.devices[2] == torch.device("cuda:1")
    assert_state_on_layer_devices(two)
    assert_same_edits(one.weight_deltas(), two.weight_deltas())
