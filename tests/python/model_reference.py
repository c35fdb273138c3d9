"""PyTorch oracle for the model/loss tests: reads tensors written by the C++ test
(torch::pickle_save of a dict str -> tensor), runs the reference and writes results
with torch.save. Towers: transformers.BertModel and open_clip's VisionTransformer;
heads and tripartite loss: written here from the RET-CLIP paper/reference + docs/MODEL.md.

usage: model_reference.py {bert|vit|full|multipos} IN.pt OUT.pt
  multipos: one level's loss with identical reports as positives (loss.duplicates:
  positive), written from the SupCon / FLAIR definition, and its input gradients.
  keys in IN:  cfg.<name> (0-d tensors), param.<state-dict key>, in.<name>
  keys in OUT: out.<name>, grad.<state-dict key> (full mode, when cfg.backward = 1)
"""
import math
import sys

import torch
import torch.jit._pickle
import torch.nn as nn
import torch.nn.functional as F


def make_bert(cfg):
    from transformers import BertConfig, BertModel

    c = BertConfig(vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden"]),
                   num_hidden_layers=int(cfg["text_layers"]), num_attention_heads=int(cfg["text_heads"]),
                   intermediate_size=int(cfg["intermediate"]),
                   max_position_embeddings=int(cfg["max_position"]), type_vocab_size=2,
                   hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
                   attention_probs_dropout_prob=0.1, pad_token_id=0)
    return BertModel(c, add_pooling_layer=False)


def make_vit(cfg):
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(image_size=int(cfg["image_size"]), patch_size=int(cfg["patch_size"]),
                             width=int(cfg["width"]), layers=int(cfg["vision_layers"]),
                             heads=int(cfg["vision_heads"]), mlp_ratio=4.0,
                             output_dim=int(cfg["embed_dim"]), act_layer=QuickGELU)


def bert_hidden(bert, tokens):
    return bert(input_ids=tokens, attention_mask=tokens.ne(0).long()).last_hidden_state


class RetClipReference(nn.Module):
    """RET-CLIP (sStonemason/RET-CLIP clip/model.py) heads over open_clip/HF towers."""

    def __init__(self, cfg):
        super().__init__()
        e, h = int(cfg["embed_dim"]), int(cfg["hidden"])
        self.visual = make_vit(cfg)
        self.bert = make_bert(cfg)

        def proj():
            return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, e))

        self.text_projection, self.text_projection_left, self.text_projection_right = proj(), proj(), proj()
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(90))
        self.logit_scale_left = nn.Parameter(torch.ones([]) * math.log(90))
        self.logit_scale_right = nn.Parameter(torch.ones([]) * math.log(90))
        self.global_feature_mapping = nn.Linear(2 * e, e, bias=False)
        self.left_feature_mapping = nn.Linear(e, e, bias=False)
        self.right_feature_mapping = nn.Linear(e, e, bias=False)

    def forward(self, left, right, tokens, has_left, has_right):
        # "Compute and mask": the ViT sees every image, missing eyes are masked after.
        lf = self.visual(left)
        rf = self.visual(right)
        hl, hr = has_left[:, None], has_right[:, None]
        lf = torch.where(hl, lf, torch.zeros_like(lf))
        rf = torch.where(hr, rf, torch.zeros_like(rf))
        l_sub = torch.where(hl, lf, rf)
        r_sub = torch.where(hr, rf, lf)
        patient = self.global_feature_mapping(torch.cat((l_sub, r_sub), dim=1))
        left_img = self.left_feature_mapping(lf)
        right_img = self.right_feature_mapping(rf)
        cls = bert_hidden(self.bert, tokens)[:, 0, :]
        txt, txt_l, txt_r = self.text_projection(cls), self.text_projection_left(cls), self.text_projection_right(cls)

        def norm(x, mask=None):
            if mask is None:
                return x / x.norm(dim=-1, keepdim=True)
            safe = torch.where(mask, x, torch.ones_like(x))
            return torch.where(mask, safe / safe.norm(dim=-1, keepdim=True), torch.zeros_like(x))

        return dict(patient_img=norm(patient), left_img=norm(left_img, hl), right_img=norm(right_img, hr),
                    patient_txt=norm(txt), left_txt=norm(txt_l), right_txt=norm(txt_r))


def level_loss(img, txt, log_scale, valid, scale_max):
    img, txt = img[valid], txt[valid]
    scale = torch.clamp(log_scale, max=scale_max).exp()
    logits_per_image = scale * img @ txt.t()
    logits_per_text = scale * txt @ img.t()
    gt = torch.arange(len(img))
    return (F.cross_entropy(logits_per_image, gt) + F.cross_entropy(logits_per_text, gt)) / 2


def multi_positive_level(img, txt, log_scale, valid, ids, scale_max):
    """Symmetric multi-positive InfoNCE over the valid rows: query i's target is uniform
    over the rows j with ids[j] == ids[i]; each direction averages over the queries."""
    idx = valid.nonzero().view(-1)
    i, t, r = img[idx], txt[idx], ids[idx]
    s = log_scale.clamp(max=scale_max).exp()
    pos = (r[:, None] == r[None, :]).to(i.dtype)
    loss = 0.0
    for logits in (s * i @ t.t(), s * t @ i.t()):
        logp = F.log_softmax(logits, dim=1)
        loss = loss + (-(pos * logp).sum(1) / pos.sum(1)).mean()
    return loss / 2


def synthetic_init(module):
    """Same values as the C++ test's synthetic_init: parameter i (sorted by name) is drawn
    with torch.manual_seed(1000 + i) -- one LibTorch, one generator, identical numbers."""
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(module.named_parameters())):
            torch.manual_seed(1000 + i)
            v = torch.randn(p.shape) * 0.02
            if name.startswith("logit_scale"):
                v = torch.full(p.shape, math.log(90))
            elif "LayerNorm.weight" in name or ".ln_" in name and name.endswith("weight"):
                v = v + 1.0
            p.copy_(v)


def load_params(module, params, prefix=""):
    sd = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    ref_keys = {k for k, _ in module.named_parameters()}
    if set(sd) != ref_keys:
        raise SystemExit(f"key mismatch: only C++: {sorted(set(sd) - ref_keys)[:8]} "
                         f"only reference: {sorted(ref_keys - set(sd))[:8]}")
    missing, unexpected = module.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("position_ids") for k in missing), missing


def main():
    mode, src, dst = sys.argv[1:4]
    # torch::pickle_save tags dict types with this helper; it only restores type tags.
    torch.serialization.add_safe_globals([torch.jit._pickle.restore_type_tag])
    d = torch.load(src, weights_only=True)
    cfg = {k[4:]: v.item() for k, v in d.items() if k.startswith("cfg.")}
    params = {k[6:]: v for k, v in d.items() if k.startswith("param.")}
    inp = {k[3:]: v for k, v in d.items() if k.startswith("in.")}
    torch.set_num_threads(int(cfg.get("threads", 1)))
    out = {}
    if mode == "bert":
        bert = make_bert(cfg).eval()
        load_params(bert, params, "bert.")
        with torch.no_grad():
            out["out.hidden"] = bert_hidden(bert, inp["tokens"])
    elif mode == "vit":
        vit = make_vit(cfg).eval()
        load_params(vit, params, "visual.")
        with torch.no_grad():
            out["out.features"] = vit(inp["images"])
    elif mode == "full":
        model = RetClipReference(cfg).eval()
        if cfg.get("synthetic_init", 0):
            synthetic_init(model)
        else:
            load_params(model, params)
        has_left, has_right = inp["has_left"].bool(), inp["has_right"].bool()
        backward = bool(cfg.get("backward", 0))
        with torch.set_grad_enabled(backward):
            e = model(inp["left"], inp["right"], inp["tokens"], has_left, has_right)
            smax = cfg["logit_scale_max"]
            lp = level_loss(e["patient_img"], e["patient_txt"], model.logit_scale, torch.ones_like(has_left), smax)
            ll = level_loss(e["left_img"], e["left_txt"], model.logit_scale_left, has_left, smax)
            lr = level_loss(e["right_img"], e["right_txt"], model.logit_scale_right, has_right, smax)
            total = cfg["weight_patient"] * lp + cfg["weight_left"] * ll + cfg["weight_right"] * lr
        for k, v in e.items():
            out["out." + k] = v.detach()
        out.update({"out.loss_patient": lp.detach(), "out.loss_left": ll.detach(),
                    "out.loss_right": lr.detach(), "out.loss_total": total.detach()})
        if backward:
            total.backward()
            for k, p in model.named_parameters():
                out["grad." + k] = p.grad if p.grad is not None else torch.zeros_like(p)
    elif mode == "multipos":
        img = inp["img"].double().requires_grad_(True)
        txt = inp["txt"].double().requires_grad_(True)
        scale = inp["log_scale"].double().requires_grad_(True)
        loss = multi_positive_level(img, txt, scale, inp["valid"].bool(), inp["ids"],
                                    cfg["logit_scale_max"])
        loss.backward()
        out.update({"out.loss": loss.detach(), "grad.img": img.grad, "grad.txt": txt.grad,
                    "grad.log_scale": scale.grad})
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected bert, vit, full or multipos")
    torch.save(out, dst)


if __name__ == "__main__":
    main()
