#!/usr/bin/env python3
"""Oracle for the retclip WordPiece tokenizer (tests/data/tokenizer_oracle_test.cpp).

Trains a small BERT WordPiece vocabulary (tokenizers.BertWordPieceTokenizer) on
English and Chinese ophthalmic sentences written below (no download), then writes
  OUT/vocab.txt    the vocabulary ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4)
  OUT/cases.json   for >= 200 test sentences: the ids of transformers.BertTokenizer
                   (do_lower_case True and False), of BertTokenizerLegacy (the pure
                   Python tokenizer) when present, and the Chinese-CLIP tokenize()
                   layout at context length 100.
  OUT/sweep.json   BasicTokenizer words of "a<c>b" for every code point c of the
                   sweep blocks (Latin ... Hangul samples, full-width forms, emoji),
                   from BertTokenizer's normaliser + pre-tokenizer (Rust), lower-cased
                   and cased, whether c is unassigned (Cn) in Python's Unicode 14.0,
                   then the words of the legacy Python BasicTokenizer (lower, cased).
Usage: tok_oracle.py OUT_DIR
"""
import json
import os
import random
import sys
import unicodedata

import transformers
from tokenizers import BertWordPieceTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONTEXT = 100

EN_FINDINGS = [
    "drusen", "soft drusen", "hard exudates", "dot-blot haemorrhages", "flame haemorrhages",
    "microaneurysms", "cotton-wool spots", "neovascularisation of the disc", "venous beading",
    "macular oedema", "epiretinal membrane", "optic disc cupping", "peripapillary atrophy",
    "tessellated fundus", "laser photocoagulation scars", "retinal detachment",
    "branch retinal vein occlusion", "central serous chorioretinopathy", "vitreous haze",
    "pigment epithelial detachment", "geographic atrophy", "choroidal naevus",
    "myopic crescent", "arteriovenous nicking", "tortuous vessels", "no abnormality",
]
EN_TEMPLATES = [
    "Left eye: {a}. Right eye: {b}.",
    "The right fundus shows {a}; the left fundus shows {b}.",
    "OD: {a}, C/D ratio {r}. OS: {b}, C/D ratio {s}.",
    "Both eyes: {a} and {b} (grade {g}).",
    "Impression: {a} in the left eye, {b} in the right eye; follow-up in {m} months.",
    "Visual acuity {r} OD and {s} OS. Findings: {a}.",
    "Non-proliferative diabetic retinopathy with {a}, IOP {p} mmHg.",
    "Suspected glaucoma: {a}, cup-to-disc ratio {r}, refer to clinic.",
]
ZH_FINDINGS = [
    "视盘边界清楚", "杯盘比约0.3", "黄斑中心凹反光可见", "视网膜散在出血点", "可见硬性渗出",
    "微血管瘤", "棉絮斑", "视网膜静脉阻塞", "黄斑水肿", "视网膜前膜", "玻璃膜疣",
    "豹纹状眼底", "视盘周围萎缩弧", "激光光凝斑", "视网膜脱离", "脉络膜痣", "动静脉交叉压迹",
    "血管迂曲扩张", "未见明显异常", "玻璃体混浊", "新生血管形成", "色素上皮脱离", "地图样萎缩",
    "高度近视眼底改变", "糖尿病视网膜病变", "青光眼性视神经病变", "年龄相关性黄斑变性",
]
ZH_TEMPLATES = [
    "左眼：{a}。右眼：{b}。",
    "双眼{a}，{b}。",
    "右眼{a}；左眼{b}，建议随访{m}个月。",
    "诊断：{a}（左眼），{b}（右眼）。",
    "眼底照相示：{a}，{b}，杯盘比{r}。",
    "患者男性，{age}岁，{a}，眼压{p}mmHg。",
]
# A few hundred more CJK characters so the vocabulary holds them as single tokens.
ZH_EXTRA = (
    "眼科检查报告患者女性年龄主诉视力下降模糊眼前黑影飘动闪光感疼痛红肿畏光流泪既往史高血压"
    "糖尿病治疗药物手术白内障晶状体角膜结膜巩膜虹膜瞳孔对光反射前房深度房角开放关闭眼压测量"
    "正常偏高偏低荧光素血管造影光学相干断层扫描厚度增加减少神经纤维层缺损视野检查暗点扩大缩小"
    "复查转诊门诊住院观察随访定期控制血糖血压饮食运动营养补充维生素抗氧化注射激光治疗玻璃体切"
    "除术硅油填充气体复位成功失败并发症感染炎症出血渗出水肿萎缩变性增殖纤维牵拉裂孔变薄隆起"
    "凹陷边缘清晰模糊颜色苍白充血淡红灰白黄白色点片状条索状放射状环形局限弥漫散在密集孤立多发"
    "单发轻度中度重度早期晚期活动静止稳定进展好转恶化明显未见可疑考虑排除诊断建议结论医师签名"
)
EDGE_CASES = [
    "Café au lait spots near the naïve fovea; Sjögren's syndrome?",
    "RÉTINOPATHIE DIABÉTIQUE — ŒDÈME MACULAIRE",
    "Ångström-level resolution, façade, jalapeño, crème brûlée",
    "Mixed CaSe: LeFt EyE DrUsEn, RIGHT eye NORMAL.",
    "C/D 0.3, IOP 21.5 mmHg, VA 20/40, 6/9, -3.25D, +1.00DS, 3+",
    "视盘边界清，C/D 0.3，黄斑区见玻璃膜疣。",
    "左眼：视网膜出血；右眼：正常。",
    "（左眼）【诊断】《报告》“引号”‘单引号’、顿号！问号？",
    "Emoji test 😀 👁️ retina 🩺 ok",
    "眼底正常😊",
    "a" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "x" * 100,
    "hyphen-ated, under_score, slash/word, back\\slash, at@sign, hash#tag, 100% sure",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "zero\u200bwidth space and soft\u00adhyphen",
    "non\u00a0breaking and ideographic\u3000space",
    "Greek: α-angle, β-zone, ΔIOP, μm, 10° temporal, ±2, ×3",
    "Full-width ＡＢＣ ａｂｃ １２３ ，。：；！？",
    "Combining e\u0301 and a\u0308 marks",
    "Tiếng Việt: võng mạc, điểm vàng",
    "Русский: сетчатка, ДИСК зрительного нерва",
    "한국어 망막 검사",
    "日本語：網膜剥離と黄斑浮腫、かな",
    "",
    "   ",
    "...",
    "[no] (brackets) {braces} <angles>",
    "Line\u2028separator and paragraph\u2029separator",
    "ＩＯＰ１５ｍｍＨｇ",
]


def build_corpus(rng):
    lines = []
    for _ in range(500):
        t = rng.choice(EN_TEMPLATES)
        lines.append(t.format(a=rng.choice(EN_FINDINGS), b=rng.choice(EN_FINDINGS),
                              r=f"0.{rng.randint(1, 9)}", s=f"0.{rng.randint(1, 9)}",
                              g=rng.randint(1, 4), m=rng.randint(1, 12),
                              p=rng.randint(10, 35)))
    for _ in range(500):
        t = rng.choice(ZH_TEMPLATES)
        lines.append(t.format(a=rng.choice(ZH_FINDINGS), b=rng.choice(ZH_FINDINGS),
                              m=rng.randint(1, 12), r=f"0.{rng.randint(1, 9)}",
                              age=rng.randint(20, 90), p=rng.randint(10, 35)))
    for i in range(0, len(ZH_EXTRA), 20):
        lines.append(ZH_EXTRA[i:i + 20])
    lines.append("café naïve résumé rétinopathie œdème ångström")
    return lines


def test_sentences(rng):
    out = list(EDGE_CASES)
    for _ in range(120):
        t = rng.choice(EN_TEMPLATES)
        s = t.format(a=rng.choice(EN_FINDINGS), b=rng.choice(EN_FINDINGS),
                     r=f"0.{rng.randint(1, 9)}", s=f"0.{rng.randint(1, 9)}",
                     g=rng.randint(1, 4), m=rng.randint(1, 12), p=rng.randint(10, 35))
        if rng.random() < 0.3:
            s = s.upper()
        out.append(s)
    for _ in range(100):
        t = rng.choice(ZH_TEMPLATES)
        out.append(t.format(a=rng.choice(ZH_FINDINGS), b=rng.choice(ZH_FINDINGS),
                            m=rng.randint(1, 12), r=f"0.{rng.randint(1, 9)}",
                            age=rng.randint(20, 90), p=rng.randint(10, 35)))
    # long reports: truncation at the context length
    for _ in range(10):
        out.append(" ".join(rng.choice(EN_FINDINGS) + "," for _ in range(40)))
        out.append("，".join(rng.choice(ZH_FINDINGS) for _ in range(25)) + "。")
    return out


def ids_of(tok, text):
    return tok.convert_tokens_to_ids(tok.tokenize(text))


def reference_layout(tok, text):
    # Chinese-CLIP cn_clip/clip/utils.py tokenize(), one text, padded with 0.
    ids = [tok.vocab["[CLS]"]] + ids_of(tok, text)[:CONTEXT - 2] + [tok.vocab["[SEP]"]]
    return ids + [0] * (CONTEXT - len(ids))


SWEEP_BLOCKS = [(0x0000, 0x33FF), (0xA000, 0xA0FF), (0xAC00, 0xAD00), (0xF900, 0xF9FF),
                (0xFB00, 0xFFFF), (0x1F300, 0x1F64F), (0x1D400, 0x1D4FF), (0xE0000, 0xE007F)]


def sweep(fast_lower, fast_cased):
    def words(tok, text):
        bt = tok.backend_tokenizer
        return [w for w, _ in bt.pre_tokenizer.pre_tokenize_str(bt.normalizer.normalize_str(text))]
    try:
        from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
        legacy_lower, legacy_cased = BasicTokenizer(do_lower_case=True), BasicTokenizer(do_lower_case=False)
    except ImportError:
        legacy_lower = legacy_cased = None
    out = []
    for lo, hi in SWEEP_BLOCKS:
        for c in range(lo, hi + 1):
            if 0xD800 <= c <= 0xDFFF:
                continue
            text = "a" + chr(c) + "b"
            row = [c, words(fast_lower, text), words(fast_cased, text),
                   unicodedata.category(chr(c)) == "Cn"]
            if legacy_lower is not None:
                row += [legacy_lower.tokenize(text), legacy_cased.tokenize(text)]
            out.append(row)
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(20240521)
    trainer = BertWordPieceTokenizer(lowercase=True, strip_accents=True,
                                     handle_chinese_chars=True, clean_text=True)
    trainer.train_from_iterator(build_corpus(rng), vocab_size=900, min_frequency=1,
                                special_tokens=SPECIALS, limit_alphabet=1000,
                                show_progress=False)
    trainer.save_model(out_dir)
    vocab_file = os.path.join(out_dir, "vocab.txt")
    with open(vocab_file, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    assert vocab[:5] == SPECIALS, vocab[:5]
    lower = transformers.BertTokenizer(vocab_file, do_lower_case=True)
    cased = transformers.BertTokenizer(vocab_file, do_lower_case=False)
    legacy = None
    if hasattr(transformers, "BertTokenizerLegacy"):
        legacy = transformers.BertTokenizerLegacy(vocab_file, do_lower_case=True)
    cases = []
    for text in test_sentences(rng):
        case = {"text": text, "ids": ids_of(lower, text), "ids_cased": ids_of(cased, text),
                "encoded": reference_layout(lower, text)}
        if legacy is not None:
            case["ids_legacy"] = ids_of(legacy, text)
        cases.append(case)
    with open(os.path.join(out_dir, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"vocab": vocab_file, "vocab_size": len(vocab), "context": CONTEXT,
                   "tokenizer": type(lower).__name__, "cases": cases}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "sweep.json"), "w", encoding="utf-8") as f:
        json.dump(sweep(lower, cased), f, ensure_ascii=False)
    n_unk = sum(c["ids"].count(1) for c in cases)
    print(f"tok_oracle: vocab {len(vocab)} tokens, {len(cases)} sentences, {n_unk} [UNK] ids, "
          f"legacy {'yes' if legacy is not None else 'no'}")


if __name__ == "__main__":
    main()
