"""fastgpt.compat.llms_from_scratch against the book's own PyTorch GPTModel.

The book's model (chapter 4) and its two generation loops (chapters 4 and 5) are written out
below in torch, randomly initialised; the same state dict goes through fastgpt and must give
the same logits and the same greedy ids, including once the sequence outgrows the context
window and the book's loop starts sliding it.
"""

import numpy as np
import pytest

from oracle import LOGITS_ATOL
from fastgpt.compat import llms_from_scratch as lfs
from fastgpt.loaders import write_safetensors

torch = pytest.importorskip("torch", reason="the book's GPTModel is the reference")
nn = torch.nn

CFG = {"vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}


# --------------------------------------------------------------------------------------
# The book's model, chapter 4 (ch04/01_main-chapter-code/gpt.py), verbatim in substance.
# --------------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = self.dropout(torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1))
        context_vec = (attn_weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]), GELU(),
                                    nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]))

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
                                      num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        batch_size, seq_len = in_idx.shape
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = self.trf_blocks(self.drop_emb(x))
        return self.out_head(self.final_norm(x))


def book_generate_text_simple(model, idx, max_new_tokens, context_size):
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        idx_next = torch.argmax(torch.softmax(logits[:, -1, :], dim=-1), dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def book_generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1]
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")), logits)
        if temperature > 0.0:
            idx_next = torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


# --------------------------------------------------------------------------------------

def book_model(cfg, seed=123):
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    with torch.no_grad():                      # norms at 1/0 would leave their mapping untested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.tok_emb.weight.mul_(0.3)         # keep logits O(1) so greedy ids are well separated
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["no-qkv-bias", "qkv-bias"])
def pair(request):
    cfg = dict(CFG, qkv_bias=request.param)
    return cfg, book_model(cfg)


def show(name, got, want):
    diff = np.abs(got - want).max()
    print(f"{name}: first {got.ravel()[:3]} vs {want.ravel()[:3]}, max diff {diff:.2e}")
    return diff


def test_logits_match_book(pair, backend):
    cfg, ref = pair
    model = lfs.from_state_dict(ref.state_dict(), cfg, backend=backend)
    assert not model.model.weights.tied_head                         # the book's head is untied
    assert (model.model.weights.blocks[0].attn_qkv_b is not None) == cfg["qkv_bias"]
    idx = torch.tensor([[3, 14, 15, 92, 65, 35], [8, 9, 7, 9, 3, 2]])
    with torch.no_grad():
        want = ref(idx).numpy()
    got = model(idx)
    assert got.shape == want.shape and got.dtype == np.float32
    assert show("logits", got, want) < LOGITS_ATOL


@pytest.mark.parametrize("max_new, context", [(6, 16), (9, 5)], ids=["in-window", "sliding"])
def test_generate_text_simple_matches_book(pair, backend, max_new, context):
    cfg, ref = pair
    model = lfs.GPTModel(cfg, backend=backend)
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})     # numpy values work too
    idx = torch.tensor([[5, 6, 7, 8]])
    want = book_generate_text_simple(ref, idx, max_new, context).numpy()
    got = lfs.generate_text_simple(model.eval(), idx, max_new_tokens=max_new, context_size=context)
    print("ids:", got.tolist())
    np.testing.assert_array_equal(got, want)


def test_generate_greedy_top_k_eos_batch(pair, backend):
    cfg, ref = pair
    model = lfs.from_state_dict(ref.state_dict(), cfg, backend=backend)
    idx = torch.tensor([[1, 2, 3], [40, 41, 42]])
    want = book_generate_text_simple(ref, idx, 7, 6).numpy()
    np.testing.assert_array_equal(lfs.generate(model, idx, 7, 6, temperature=0.0, top_k=5), want)
    # eos: the book stops before the step that would produce eos_id (one row).
    one = idx[:1]
    full = book_generate(ref, one, 6, 16).numpy()
    eos = int(full[0, 3 + 3])
    want = book_generate(ref, one, 6, 16, eos_id=eos).numpy()
    got = lfs.generate(model, one, 6, 16, eos_id=eos)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] < full.shape[1]


def test_sampling(pair, backend):
    cfg, ref = pair
    model = lfs.from_state_dict(ref.state_dict(), cfg, backend=backend)
    idx = np.array([[1, 2, 3]])
    a = lfs.generate(model, idx, 8, 16, temperature=1.5, top_k=3, seed=7)
    b = lfs.generate(model, idx, 8, 16, temperature=1.5, top_k=3, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 11)
    # top_k=1 keeps only the argmax, whatever the temperature: the greedy ids.
    greedy = lfs.generate_text_simple(model, idx, 8, 16)
    np.testing.assert_array_equal(lfs.generate(model, idx, 8, 16, temperature=2.0, top_k=1, seed=0), greedy)
    # Every sampled id is among the 3 best of its step (checked by recomputing the logits).
    for t in range(3, 11):
        logits = model(a[:, :t])[0, -1]
        assert a[0, t] in np.argsort(logits)[-3:]


def test_load_pth_and_safetensors(pair, tmp_path):
    cfg, ref = pair
    sd = ref.state_dict()
    torch.save(sd, tmp_path / "model.pth")
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}}, tmp_path / "model_and_optimizer.pth")
    write_safetensors(tmp_path / "model.safetensors",
                      {k: v.numpy() for k, v in sd.items() if not k.endswith(".att.mask")})
    idx = np.array([[4, 5, 6]])
    with torch.no_grad():
        want = ref(torch.as_tensor(idx)).numpy()
    for name in ("model.pth", "model_and_optimizer.pth", "model.safetensors"):
        model = lfs.load(tmp_path / name, cfg, backend="numpy")
        assert show(name, model(idx), want) < LOGITS_ATOL


def test_tied_head_is_shared():
    cfg = dict(CFG, qkv_bias=True)
    ref = book_model(cfg)
    with torch.no_grad():
        ref.out_head.weight.copy_(ref.tok_emb.weight)        # as chapter 5 loads OpenAI's weights
    model = lfs.from_state_dict(ref.state_dict(), cfg, backend="numpy")
    assert model.model.weights.tied_head


def test_load_weights_into_gpt_from_openai_layout():
    """Chapter 5's path: OpenAI's params (here the tiny TF checkpoint) into GPTModel."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "tf-gpt2-tiny"
    expected = np.load(data / "expected.npz")
    settings, params = lfs.download_and_load_gpt2(model_size=data.name, models_dir=str(data.parent))
    cfg = {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"], "emb_dim": settings["n_embd"],
           "n_heads": settings["n_head"], "n_layers": settings["n_layer"], "drop_rate": 0.0, "qkv_bias": True}
    gpt = lfs.GPTModel(cfg, backend="numpy")
    lfs.load_weights_into_gpt(gpt, params)
    prompt = expected["prompt_ids"][None, :]
    assert np.abs(gpt(prompt)[0] - expected["logits"]).max() < 1e-4
    out = lfs.generate_text_simple(gpt, prompt, 6, cfg["context_length"])
    np.testing.assert_array_equal(out[0, prompt.shape[1]:], expected["greedy_ids"])


def test_mismatch_lists_every_problem(pair):
    cfg, ref = pair
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    del sd["trf_blocks.1.ff.layers.2.bias"]
    sd["final_norm.scale"] = sd["final_norm.scale"][:-1]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        lfs.from_state_dict(sd, cfg)
    msg = str(e.value)
    assert "missing trf_blocks.1.ff.layers.2.bias" in msg
    assert "final_norm.scale has shape (31,), expected (32,)" in msg
    assert "unexpected extra.weight" in msg


def test_qkv_bias_flag_mismatch():
    ref = book_model(dict(CFG, qkv_bias=True))
    with pytest.raises(ValueError, match="qkv_bias"):
        lfs.from_state_dict(ref.state_dict(), dict(CFG, qkv_bias=False))
    with pytest.raises(ValueError, match="cfg is missing n_heads"):
        lfs.GPTModel({k: v for k, v in CFG.items() if k != "n_heads"})


def test_context_size_beyond_model():
    model = lfs.GPTModel(CFG, backend="numpy")
    with pytest.raises(ValueError, match="context_size=40"):
        lfs.generate_text_simple(model, np.array([[1, 2]]), 30, 40)
    # The same context within the model's limit works from a random init.
    assert lfs.generate_text_simple(model, np.array([[1, 2]]), 30, 16).shape == (1, 32)
