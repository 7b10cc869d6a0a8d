"""hallmark.sign / hallmark.verify: the CLI's semantics and JSON, both ways."""

import json
import shutil

import pytest

import hallmark
from conftest import hm


@pytest.fixture()
def signed_model(tmp_path, models):
    model = tmp_path / "minilm"
    shutil.copytree(models["minilm"], model)
    hm("keygen", "--out", tmp_path / "release", "--alg", "p256")
    return model, tmp_path / "release.key", tmp_path / "release.pub"


def cli_verify(model, pub):
    p = hm("verify", model, "--pub", pub, "--json", check=False)
    return json.loads(p.stdout), p.returncode


def test_python_sign_cli_verify_and_back(signed_model):
    model, key, pub = signed_model
    r = hallmark.sign(model, key=key)
    assert r["signature"] == str(model / "model.sig")
    assert r["hash_type"] == "sha256" and r["model_signing_cli_gaps"] == []  # P-256 default
    assert r["tensors"] > 0
    cli, code = cli_verify(model, pub)
    assert code == 0 and cli["valid"]
    py = hallmark.verify(model, pub=pub)
    assert py == cli
    # Tamper: one byte of the weights; both name the file and the tensor.
    w = model / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1000] ^= 1
    w.write_bytes(bytes(data))
    cli, code = cli_verify(model, pub)
    py = hallmark.verify(model, pub=pub)
    assert code == 1 and py == cli and not py["valid"]
    changed = [f for f in py["files"] if f["status"] != "ok"]
    assert changed[0]["name"] == "model.safetensors" and changed[0]["changed_tensors"]


def test_cli_sign_python_verify_and_errors(signed_model, tmp_path):
    model, key, pub = signed_model
    hm("sign", model, "--key", key, "--hash", "blake3")
    assert hallmark.verify(model, pub=pub)["hash_type"] == "blake3"
    hm("keygen", "--out", tmp_path / "other")
    r = hallmark.verify(model, pub=tmp_path / "other.pub")
    assert r["valid"] is False and "error" in r
    with pytest.raises(hallmark.Error, match="no such file"):
        hallmark.verify(tmp_path / "missing", pub=pub)
    with pytest.raises(hallmark.InputError):
        hallmark.sign(model, key=tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(hallmark.SignatureError):
        hallmark.sign(model, key=tmp_path / "bad.key")
    with pytest.raises(hallmark.InputError, match="blake3"):
        hallmark.sign(model, key=key, hash="blake3", shard_size=1 << 20)
    # a failed sign never leaves a partial bundle
    before = (model / "model.sig").read_bytes()
    with pytest.raises(hallmark.Error):
        hallmark.sign(model, key=tmp_path / "bad.key")
    assert (model / "model.sig").read_bytes() == before


def test_extra_files_fail_and_ignore_matches_cli(signed_model):
    """A file the signature does not cover fails in Python as in the CLI, whatever it holds
    (here JSON shaped like a bundle); `ignore=` leaves it out as `verify --ignore` does, and
    never a signed file."""
    model, key, pub = signed_model
    hallmark.sign(model, key=key)
    (model / "evil.sig").write_text((model / "model.sig").read_text())
    cli, code = cli_verify(model, pub)
    py = hallmark.verify(model, pub=pub)
    assert code == 1 and py == cli and not py["valid"]
    assert any(f["name"] == "evil.sig" and f["status"] != "ok" for f in py["files"])
    p = hm("verify", model, "--pub", pub, "--json", "--ignore", "evil.sig", check=False)
    py = hallmark.verify(model, pub=pub, ignore=["evil.sig"])
    assert p.returncode == 0 and py == json.loads(p.stdout) and py["valid"]
    # absolute paths inside the model work too
    assert hallmark.verify(model, pub=pub, ignore=[model / "evil.sig"])["valid"]
    # a signed file cannot be ignored away
    (model / "config.json").write_text("{}")
    assert not hallmark.verify(model, pub=pub, ignore=["evil.sig", "config.json"])["valid"]
    with pytest.raises(TypeError):
        hallmark.verify(model, pub=pub, ignore="evil.sig")
