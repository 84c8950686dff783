"""T2I-CompBench suite: prompt files, seeds, BLIP-VQA scoring and aggregation, folder naming."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.assets import get_asset
from mubench.config import build_params
from mubench.errors import AssetError, UsageError
from mubench.scorers.base import ScorerContext
from mubench.scorers.blip_vqa import (BlipVqa, BlipVqaParams, image_score, preprocess, question_for, round_prob,
                                      tiny_blip_vqa)
from mubench.suites.base import PromptItem, SampleRecord
from mubench.suites.compbench import (CompBenchParams, CompBenchSuite, export_samples, import_folder,
                                      read_prompt_file, read_vqa_results, running_index, sample_name)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "t2i-compbench"
CPU = ScorerContext(torch.device("cpu"), weights="random")


def need_shared():
    if not (SHARED / "color_val.txt").is_file():
        pytest.skip(f"{SHARED} not present")


def suite(**kw) -> CompBenchSuite:
    return CompBenchSuite(build_params(CompBenchParams, kw), "compbench")


@pytest.mark.parametrize("category", ["color", "shape", "texture"])
def test_official_prompt_files_parse_to_counts_and_hashes(category):
    need_shared()
    path = SHARED / f"{category}_val.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == get_asset(f"t2i-compbench-{category}").sha256
    prompts = read_prompt_file(path)
    assert len(prompts) == 300 and all(p == p.strip() and p for p in prompts)


def test_suite_items_seeds_and_assets():
    need_shared()
    s = suite(prompts_dir=str(SHARED), noun_phrases="rules")
    s.check_assets()
    items = s.items()
    assert len(items) == 900
    assert items[0].id == "color-000" and items[300].id == "shape-000" and items[-1].id == "texture-299"
    assert items[0].meta["noun_phrases"] == ["a green bench", "a blue bowl"]
    assert [s.image_seed(items[5], j, 0) for j in range(10)] == list(range(42, 52))
    assert s.image_seed(items[5], 3, 1) == 55
    proto = s.protocol()
    assert proto["noun_phrases"] in ("rules 2",) or proto["noun_phrases"].startswith("spacy")
    assert proto["prompt_files_sha256"]["color_val.txt"].startswith("16342597")


def test_wrong_prompt_file_stops_with_assets_message(tmp_path):
    (tmp_path / "color_val.txt").write_text("a red cube\n")
    with pytest.raises(AssetError, match="1634259756dbc77d"):
        suite(prompts_dir=str(tmp_path), categories=["color"]).check_assets()
    with pytest.raises(UsageError):
        suite(categories=["numeracy"])


def test_question_and_aggregation_rules_by_hand():
    assert question_for('A Red (Bench)!') == "a red bench?"
    assert question_for("a b c", max_words=2) == "a b"
    assert round_prob(0.123456, 4) == 0.1235
    assert image_score([0.8, 0.5, 0.25]) == 0.1
    assert image_score([0.8, 0.5, 0.25], np_num=2) == 0.4
    assert image_score([]) == 1.0
    assert image_score([0.33333, 0.33333], decimals=None) == pytest.approx(0.33333 ** 2)
    assert image_score([0.33333, 0.33333]) == 0.1111


def _record(item, j, score):
    return SampleRecord(item, j, 42 + j, f"k{item.id}{j}", "", {"vqa": {"score": score}})


def test_suite_aggregates_category_means_over_images():
    s = suite(categories=["color", "shape"], images_per_prompt=2)
    a = PromptItem("color-000", "p", {"category": "color", "index": 0})
    b = PromptItem("color-001", "q", {"category": "color", "index": 1})
    c = PromptItem("shape-000", "r", {"category": "shape", "index": 0})
    recs = [_record(a, 0, 0.5), _record(a, 1, 0.25), _record(b, 0, 1.0), _record(b, 1, 0.0),
            _record(c, 0, 0.2), _record(c, 1, 0.4)]
    m = s.aggregate(recs)
    assert set(m) == {"color", "shape"}
    assert m["color"].value == pytest.approx(0.4375) and m["color"].n == 4
    assert m["shape"].value == pytest.approx(0.3)
    assert m["color"].ci_low <= 0.4375 <= m["color"].ci_high
    units = s.units(recs)  # per image, paired by (prompt, image index) in compare and the report's marks
    assert set(units) == {"color", "shape"} and units["color"].value() == pytest.approx(0.4375)
    assert units["color"].keys() == [("color-000", 0, 0), ("color-000", 1, 0), ("color-001", 0, 0),
                                     ("color-001", 1, 0)]


def test_blip_scorer_products_of_crafted_vqa_outputs(monkeypatch):
    scorer = BlipVqa(BlipVqaParams(image_size=32, np_num=2), CPU, "vqa")
    answers = {"a red cube?": 0.91234, "a blue cone?": 0.5, "a green ball?": 0.7, "a cat?": 0.3}
    monkeypatch.setattr(scorer, "yes_probs", lambda px, qs: [answers[q] for q in qs])
    items = [PromptItem("x", "", {"noun_phrases": ["a red cube", "a blue cone", "a green ball"]}),
             PromptItem("y", "", {"noun_phrases": ["a cat"]}),
             PromptItem("z", "", {"noun_phrases": []})]
    out = scorer.score(torch.rand(3, 3, 16, 16), items)
    assert out[0]["questions"] == ["a red cube?", "a blue cone?"]  # np_num = 2 phrases asked
    assert out[0]["probs"] == [0.9123, 0.5]
    assert out[0]["score"] == round(0.9123 * 0.5, 4)
    assert out[1]["score"] == 0.3 and out[2]["score"] == 1.0


def test_tiny_blip_first_step_probability_matches_transformers_generate():
    scorer = BlipVqa(BlipVqaParams(image_size=32, enc_token=""), CPU, "vqa")
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    px = preprocess(images, 32)
    for b, q in enumerate(["a red bench?", "the fluffy cat and a wooden book?"]):
        ours = scorer.yes_probs(px[b:b + 1], [q])[0]
        enc = scorer.tokenizer([q], return_tensors="pt")
        g = scorer.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=px[b:b + 1],
                                  max_new_tokens=1, output_scores=True, return_dict_in_generate=True,
                                  do_sample=False)
        prob = torch.softmax(g.scores[0][0].double(), -1)
        ref = float(prob[scorer.yes_id] / (prob[scorer.yes_id] + prob[scorer.no_id]))
        assert ours == pytest.approx(ref, abs=1e-6)


def test_tiny_blip_batching_and_padding_do_not_change_probabilities():
    scorer = BlipVqa(BlipVqaParams(image_size=32), CPU, "vqa")
    px = preprocess(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), 32)
    qs = ["a red bench?", "a brown dog and the white car and a green bowl?", "a cat?"]
    together = scorer.yes_probs(px.expand(3, -1, -1, -1), qs)
    alone = [scorer.yes_probs(px, [q])[0] for q in qs]
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert all(0 < p < 1 for p in together)
    assert max(together) - min(together) > 1e-3  # the tiny model is not constant


def test_tiny_blip_leaves_no_temporary_files(tmp_path, monkeypatch):
    """The tokenizer reads its vocabulary once; the folder it was written to must not outlive the call."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _, tok = tiny_blip_vqa()
    assert tok("a red cat?").input_ids[1:-1] == tok.convert_tokens_to_ids(["a", "red", "cat", "?"])
    assert list(tmp_path.iterdir()) == []


def test_preprocess_squashes_with_clip_normalisation():
    img = torch.zeros(1, 3, 20, 40)
    img[:, 0] = 1.0
    x = preprocess(img, 16)
    assert x.shape == (1, 3, 16, 16)
    assert x[0, 0].mean().item() == pytest.approx((1 - 0.48145466) / 0.26862954, rel=1e-5)
    assert x[0, 1].mean().item() == pytest.approx(-0.4578275 / 0.26130258, rel=1e-5)


def _png(path, value):
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_export_and_import_reference_folder_naming(tmp_path):
    items = [PromptItem(f"color-{i:03d}", p, {"category": "color", "index": i})
             for i, p in enumerate(["a green bench and a blue bowl", "a red book"])]
    recs = []
    for it in items:
        for j in range(3):
            src = tmp_path / f"src-{it.id}-{j}.png"
            _png(src, 10 * j + it.meta["index"])
            recs.append(SampleRecord(it, j, 42 + j, "k", str(src)))
    written = export_samples(recs, tmp_path / "out", images_per_prompt=3)
    names = sorted(p.name for p in written)
    assert "a green bench and a blue bowl_000000.png" in names and "a red book_000005.png" in names
    assert sample_name("a red book", running_index(1, 2, 3)) == "a red book_000005.png"
    back = import_folder(tmp_path / "out" / "color", items, "color", images_per_prompt=3)
    assert [(s.item.id, s.image_index) for s in back] == [(it.id, j) for it in items for j in range(3)]
    assert np.asarray(Image.open(back[5].path))[0, 0, 0] == 21
    with pytest.raises(UsageError, match="exists"):
        export_samples(recs[:1], tmp_path / "out", images_per_prompt=3)
    # a file whose index belongs to another prompt is refused
    _png(tmp_path / "out" / "color" / "samples" / "a red book_000001.png", 0)
    with pytest.raises(UsageError, match="belongs to prompt"):
        import_folder(tmp_path / "out" / "color", items, "color", images_per_prompt=3)


def test_read_reference_vqa_results(tmp_path):
    f = tmp_path / "vqa_result.json"
    f.write_text(json.dumps([{"question_id": 0, "answer": "0.4123"}, {"question_id": 1, "answer": "0.9"}]))
    assert read_vqa_results(f) == {0: 0.4123, 1: 0.9}
    f.write_text("{}")
    with pytest.raises(UsageError):
        read_vqa_results(f)


def test_yaml_spec_resolves():
    from mubench.specs import find_spec, load_yaml

    _, path = find_spec("suites", "compbench")
    spec = load_yaml(path)
    for meta in ("kind", "description", "model", "models"):  # spec metadata, not parameters
        spec.pop(meta, None)
    p = build_params(CompBenchParams, spec)
    assert p.images_per_prompt == 10 and p.seed_base == 42 and p.vqa.np_num == 8 and p.vqa.image_size == 480


def test_a_port_converted_at_another_size_runs_at_the_protocol_size_with_interpolated_positions(tmp_path):
    """Salesforce/blip-vqa-capfilt-large ships a 384² vision config; the protocol scores at 480²: the position
    embeddings are interpolated (as BLIP's loader does), recorded in the protocol, not a shape error after 9,000
    generated images."""
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "?", "a", "red", "car"]
    (tmp_path / "vocab.txt").write_text("\n".join(words + [f"w{i}" for i in range(1100)]) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    text = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                encoder_hidden_size=32, bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id, pad_token_id=0)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=16,
                  image_size=48)  # the "port": 3x3 patches
    torch.manual_seed(0)
    BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ctx = ScorerContext(torch.device("cpu"))
    scorer = BlipVqa(BlipVqaParams(path=str(tmp_path), image_size=64), ctx, "vqa")  # the "protocol": 4x4 patches
    item = PromptItem("0", "a red car", {"noun_phrases": ["a red car"]})
    out = scorer.score(torch.rand(1, 3, 70, 70, generator=torch.Generator().manual_seed(0)), [item])
    assert 0 < out[0]["score"] < 1
    assert scorer.describe()["position_embeddings"] == "interpolated from 48² (bicubic)"
    native = BlipVqa(BlipVqaParams(path=str(tmp_path), image_size=48), ctx, "vqa")
    assert "position_embeddings" not in native.describe()


def test_a_full_reference_folder_imports_under_a_limit(tmp_path):
    """``score suite=compbench images=DIR limit=N``: the importer sees every prompt, then only the first N are kept
    (before, an image of prompt N+1 was refused as outside the N prompts)."""
    from mubench.imported import checked_images

    s = suite(categories=["color"], images_per_prompt=2)
    items = [PromptItem(f"color-{i:03d}", p, {"category": "color", "index": i})
             for i, p in enumerate(["a green bench", "a red book", "a blue car"])]
    s._items = items  # the suite's prompts, without the shared files
    samples = tmp_path / "color" / "samples"
    samples.mkdir(parents=True)
    for it in items:
        for j in range(2):
            _png(samples / sample_name(it.prompt, running_index(it.meta["index"], j, 2)), j)
    with pytest.raises(UsageError, match="outside the 1 color prompts"):  # what the limited importer alone says
        s.import_images(tmp_path, items[:1])
    found = checked_images(s, tmp_path, items, items[:1])
    assert [(f.item.id, f.image_index) for f in found] == [("color-000", 0), ("color-000", 1)]


def test_compbench_protocol_records_images_per_prompt_and_phrases_asked():
    """A run with fewer images per prompt or fewer noun phrases than the reference (10, np_num 8) is a different
    protocol; its record must say so."""
    s = CompBenchSuite(build_params(CompBenchParams, {"categories": ["color"], "images_per_prompt": 4,
                                                      "noun_phrases": "rules", "vqa": {"np_num": 2}}), "compbench")
    proto = s.protocol()
    assert proto["images_per_prompt"] == 4 and proto["np_num"] == 2
    assert "42 + 4*run_seed + j" in proto["seeds"]
