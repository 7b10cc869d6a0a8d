#!/usr/bin/env python3
"""Seed and regression corpus for the fuzz targets added with issue 24 (sigstore_bundle,
trusted_root, reuse_state, pem_chain), made from checked-in test vectors. Names say the
outcome tests/hostile.rs (`fuzz_regression_corpus_replays`) expects: `err-*` refused, `ok-*`
accepted. Run from the repository root: python3 fuzz/regressions/make_issue24.py
"""
import base64
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fuzz", "regressions")
VEC = os.path.join(ROOT, "tests", "vectors")
MT = os.path.join(VEC, "sigstore", "model-transparency")


def read(*p):
    with open(os.path.join(*p), "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    # sigstore_bundle: accepted = verifies under the public-good root for the maintainers'
    # identity (as tests/pki.rs verifies it).
    real = read(MT, "v1.1.0-sigstore", "model.sig")
    put("sigstore_bundle", "ok-model-transparency-v1.1.0.sig", real)
    b = json.loads(real)
    put("sigstore_bundle", "err-not-json.sig", b"{")
    put("sigstore_bundle", "err-empty-object.sig", b"{}")
    x = json.loads(real)
    x["verificationMaterial"]["tlogEntries"] = []
    put("sigstore_bundle", "err-no-tlog-entry.sig", json.dumps(x))
    x = json.loads(real)
    x["verificationMaterial"]["tlogEntries"][0]["kindVersion"] = {"kind": "dsse", "version": "0.0.2"}
    put("sigstore_bundle", "err-rekor-v2-dsse.sig", json.dumps(x))
    x = json.loads(real)
    sig = base64.b64decode(x["dsseEnvelope"]["signatures"][0]["sig"])
    x["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    put("sigstore_bundle", "err-signature-flipped.sig", json.dumps(x))
    x = json.loads(real)
    x["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(read(MT, "signing-key-cert.pem")).decode()
    put("sigstore_bundle", "err-certificate-is-pem.sig", json.dumps(x))
    del b

    # trusted_root: accepted = parses.
    root = read(ROOT, "src", "signing", "sigstore", "public_good_trusted_root.json")
    put("trusted_root", "ok-public-good.json", root)
    put("trusted_root", "err-not-json.json", b"[")
    put("trusted_root", "err-media-type-number.json", b'{"mediaType": 3}')
    r = json.loads(root)
    r["tlogs"][0]["publicKey"]["rawBytes"] = "!!"
    put("trusted_root", "err-tlog-key-not-base64.json", json.dumps(r))
    r = json.loads(root)
    r["certificateAuthorities"] = "x"
    put("trusted_root", "err-cas-not-array.json", json.dumps(r))
    r = json.loads(root)
    r["tlogs"][0]["publicKey"]["validFor"] = {"start": "yesterday"}
    put("trusted_root", "err-bad-validity.json", json.dumps(r))

    # reuse_state: accepted = the envelope parses (is_state_file); decode under the fuzz
    # target's fixed key always fails.
    env = {"format": "hallmark-reuse-state", "version": 1,
           "payload": base64.b64encode(b'{"bundle_sha256":"00","files":[]}').decode(),
           "signature": base64.b64encode(b"\0" * 64).decode()}
    put("reuse_state", "ok-envelope-unsigned.reuse", json.dumps(env))
    put("reuse_state", "err-format-only.reuse", b'{"format": "hallmark-reuse-state", "version": 1}')
    put("reuse_state", "err-version-2.reuse", json.dumps(dict(env, version=2)))
    put("reuse_state", "err-other-format.reuse", json.dumps(dict(env, format="x")))
    put("reuse_state", "err-not-json.reuse", b"\xff\xfe")
    put("reuse_state", "err-payload-number.reuse", json.dumps(dict(env, payload=3)))

    # pem_chain: accepted = a certificate chain or a public key reads.
    put("pem_chain", "ok-certtool-public-key.pem", read(MT, "signing-key-pub.pem"))
    put("pem_chain", "ok-chain.pem", read(MT, "signing-key-cert.pem") + read(MT, "int-ca-cert.pem")
        + read(MT, "ca-cert.pem"))
    put("pem_chain", "err-private-key.pem", read(MT, "signing-key.pem"))
    pub = read(MT, "signing-key-pub.pem")
    put("pem_chain", "err-two-public-keys.pem", pub + pub)
    put("pem_chain", "err-not-base64.pem", b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n")
    put("pem_chain", "err-cert-not-der.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    put("pem_chain", "err-no-end.pem", b"-----BEGIN PUBLIC KEY-----\nMHYw\n")


if __name__ == "__main__":
    main()
