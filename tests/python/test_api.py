"""hallmark.Registry against the CLI: identical verdicts and p-values; errors as exceptions."""

import json
import time
import os

import pytest

import hallmark
from conftest import cli_detect_texts, hm, same_verdicts, synthetic_marked


def test_human_corpus_equals_cli(registry, human_texts):
    reg = hallmark.Registry(registry["dir"])
    py = reg.detect_texts(human_texts, alpha=1e-3)
    cli = cli_detect_texts(human_texts, registry["dir"], registry["work"], name="human")
    same_verdicts(py, cli)
    # The null: at most about alpha of human documents falsely match (family-wise alpha = 1e-3
    # per document, both keys together). Tolerance: P(Binomial(2524, 1e-3) >= 13) < 4e-6.
    false = sum(r["match"] for r in py)
    assert false <= 12, false
    assert py[0]["input"] == "texts[0]"
    decided = sum(r["decided"] for r in py)
    print(f"FIGURE human corpus: {len(py)} docs, {decided} decided, {false} false matches at alpha 1e-3")


def test_watermarked_equals_cli_and_matches(registry):
    texts = [synthetic_marked(registry["keys"][s], seed=i) for s in ("kgw", "gumbel") for i in range(3)]
    reg = hallmark.Registry(registry["dir"])
    py = reg.detect_texts(texts)
    cli = cli_detect_texts(texts, registry["dir"], registry["work"], name="marked")
    same_verdicts(py, cli)
    for r, scheme in zip(py, ["kgw"] * 3 + ["gumbel"] * 3):
        assert r["match"], r
        best = min(r["results"], key=lambda t: t["log10_p"])
        assert best["kind"] == scheme
        assert r["scored_tokens"] > 100


def test_default_registry_follows_env(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("HALLMARK_REGISTRY", str(registry["dir"]))
    assert os.path.samefile(hallmark.Registry().path, registry["dir"])
    monkeypatch.delenv("HALLMARK_REGISTRY")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(hallmark.RegistryError, match="keys"):
        hallmark.Registry()


def test_weights_equal_cli(registry, models):
    reg = hallmark.Registry(registry["dir"])
    py = reg.detect_weights(models["minilm"])
    p = hm("detect", models["minilm"], "--json", "--registry", registry["dir"])
    cli = json.loads(p.stdout)
    assert py == cli
    assert py["match"] and py["kind"] == "weights"
    with pytest.raises(hallmark.InputError, match="not a weight file"):
        reg.detect_weights(models["human"])


def test_short_text_is_undecided_never_clean(registry):
    r = hallmark.Registry(registry["dir"]).detect_text("Hello there.")
    assert r["decided"] is False and r["match"] is False
    assert r["status"] == "undecided" and r["p_value"] is None


def test_errors_are_hallmark_errors_with_the_cli_message(registry, tmp_path):
    reg = hallmark.Registry(registry["dir"])
    with pytest.raises(hallmark.InputError, match=r"alpha must be in \(0, 1\)"):
        reg.detect_texts(["x"], alpha=2)
    with pytest.raises(TypeError):
        reg.detect_texts([b"bytes"])
    with pytest.raises(TypeError):
        reg.detect_texts("a single string")
    missing = tmp_path / "nope"
    with pytest.raises(hallmark.RegistryError) as e:
        hallmark.Registry(missing)
    cli = hm("detect", "-", "--registry", missing, check=False)
    assert cli.returncode == 2
    assert str(e.value) in cli.stderr, (str(e.value), cli.stderr)
    bad = tmp_path / "bad.wmkey"
    bad.write_text('{"format": "hallmark-wmkey", "version": 99}')
    with pytest.raises(hallmark.InputError) as e:
        hallmark.WatermarkKey.load(bad)
    assert "bad.wmkey" in str(e.value)
    assert issubclass(hallmark.InputError, hallmark.Error)
    with pytest.raises(hallmark.Error):
        reg.detect_path(tmp_path / "missing-file")


def test_damaged_registry_entry_is_an_error_result(registry, tmp_path):
    import shutil

    d = tmp_path / "keys"
    shutil.copytree(registry["dir"], d)
    victim = next(p for p in d.rglob("*.wmkey"))
    victim.write_text("{ not json")
    reg = hallmark.Registry(d)
    r = reg.detect_text("word " * 300)
    assert r["status"] == "error" and not r["match"]
    assert any("error" in t for t in r["results"])
    cli = cli_detect_texts(["word " * 300], d, tmp_path)
    same_verdicts([r], cli)


def test_fifo_key_and_entries_swapped_after_open_never_block(registry, tmp_path):
    """Issue 25: `WatermarkKey.load(fifo)` is refused at once (it used to block holding the
    GIL), and a registry entry swapped for a FIFO after `Registry()` changes nothing: entries
    are read once, when the registry is opened, and never re-read."""
    import os
    import shutil

    fifo = tmp_path / "k.wmkey"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(hallmark.InputError, match=r"not a regular file \(a FIFO\)") as e:
        hallmark.WatermarkKey.load(fifo)
    assert "k.wmkey" in str(e.value)
    d = tmp_path / "keys"
    shutil.copytree(registry["dir"], d)
    reg = hallmark.Registry(d)
    before = reg.detect_text("word " * 300)
    for p in d.rglob("*.wmkey"):
        p.unlink()
        os.mkfifo(p)
    after = reg.detect_text("word " * 300)
    assert [(r["name"], r["p_value"]) for r in after["results"]] == [
        (r["name"], r["p_value"]) for r in before["results"]
    ]
    # A registry opened now names each FIFO as unusable (exit-2 semantics: status error).
    r = hallmark.Registry(d).detect_text("word " * 300)
    assert r["status"] == "error"
    assert sum("a FIFO" in (t.get("error") or "") for t in r["results"]) == 2
    assert time.monotonic() - t0 < 60
