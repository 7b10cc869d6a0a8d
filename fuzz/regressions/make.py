#!/usr/bin/env python3
"""Write the fuzz regression corpus: small hostile inputs for each fuzz target, named
`err-*` (the parser must refuse it) or `ok-*` (it must accept it), plus valid seeds.

The files are committed; tests/hostile.rs replays every one through the same functions the
fuzz targets call (so a regression fails `cargo test`, not only a fuzz run), and the fuzz runs
in fuzz/README.md start from them. Re-run from the repository root after a format change:

    python3 fuzz/regressions/make.py

The valid bundle, keys and fingerprint are made with the built hallmark binaries
(cargo build --release first).
"""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "regressions")
BIN = os.path.join(ROOT, "target", "release")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- safetensors -------------------------------------------------------------------------

def st(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors():
    t = "safetensors_header"
    a = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    put(t, "ok-tiny.safetensors", st({"__metadata__": {"format": "pt"}, "a": a}, bytes(16)))
    put(t, "err-header-length-u64-max", struct.pack("<Q", 2**64 - 1) + b"{}")
    put(t, "err-header-length-over-100mb", struct.pack("<Q", 100_000_001) + b"{}")
    put(t, "err-header-past-eof", struct.pack("<Q", 4096) + b'{"a":')
    # The issue's 100 MB metadata array, in miniature: refused at the array's first byte.
    put(t, "err-metadata-array", st({"__metadata__": {"x": list(range(1000))}}))
    put(t, "err-metadata-object", st({"__metadata__": {"x": {"y": "z"}}}))
    put(t, "err-17-dimensions", st({"a": {"dtype": "F32", "shape": [1] * 17, "data_offsets": [0, 4]}}, bytes(4)))
    put(t, "err-offsets-past-eof", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)))
    put(t, "err-offsets-overlap", st({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }, bytes(24)))
    put(t, "err-shape-overflow", st({"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 0]}}))
    put(t, "err-nesting-10000", struct.pack("<Q", 20000) + b"[" * 10000 + b"]" * 10000)
    dup = (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
           b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
    put(t, "err-duplicate-name", struct.pack("<Q", len(dup)) + dup + bytes(8))


# --- GGUF --------------------------------------------------------------------------------

def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors=b"", n_tensors=0, n_kv=None, data=b""):
    body = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs) if n_kv is None else n_kv)
    for k in kvs:
        body += k
    body += tensors
    pad = (-len(body)) % 32
    return body + bytes(pad) + data


def kv_str(k, v):
    return gstr(k) + struct.pack("<I", 8) + gstr(v)


def kv_arr(k, elem_type, count, payload):
    return gstr(k) + struct.pack("<IIQ", 9, elem_type, count) + payload


def ggufs():
    t = "gguf"
    tensor = gstr("a") + struct.pack("<I", 1) + struct.pack("<Q", 4) + struct.pack("<IQ", 0, 0)
    tokens = kv_arr("tokenizer.ggml.tokens", 8, 2, gstr("a") + gstr("b"))
    put(t, "ok-tiny.gguf", gguf([kv_str("general.architecture", "llama"), tokens], tensor, 1, data=bytes(16)))
    # The issue's 2^27-element u8 array, claimed but not present: refused, nothing allocated.
    put(t, "err-array-2e27-truncated.gguf", gguf([kv_arr("a", 0, 2**27, b"")]))
    put(t, "err-array-2e62.gguf", gguf([kv_arr("a", 0, 2**62, b"")]))
    put(t, "err-string-length-huge.gguf", gguf([gstr("a") + struct.pack("<I", 8) + struct.pack("<Q", 2**62)]))
    put(t, "err-key-length-huge.gguf", gguf([struct.pack("<Q", 2**63)]))
    put(t, "err-n-tensors-huge.gguf", gguf([], n_tensors=2**63))
    put(t, "err-n-kv-huge.gguf", gguf([], n_kv=2**63))
    # An array of arrays nested 100 deep (the reader stops at 64).
    nested = gstr("a") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 99 + struct.pack("<IQ", 0, 0)
    put(t, "err-nesting-100.gguf", gguf([nested]))
    put(t, "err-bad-value-type.gguf", gguf([gstr("a") + struct.pack("<I", 99)]))
    bad_dims = gstr("a") + struct.pack("<I", 5) + struct.pack("<QQQQQ", 1, 1, 1, 1, 1) + struct.pack("<IQ", 0, 0)
    put(t, "err-5-dimensions.gguf", gguf([], bad_dims, 1, data=bytes(32)))
    past = gstr("a") + struct.pack("<I", 1) + struct.pack("<Q", 1 << 40) + struct.pack("<IQ", 0, 0)
    put(t, "err-tensor-past-eof.gguf", gguf([], past, 1, data=bytes(32)))
    put(t, "err-truncated-magic", b"GGU")
    put(t, "err-version-1.gguf", b"GGUF" + struct.pack("<IQQ", 1, 0, 0))


# --- bundles -----------------------------------------------------------------------------

def run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bundles_and_entries():
    h = os.path.join(BIN, "hallmark")
    tm = os.path.join(BIN, "hallmark-testmodels")
    for b in (h, tm):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: cargo build --release first")
    with tempfile.TemporaryDirectory() as d:
        run(tm, "safetensors", "m.safetensors", cwd=d)
        run(h, "keygen", "--out", "k", cwd=d)
        run(h, "sign", "m.safetensors", "--key", "k.key", cwd=d)
        run(h, "wm-key", "--scheme", "weights", "--out", "w.wmkey", cwd=d)
        run(h, "fingerprint", "m.safetensors", "--out", "m.fp", cwd=d)
        sig = open(os.path.join(d, "m.safetensors.sig"), "rb").read()
        pub = open(os.path.join(d, "k.pub"), "rb").read()
        wkey = open(os.path.join(d, "w.wmkey"), "rb").read()
        fp = open(os.path.join(d, "m.fp"), "rb").read()

    t = "bundle"
    put(t, "ok-hallmark.sig", sig)
    b = json.loads(sig)
    # Fields hallmark does not read are skipped, whatever they hold.
    junk = dict(b)
    junk["verificationMaterial"] = dict(b["verificationMaterial"], tlogEntries=[{"x": "y" * 1000}] * 64)
    put(t, "ok-tlog-junk.sig", json.dumps(junk))
    many = json.loads(sig)
    many["dsseEnvelope"]["signatures"] = many["dsseEnvelope"]["signatures"] * 17
    put(t, "err-17-signatures.sig", json.dumps(many))
    put(t, "err-nesting-10000.sig", '{"dsseEnvelope":' + "[" * 10000 + "]" * 10000 + "}")
    bad64 = json.loads(sig)
    bad64["dsseEnvelope"]["payload"] = "***"
    put(t, "err-payload-not-base64.sig", json.dumps(bad64))
    st_ = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    for name, mutate in [
        ("resources-not-array", lambda s: s["predicate"].__setitem__("resources", {"a": 1})),
        ("ignore-paths-not-strings", lambda s: s["predicate"]["serialization"].__setitem__("ignore_paths", [1])),
        ("subject-empty", lambda s: s.__setitem__("subject", [])),
        ("wrong-type", lambda s: s.__setitem__("_type", "x")),
    ]:
        s = json.loads(json.dumps(st_))
        mutate(s)
        m = json.loads(sig)
        m["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(s).encode()).decode()
        put(t, f"err-statement-{name}.sig", json.dumps(m))
    put(t, "err-not-json.sig", b"\xff\xfe not json")

    t = "registry_entry"
    put(t, "ok-ed25519.pub", pub)
    put(t, "ok-weights.wmkey", wkey)
    put(t, "ok-tiny.fp", fp)
    w = json.loads(wkey)
    for name, mutate in [
        ("kgw-without-gamma", lambda k: k.update(scheme="kgw", delta=2.0, context="left", context_width=1)),
        ("weights-strength-nan", lambda k: k.update(strength="NaN")),
        ("weights-fraction-2", lambda k: k.update(fraction=2.0)),
        ("key-not-hex", lambda k: k.update(key="zz")),
        ("version-99", lambda k: k.update(version=99)),
    ]:
        k = dict(w)
        mutate(k)
        put(t, f"err-{name}.wmkey", json.dumps(k))
    f = json.loads(fp)
    for name, mutate in [
        ("hidden-0", lambda x: x.update(hidden=0)),
        ("vocab-0", lambda x: x.update(vocab=0)),
        ("version-1", lambda x: x.update(version=1)),
        ("probes-not-array", lambda x: x.update(probes=7)),
        ("rows-past-vocab", lambda x: x["embedding"].update(rows=[10**9])),
    ]:
        x = json.loads(json.dumps(f))
        mutate(x)
        put(t, f"err-{name}.fp", json.dumps(x))
    put(t, "err-pem-garbage.pub", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    put(t, "err-nesting-10000.fp", "[" * 10000 + "]" * 10000)


if __name__ == "__main__":
    for t in ("safetensors_header", "gguf", "bundle", "registry_entry"):
        shutil.rmtree(os.path.join(OUT, t), ignore_errors=True)
    safetensors()
    ggufs()
    bundles_and_entries()
    for t in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, t)
        if os.path.isdir(p):
            print(f"{t}: {len(os.listdir(p))} files")
