"""PyTorch eager baseline for `retclip bench`: the same RET-CLIP training step (forward of
both eyes and the reports, tripartite loss, backward, gradient norm / clip, AdamW with
RET-CLIP's decay / no-decay groups, logit-scale clamp), same model sizes, batch,
precision (bf16 autocast on CUDA), device and threads, timed phase by phase with the
same device synchronisation at phase boundaries. Prints one JSON line.

    retclip bench --config configs/tiny-cpu.yaml --json /tmp/r.json
    python3 bench/bench_train.py --like /tmp/r.json        # copies the setup of that run

Model (--impl): "reference" = open_clip's VisionTransformer + transformers.BertModel +
the RET-CLIP heads of tests/python/model_reference.py (needs open_clip_torch and
transformers); "plain" = the same architecture written here in plain PyTorch (same
parameter names and shapes, F.scaled_dot_product_attention), for machines that have
torch only (the CUDA machines); "auto" = reference when importable, else plain.
Both eyes go through the ViT in one call of 2B images, as retclip does.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))


# ---- plain PyTorch towers (RET-CLIP / open_clip / HF parameter names) ----------------

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class VisionAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x):  # [B, N, D]
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))


class ResBlock(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = VisionAttention(d, heads)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d, mlp))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp, d))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PlainViT(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio, embed_dim):
        super().__init__()
        g = image_size // patch_size
        s = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(s * torch.randn(width))
        self.positional_embedding = nn.Parameter(s * torch.randn(g * g + 1, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            [ResBlock(width, heads, int(width * mlp_ratio)) for _ in range(layers)])
        self.proj = nn.Parameter(s * torch.randn(width, embed_dim))

    def forward(self, x):  # [B, 3, S, S] -> [B, E]
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype))
        for blk in self.transformer.resblocks:
            x = blk(x)
        return self.ln_post(x[:, 0]) @ self.proj


class BertLayer(nn.Module):
    def __init__(self, h, heads, inter, p):
        super().__init__()
        self.heads, self.p = heads, p
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query, self.attention.self.key, self.attention.self.value = (
            nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(h, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=1e-12)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(h, inter)
        self.output = nn.Module()
        self.output.dense = nn.Linear(inter, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=1e-12)

    def forward(self, x, attend):  # x [B, T, H], attend [B, 1, 1, T] bool
        b, t, h = x.shape
        s = self.attention.self

        def split(y):
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(s.query(x)), split(s.key(x)), split(s.value(x)),
                                             attn_mask=attend, dropout_p=self.p if self.training else 0.0)
        a = self.attention.output
        x = a.LayerNorm(x + F.dropout(a.dense(ctx.transpose(1, 2).reshape(b, t, h)), self.p, self.training))
        y = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + F.dropout(y, self.p, self.training))


class PlainBert(nn.Module):
    def __init__(self, vocab, h, layers, heads, inter, max_pos, p):
        super().__init__()
        self.p = p
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, h, padding_idx=0)
        self.embeddings.position_embeddings = nn.Embedding(max_pos, h)
        self.embeddings.token_type_embeddings = nn.Embedding(2, h)
        self.embeddings.LayerNorm = nn.LayerNorm(h, eps=1e-12)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([BertLayer(h, heads, inter, p) for _ in range(layers)])
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def cls(self, tokens):  # [B, T] -> [B, H]
        e = self.embeddings
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = e.word_embeddings(tokens) + e.position_embeddings(pos) + e.token_type_embeddings.weight[0]
        x = F.dropout(e.LayerNorm(x), self.p, self.training)
        attend = tokens.ne(0)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, attend)
        return x[:, 0]


# ---- the RET-CLIP model ----------------------------------------------------------------

class RetClipBench(nn.Module):
    def __init__(self, setup, impl):
        super().__init__()
        v, t, e = setup["vision"], setup["text"], setup["embed_dim"]
        h, p = t["hidden"], t["dropout"]
        if impl == "reference":
            from model_reference import make_vit
            from transformers import BertConfig, BertModel
            self.visual = make_vit(dict(image_size=v["image_size"], patch_size=v["patch_size"],
                                        width=v["width"], vision_layers=v["layers"],
                                        vision_heads=v["heads"], embed_dim=e))
            self.bert = BertModel(BertConfig(
                vocab_size=t["vocab_size"], hidden_size=h, num_hidden_layers=t["layers"],
                num_attention_heads=t["heads"], intermediate_size=t["intermediate"],
                max_position_embeddings=t["max_position"], type_vocab_size=2, hidden_act="gelu",
                layer_norm_eps=1e-12, hidden_dropout_prob=p, attention_probs_dropout_prob=p,
                pad_token_id=0), add_pooling_layer=False)
            self.text_cls = lambda tok: self.bert(input_ids=tok, attention_mask=tok.ne(0).long()).last_hidden_state[:, 0]
        else:
            self.visual = PlainViT(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                   v["heads"], v["mlp_ratio"], e)
            self.bert = PlainBert(t["vocab_size"], h, t["layers"], t["heads"], t["intermediate"],
                                  t["max_position"], p)
            self.text_cls = self.bert.cls

        def proj():
            return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, e))

        self.text_projection, self.text_projection_left, self.text_projection_right = proj(), proj(), proj()
        init = setup.get("logit_scale_init", math.log(90))
        self.logit_scale = nn.Parameter(torch.tensor(float(init)))
        self.logit_scale_left = nn.Parameter(torch.tensor(float(init)))
        self.logit_scale_right = nn.Parameter(torch.tensor(float(init)))
        self.global_feature_mapping = nn.Linear(2 * e, e, bias=False)
        self.left_feature_mapping = nn.Linear(e, e, bias=False)
        self.right_feature_mapping = nn.Linear(e, e, bias=False)

    def forward(self, left, right, tokens, hl, hr):
        b = left.shape[0]
        f = self.visual(torch.cat([left, right], 0))  # both eyes in one call, as retclip
        lf, rf = f[:b], f[b:]
        hl, hr = hl[:, None], hr[:, None]
        lf = torch.where(hl, lf, torch.zeros_like(lf))
        rf = torch.where(hr, rf, torch.zeros_like(rf))
        patient = self.global_feature_mapping(torch.cat((torch.where(hl, lf, rf), torch.where(hr, rf, lf)), 1))
        cls = self.text_cls(tokens)
        out = [patient, self.left_feature_mapping(lf), self.right_feature_mapping(rf),
               self.text_projection(cls), self.text_projection_left(cls), self.text_projection_right(cls)]
        return [F.normalize(x.float(), dim=-1) for x in out]


def level_loss(img, txt, log_scale, scale_max):
    scale = torch.clamp(log_scale, max=scale_max).exp()
    logits = scale * img @ txt.t()
    gt = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, gt) + F.cross_entropy(logits.t(), gt)) / 2


def param_groups(model, optim):
    """retclip's rule (train/optimizer.hpp): no decay for ndim < 2 or a name containing
    bn / ln / bias / logit_scale or any optim.no_decay pattern."""
    pats = ["bn", "ln", "bias", "logit_scale"] + list(optim.get("no_decay", []))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(s in n for s in pats) else decay).append(p)
    return [{"params": decay, "weight_decay": optim["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0}]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", required=True, help="JSON line (file) of a `retclip bench` run to reproduce")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: the run's)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: the run's)")
    ap.add_argument("--impl", choices=["auto", "reference", "plain"], default="auto")
    ap.add_argument("--fused", action="store_true", help="fused AdamW (CUDA); default: PyTorch's default")
    a = ap.parse_args()
    with open(a.like) as f:
        like = json.loads(f.readline())
    setup = like["setup"]
    steps = a.steps if a.steps is not None else like["steps"]
    warmup = a.warmup if a.warmup is not None else like["warmup"]
    torch.set_num_threads(int(like["threads"]))
    impl = a.impl
    if impl == "auto":
        try:
            import open_clip  # noqa: F401
            import transformers  # noqa: F401
            impl = "reference"
        except ImportError:
            impl = "plain"
    dev = torch.device("cuda:0" if like["device"].startswith("cuda") else "cpu")
    cuda = dev.type == "cuda"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(like["precision"])
    if like.get("accum_steps", 1) != 1:
        sys.exit("bench_train.py: accum_steps > 1 is not reproduced here")
    torch.manual_seed(int(setup.get("seed", 123)))
    model = RetClipBench(setup, impl).to(dev).train()
    o = setup["optim"]
    opt = torch.optim.AdamW(param_groups(model, o), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            **({"fused": True} if a.fused else {}))

    b, s, t, vocab = like["batch"], like["image_size"], like["tokens"], setup["text"]["vocab_size"]
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(1, vocab, (b, t), generator=g)
    length = torch.randint(max(1, t // 2), t + 1, (b, 1), generator=g)
    tokens = tokens.masked_fill(torch.arange(t)[None, :] >= length, 0).to(dev)
    left, right = torch.randn(b, 3, s, s, generator=g).to(dev), torch.randn(b, 3, s, s, generator=g).to(dev)
    ones = torch.ones(b, dtype=torch.bool, device=dev)
    smax, clip = setup["logit_scale_max"], o["clip_norm"]
    params = [p for p in model.parameters() if p.requires_grad]
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    sums = dict(forward=0.0, backward=0.0, optimizer=0.0, step=0.0)
    loss = None
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=amp, enabled=cuda and amp is not None):
            pi, li, ri, pt, lt, rt = model(left, right, tokens, ones, ones)
        total = (level_loss(pi, pt, model.logit_scale, smax) + level_loss(li, lt, model.logit_scale_left, smax)
                 + level_loss(ri, rt, model.logit_scale_right, smax))
        sync()
        t1 = time.perf_counter()
        total.backward()
        sync()
        t2 = time.perf_counter()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip).item()
        else:
            torch.stack([p.grad.detach().norm(2) for p in params if p.grad is not None]).norm(2).item()
        opt.step()
        with torch.no_grad():
            for sc in (model.logit_scale, model.logit_scale_left, model.logit_scale_right):
                sc.clamp_(0, smax)
        sync()
        t3 = time.perf_counter()
        if i >= warmup:
            sums["forward"] += t1 - t0
            sums["backward"] += t2 - t1
            sums["optimizer"] += t3 - t2
            sums["step"] += t3 - t0
            loss = total.detach()
    ms = {k: 1000 * v / steps for k, v in sums.items()}
    if cuda:
        mem, kind = torch.cuda.max_memory_allocated(dev) / 2**30, "cuda_allocated"
    else:
        mem, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"
    print(json.dumps({
        "impl": f"pytorch-eager ({impl})", "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if cuda else like.get("device_name", "cpu"),
        "precision": like["precision"], "batch": b, "image_size": s, "tokens": t,
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
        "warmup": warmup, "steps": steps, "fused_adamw": a.fused,
        "patients_per_s": round(1000 * b / ms["step"], 2), "step_ms": round(ms["step"], 3),
        "data_ms": 0.0, "forward_ms": round(ms["forward"], 3), "backward_ms": round(ms["backward"], 3),
        "optimizer_ms": round(ms["optimizer"], 3), "peak_memory_gib": round(mem, 3), "memory_kind": kind,
        "final_loss": round(loss.item(), 5), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
