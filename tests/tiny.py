"""Tiny randomly initialised causal LMs of each supported architecture and a real byte-level BPE tokenizer
trained on a few sentences, for unit tests that run in seconds."""
from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
from transformers import PreTrainedTokenizerFast

from alphaedit_core.requests import EditRequest

TEXT = """The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
Danielle Darrieux speaks French. The mother tongue of Danielle Darrieux is English. Toko Yasuda plays the guitar.
Edwin of Northumbria is a king. The official religion of Edwin of Northumbria is Christianity.
Apple A5 was created by Google. Berlin is located in Germany. Tokyo is the capital of Japan.
Therefore the answer is yes. Because it rains, I stay. You know what I mean. The city of London is large."""

ARCHS = ("llama", "qwen2", "gemma3", "gpt2")

# CounterFact-like rewrites whose subjects and prompts the tiny tokenizer was trained on
REQUESTS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),
    EditRequest("{} speaks", "Danielle Darrieux", "English", "French", case_id=1),
    EditRequest("The official religion of {} is", "Edwin of Northumbria", "Islam", "Christianity", case_id=2),
    EditRequest("{} plays the", "Toko Yasuda", "piano", "guitar", case_id=3),
    EditRequest("{} was created by", "Apple A5", "Google", "Apple", case_id=4),
    EditRequest("{} is located in", "Berlin", "Japan", "Germany", case_id=5),
]


# a random LM head is nearly flat; scaled up, the loss responds to the target shift δ (qwen2's untied head is flatter)
HEAD_SCALE = {"qwen2": 40.0}


def tiny_model_sharp_head(arch: str):
    """`tiny_model(arch)` with its output embeddings scaled by HEAD_SCALE (default 4), so that target optimisations
    stop at different steps and a new object can become the argmax."""
    model = tiny_model(arch)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(HEAD_SCALE.get(arch, 4.0))
    return model


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(arch: str = "llama", seed: int = 0, layers: int = 4):
    """A random model with d_model 32, d_ff 64 (GPT-2: 128), `layers` layers, in eval mode, frozen."""
    from transformers import (GPT2Config, GPT2LMHeadModel, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                              LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

    vocab = len(tiny_tokenizer())
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
    elif arch == "gemma3":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=8, sliding_window=8,
                                                   layer_types=["sliding_attention", "full_attention"] * (layers // 2)))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_positions=128,
                                           bos_token_id=1, eos_token_id=2, pad_token_id=0))
    else:
        raise ValueError(arch)
    model.eval().requires_grad_(False)
    return model


def notebook_setup(tmp_path, **hp_changes):
    """A tiny llama saved as a model folder, a corpus file and `hparams.json` under `tmp_path`, for executing a
    study notebook end to end in seconds. Returns (model folder, hparams)."""
    from alphaedit_core.hparams import EditHParams

    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join([TEXT] * 4))
    hp = EditHParams(layers=[1, 2], v_num_grad_steps=4, context_template_count=2, context_template_length=5,
                     mom2_corpus=str(corpus), mom2_n_tokens=300, mom2_seq_len=64, targets_chunk=4, batch_size=2,
                     nullspace_mode="energy", nullspace_energy=0.1)  # the official 0.02 keeps all of a tiny model
    hp = hp.replace(**hp_changes) if hp_changes else hp
    hp.save(tmp_path / "hparams.json")
    return folder, hp


def assert_same_targets(fast, ref, rel: float = 1e-3) -> None:
    """The batched targets equal the per-request reference up to float32 reassociation: the batched forward sums in
    another order, and Adam carries the last-bit differences through its steps (up to 2e-4 of the largest update
    |z - h0| measured on the 2-core AMD development machine, 1.1e-5 absolute). A batching bug (a wrong mask, position or
    row) moves z by a sizeable part of the update itself."""
    update = float((ref.z - ref.h0).abs().max())
    assert float((fast.h0 - ref.h0).abs().max()) <= 1e-5 * max(1.0, float(ref.h0.abs().max()))
    err = float((fast.z - ref.z).abs().max())
    assert err <= rel * update, f"max |z - z_ref| = {err:.3g}, {err / update:.3g} of the largest update"
