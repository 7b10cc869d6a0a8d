#!/usr/bin/env python3
"""Regenerate tests/vectors/pki-defects/: certificate PKIs with one defect each, OMS bundles
signed over them by model_signing 1.1.1, and model_signing / OpenSSL verdicts.

Usage (from the repository root, with a venv holding model_signing==1.1.1 and pyopenssl):
    VENV=/path/to/venv tests/vectors/pki-defects/gen.py

The certificates are made with pyca/cryptography (OpenSSL backend), not with hallmark; the
bundles with `model_signing sign certificate` / `sign key`; the verdicts with
`model_signing verify certificate|key` and `openssl verify`. Nothing here is hand-written
DER. Keys are fresh on every run, so a regeneration changes every file; the tests read
verdicts.tsv only for the documentation table and assert hallmark's own verdict per case.
"""

import datetime as dt
import os
import pathlib
import shutil
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

HERE = pathlib.Path(__file__).resolve().parent
VENV = pathlib.Path(os.environ.get("VENV", "test-models/cache/venv"))
MS = str(VENV / "bin" / "model_signing")
MT = HERE.parent / "sigstore" / "model-transparency"
FULCIO_USERNAME = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
UTC = dt.timezone.utc


def d(y, m=1, day=1):
    return dt.datetime(y, m, day, tzinfo=UTC)


def pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def key_pem(k):
    return k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(
    subject,
    key,
    issuer=None,
    issuer_key=None,
    *,
    ca=True,
    bc=True,
    path_len=None,
    ku=("key_cert_sign", "crl_sign"),
    eku=None,
    sans=None,
    nc=None,
    nb=d(2020),
    na=d(2099),
):
    """One certificate; `issuer=None` makes it self-signed."""
    issuer_name = issuer.subject if issuer is not None else name(subject)
    b = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
    )
    if bc:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
    if ku is not None:
        flags = dict.fromkeys(
            [
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        for f in ku:
            flags[f] = True
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    if nc is not None:
        b = b.add_extension(nc, critical=True)
    b = b.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    signer = issuer_key if issuer_key is not None else key
    return b.sign(signer, hashes.SHA256())


def leaf(issuer, issuer_key, sans, **kw):
    k = ec.generate_private_key(ec.SECP256R1())
    kw.setdefault("ku", ("digital_signature",))
    kw.setdefault("eku", [ExtendedKeyUsageOID.CODE_SIGNING])
    c = cert("signer", k, issuer, issuer_key, ca=False, sans=sans, **kw)
    return k, c


EMAIL = [x509.RFC822Name("release-bot@bigcorp.example")]


def root(cn="root", **kw):
    k = ec.generate_private_key(ec.SECP256R1())
    return k, cert(cn, k, **kw)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def write_case(case, root_pems, chain, leaf_key, leaf_cert, note):
    """A case directory: root.pem, leaf.pem, chain.pem, model.sig (model_signing), note."""
    out = HERE / case
    out.mkdir()
    (out / "root.pem").write_bytes(b"".join(root_pems))
    (out / "leaf.pem").write_bytes(pem(leaf_cert))
    (out / "chain.pem").write_bytes(b"".join(pem(c) for c in chain))
    (out / "note").write_text(note + "\n")
    tmp = HERE / ".tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "leaf.key").write_bytes(key_pem(leaf_key))
    args = [
        MS, "sign", "certificate", str(HERE / "model"),
        "--signature", str(out / "model.sig"),
        "--private_key", str(tmp / "leaf.key"),
        "--signing_certificate", str(out / "leaf.pem"),
    ]
    # model_signing cannot sign with an empty chain; the root then travels in the bundle,
    # as model_signing users ship it.
    args += ["--certificate_chain", str(out / ("chain.pem" if chain else "root.pem"))]
    r = run(args)
    if r.returncode != 0:
        sys.exit(f"{case}: model_signing sign failed:\n{r.stderr}")


def verdicts(case):
    out = HERE / case
    ms = run([
        MS, "verify", "certificate", str(HERE / "model"),
        "--signature", str(out / "model.sig"),
        "--certificate_chain", str(out / "root.pem"),
    ])
    ms_why = (ms.stderr.strip().splitlines() or [""])[-1]
    ms_why = ms_why.replace("Verification failed with error: ", "")[:160]
    ossl_args = ["openssl", "verify", "-CAfile", str(out / "root.pem")]
    if (out / "chain.pem").stat().st_size:
        ossl_args += ["-untrusted", str(out / "chain.pem")]
    o = run(ossl_args + [str(out / "leaf.pem")])
    o_why = "; ".join(
        l.split("lookup: ", 1)[1].strip()
        for l in (o.stdout + o.stderr).splitlines()
        if "lookup: " in l
    )[:160]
    return (
        "accept" if ms.returncode == 0 else "refuse",
        ms_why if ms.returncode else "",
        "accept" if o.returncode == 0 else "refuse",
        o_why if o.returncode else "",
    )


def main():
    for p in HERE.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
    model = HERE / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (model / "config.json").write_text('{"hidden_size": 64}\n')

    cases = []

    def add(case, roots, chain, lk, lc, note):
        write_case(case, [pem(r) for r in roots], chain, lk, lc, note)
        cases.append(case)

    # Class 1: model_signing's published test PKI. signing-key-cert.pem is CA:TRUE with key
    # usage digitalSignature only, and its private key is published: mint a leaf for anyone.
    mt_root = x509.load_pem_x509_certificate((MT / "ca-cert.pem").read_bytes())
    mt_int = x509.load_pem_x509_certificate((MT / "int-ca-cert.pem").read_bytes())
    mt_sign = x509.load_pem_x509_certificate((MT / "signing-key-cert.pem").read_bytes())
    mt_key = serialization.load_pem_private_key((MT / "signing-key.pem").read_bytes(), None)
    lk, lc = leaf(mt_sign, mt_key, EMAIL, na=d(2030))
    add("ms-test-pki-forgery", [mt_root], [mt_sign, mt_int], lk, lc,
        "leaf for release-bot@bigcorp.example issued with model_signing's published "
        "signing-key.pem by signing-key-cert.pem (CA:TRUE, keyUsage digitalSignature only)")

    # Control: a sound private CA.
    rk, rc = root()
    lk, lc = leaf(rc, rk, EMAIL)
    add("good", [rc], [], lk, lc, "sound root (CA:TRUE, keyCertSign) issues the leaf")

    # Class 2: trust anchors with a defect.
    for case, kw, note in [
        ("root-expired", dict(nb=d(2020), na=d(2021)), "root valid 2020-2021 only"),
        ("root-not-yet-valid", dict(nb=d(2090), na=d(2099)), "root valid from 2090"),
        ("root-ca-false", dict(ca=False), "root basicConstraints CA:FALSE"),
        ("root-no-basic-constraints", dict(bc=False), "root without basicConstraints"),
        ("root-no-keycertsign", dict(ku=("digital_signature", "crl_sign")),
         "root keyUsage digitalSignature, cRLSign (no keyCertSign)"),
    ]:
        rk, rc = root(**kw)
        lk, lc = leaf(rc, rk, EMAIL)
        add(case, [rc], [], lk, lc, note)
    # Path length on the anchor: pathLen 0, then one intermediate.
    rk, rc = root(path_len=0)
    ik = ec.generate_private_key(ec.SECP256R1())
    ic = cert("intermediate", ik, rc, rk)
    lk, lc = leaf(ic, ik, EMAIL)
    add("root-pathlen-0-with-intermediate", [rc], [ic], lk, lc,
        "root pathLenConstraint 0 above one intermediate CA")
    # Intermediates with a defect.
    for case, kw, note in [
        ("intermediate-no-keycertsign", dict(ku=("digital_signature",)),
         "intermediate CA:TRUE with keyUsage digitalSignature only"),
        ("intermediate-ca-false", dict(ca=False), "intermediate CA:FALSE"),
    ]:
        rk, rc = root()
        ik = ec.generate_private_key(ec.SECP256R1())
        ic = cert("intermediate", ik, rc, rk, **kw)
        lk, lc = leaf(ic, ik, EMAIL)
        add(case, [rc], [ic], lk, lc, note)

    # Class 4: identities.
    rk, rc = root()
    lk, lc = leaf(rc, rk, [x509.DNSName("release-bot.bigcorp.example")])
    add("san-dns-only", [rc], [], lk, lc, "leaf whose only SAN is DNS release-bot.bigcorp.example")
    lk, lc = leaf(rc, rk, [x509.OtherName(FULCIO_USERNAME, b"\x0c\x0brelease-bot")])
    add("san-username", [rc], [], lk, lc, "leaf whose only SAN is a Fulcio username otherName")
    lk, lc = leaf(rc, rk, [x509.UniformResourceIdentifier(
        "https://github.com/bigcorp/release/.github/workflows/release.yml@refs/heads/main")])
    add("san-uri", [rc], [], lk, lc, "leaf whose only SAN is a workflow URI")

    # Class 5: name constraints.
    nc = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name("bigcorp.example")],
                              excluded_subtrees=None)
    rk, rc = root(nc=nc)
    lk, lc = leaf(rc, rk, EMAIL)
    add("nc-root-email-permitted", [rc], [], lk, lc,
        "root permits email bigcorp.example; leaf release-bot@bigcorp.example")
    lk, lc = leaf(rc, rk, [x509.RFC822Name("release-bot@evil.example")])
    add("nc-root-email-outside", [rc], [], lk, lc,
        "root permits email bigcorp.example; leaf release-bot@evil.example")
    rk, rc = root()
    ik = ec.generate_private_key(ec.SECP256R1())
    ic = cert("intermediate", ik, rc, rk, nc=nc)
    lk, lc = leaf(ic, ik, EMAIL)
    add("nc-intermediate-email-permitted", [rc], [ic], lk, lc,
        "intermediate permits email bigcorp.example; leaf release-bot@bigcorp.example")

    # Class 5: model_signing key bundles with P-384 and P-521 keys (`sign key`).
    for curve, case in [(ec.SECP384R1(), "key-p384"), (ec.SECP521R1(), "key-p521")]:
        out = HERE / case
        out.mkdir()
        k = ec.generate_private_key(curve)
        (HERE / ".tmp" / "k.pem").write_bytes(key_pem(k))
        (out / "key.pub").write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        r = run([MS, "sign", "key", str(model), "--signature", str(out / "model.sig"),
                 "--private_key", str(HERE / ".tmp" / "k.pem")])
        if r.returncode:
            sys.exit(f"{case}: {r.stderr}")
        v = run([MS, "verify", "key", str(model), "--signature", str(out / "model.sig"),
                 "--public_key", str(out / "key.pub")])
        (out / "note").write_text(f"model_signing sign key, {curve.name}\n")
        if v.returncode:
            sys.exit(f"{case}: model_signing does not verify its own bundle: {v.stderr}")
    shutil.rmtree(HERE / ".tmp")

    with open(HERE / "verdicts.tsv", "w") as f:
        f.write("case\tmodel_signing\tmodel_signing_reason\topenssl\topenssl_reason\n")
        for c in cases:
            f.write("\t".join([c, *verdicts(c)]) + "\n")


if __name__ == "__main__":
    main()
