"""Re-export all-MiniLM-L6-v2 through ONNX int8 and back, as a leak would.

1. Build an ONNX graph of the BERT encoder (BertModel forward: embeddings + LayerNorm, 6 layers
   of multi-head self-attention and erf-GELU feed-forward, mean pooling and the tanh pooler) with
   the safetensors weights as initializers.
2. Run it in onnxruntime on one tokenized sentence and compare the mean-pooled embedding with a
   float64 numpy forward of the same weights (max abs difference <= 1e-4, else fail).
3. Quantize it with onnxruntime.quantization.quantize_dynamic (QInt8 weights; MatMul and Gather),
   once per-tensor and once per-channel, and run each quantized model on the same sentence.
4. Dequantize every quantized initializer, (q - zero_point) * scale in float32, and write a
   safetensors file with the original BERT tensor names and layouts.

Outputs (in OUT): minilm-onnx-int8{,-per-channel}.{onnx,safetensors} and manifest.json, which
records tool versions, the quantized initializers, the checks and each output's SHA-256. A run
whose manifest matches the files on disk does nothing. Every file is written to a temporary name
and renamed, so an interrupted run leaves no partial output.

Usage: python minilm_onnx.py MINILM_DIR OUT_DIR
"""

import hashlib
import json
import logging
import math
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

SENTENCE = "hallmark checks where a model's weights came from."
TOLERANCE = 1e-4
VARIANTS = {
    "minilm-onnx-int8": {"per_channel": False},
    "minilm-onnx-int8-per-channel": {"per_channel": True},
}
MANIFEST_FORMAT = "hallmark-test-onnx-manifest"
MANIFEST_VERSION = 1


def fail(msg):
    print(f"onnx: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path, write):
    """Call write(tmp_path), then rename tmp_path over path."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def up_to_date(out_dir):
    """True when manifest.json lists every output with the SHA-256 of the file on disk."""
    path = os.path.join(out_dir, "manifest.json")
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    if m.get("format") != MANIFEST_FORMAT or m.get("version") != MANIFEST_VERSION:
        return False
    files = m.get("files", {})
    want = [f"{v}.{ext}" for v in VARIANTS for ext in ("onnx", "safetensors")]
    for name in want:
        p = os.path.join(out_dir, name)
        if name not in files or not os.path.isfile(p) or sha256(p) != files[name]:
            return False
    return True


class Bert:
    """The weights and hyper-parameters of a BertModel checkpoint."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
            fail(f"{model_dir}: expected a BERT model with erf GELU, got {cfg.get('model_type')}")
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        self.w = load_file(os.path.join(model_dir, "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # tokenizer.json pads to 128; the check runs one unpadded sentence.
        self.tokenizer.no_padding()

    def linear_names(self):
        """The names of every nn.Linear weight (stored [out, in]) in forward order."""
        names = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            names += [p + f"attention.self.{x}.weight" for x in ("query", "key", "value")]
            names += [p + "attention.output.dense.weight", p + "intermediate.dense.weight"]
            names += [p + "output.dense.weight"]
        return names + ["pooler.dense.weight"]


# ---- the ONNX graph ----------------------------------------------------------------------------


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.inits = {}
        self.n = 0

    def const(self, value, dtype=np.float32):
        self.n += 1
        name = f"const_{self.n}"
        self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def init(self, name, array):
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def build_onnx(bert):
    """A faithful BertModel forward as an ONNX model. Linear weights are stored transposed
    ([in, out], as MatMul wants them) under their original names; the returned set lists them."""
    g = GraphBuilder()
    w = bert.w
    h, heads = bert.hidden, bert.heads
    dh = h // heads
    linears = set(bert.linear_names())
    transposed = set()
    for name, t in w.items():
        if name in linears:
            g.init(name, t.T)
            transposed.add(name)
        else:
            g.init(name, t)

    def layer_norm(x, prefix):
        return g.op(
            "LayerNormalization",
            [x, prefix + ".weight", prefix + ".bias"],
            axis=-1,
            epsilon=bert.eps,
        )

    def linear(x, prefix):
        return g.op("Add", [g.op("MatMul", [x, prefix + ".weight"]), prefix + ".bias"])

    # Embeddings: word + position (position_ids[:, :seq]) + token type, then LayerNorm.
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const([1], np.int64)], axis=0)
    pos = g.op("Slice", ["embeddings.position_ids", g.const([0], np.int64), seq, g.const([1], np.int64)])
    x = g.op("Gather", ["embeddings.word_embeddings.weight", "input_ids"], axis=0)
    x = g.op("Add", [x, g.op("Gather", ["embeddings.position_embeddings.weight", pos], axis=0)])
    x = g.op("Add", [x, g.op("Gather", ["embeddings.token_type_embeddings.weight", "token_type_ids"], axis=0)])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention mask [batch, 1, 1, seq]: 0 where attended, -10000 where padded.
    maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    ext = g.op("Mul", [g.op("Sub", [g.const(1.0), maskf]), g.const(-10000.0)])
    ext = g.op("Unsqueeze", [ext, g.const([1, 2], np.int64)])
    split_heads = g.const([0, 0, heads, dh], np.int64)
    merge_heads = g.const([0, 0, h], np.int64)
    scale = g.const(1.0 / math.sqrt(dh))
    for i in range(bert.layers):
        p = f"encoder.layer.{i}."
        q = g.op("Transpose", [g.op("Reshape", [linear(x, p + "attention.self.query"), split_heads])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(x, p + "attention.self.key"), split_heads])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [linear(x, p + "attention.self.value"), split_heads])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), ext])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_heads])
        x = layer_norm(g.op("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        u = linear(x, p + "intermediate.dense")
        # erf GELU: 0.5 * u * (1 + erf(u / sqrt(2))).
        gelu = g.op("Mul", [g.op("Mul", [u, g.const(0.5)]),
                            g.op("Add", [g.op("Erf", [g.op("Mul", [u, g.const(1.0 / math.sqrt(2.0))])]), g.const(1.0)])])
        x = layer_norm(g.op("Add", [linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")

    # Outputs: last hidden state, the masked mean (sentence-transformers pooling) and the pooler.
    m3 = g.op("Unsqueeze", [maskf, g.const([2], np.int64)])
    total = g.op("ReduceSum", [g.op("Mul", [x, m3]), g.const([1], np.int64)], keepdims=0)
    count = g.op("ReduceSum", [m3, g.const([1], np.int64)], keepdims=0)
    mean = g.op("Div", [total, g.op("Max", [count, g.const(1e-9)])])
    cls = g.op("Gather", [x, g.const(0, np.int64)], axis=1)
    pooled = g.op("Tanh", [linear(cls, "pooler.dense")])
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    g.nodes.append(helper.make_node("Identity", [mean], ["sentence_embedding"]))
    g.nodes.append(helper.make_node("Identity", [pooled], ["pooler_output"]))

    ids = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [ids("input_ids"), ids("attention_mask"), ids("token_type_ids")],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", h]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", h]),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", h]),
        ],
        initializer=list(g.inits.values()),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, transposed


# ---- the numpy reference -----------------------------------------------------------------------


def reference_embedding(bert, ids):
    """Mean-pooled last hidden state of BertModel in float64 numpy (one unpadded sentence)."""
    w = {k: v.astype(np.float64) for k, v in bert.w.items() if v.dtype != np.int64}
    h, heads = bert.hidden, bert.heads
    dh = h // heads
    s = len(ids)
    erf = np.vectorize(math.erf)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + bert.eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    pos = bert.w["embeddings.position_ids"][0, :s]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][pos]
    x = ln(x + w["embeddings.token_type_embeddings.weight"][np.zeros(s, dtype=np.int64)], "embeddings.LayerNorm")
    for i in range(bert.layers):
        p = f"encoder.layer.{i}."
        split = lambda t: t.reshape(s, heads, dh).transpose(1, 0, 2)
        q, k, v = (split(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        ctx = (sc / sc.sum(-1, keepdims=True)) @ v
        ctx = ctx.transpose(1, 0, 2).reshape(s, h)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        u = lin(x, p + "intermediate.dense")
        x = ln(lin(0.5 * u * (1.0 + erf(u / math.sqrt(2.0))), p + "output.dense") + x, p + "output.LayerNorm")
    return x.mean(0)


def run(model_path, ids):
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feed = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64),
    }
    return sess.run(["sentence_embedding"], feed)[0][0].astype(np.float64)


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- dequantization ----------------------------------------------------------------------------


def dequantize(qmodel, bert, transposed):
    """The float32 tensors of a quantize_dynamic output under the original names and layouts,
    and a record of every quantized initializer."""
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    out, record = {}, {}
    for name in bert.w:
        if name in inits:
            out[name] = inits[name]
            continue
        q = inits.get(name + "_quantized")
        scale = inits.get(name + "_scale")
        zp = inits.get(name + "_zero_point")
        if q is None or scale is None or zp is None:
            fail(f"{name}: neither float nor quantized in the quantized model")
        if q.dtype not in (np.int8, np.uint8) or scale.dtype != np.float32:
            fail(f"{name}: unexpected quantized types {q.dtype}/{scale.dtype}")
        if scale.size == 1:
            s, z = scale.reshape(()), zp.reshape(()).astype(np.int32)
        elif scale.ndim == 1 and scale.size == q.shape[-1]:
            # quantize_dynamic quantizes MatMul weights per output channel, the last axis.
            s, z = scale, zp.astype(np.int32)
        else:
            fail(f"{name}: scale of shape {scale.shape} does not fit weight {q.shape}")
        x = ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)
        orig = bert.w[name]
        err = float(np.abs(x - (orig.T if name in transposed else orig)).max())
        record[name] = {
            "type": str(q.dtype),
            "per_channel": bool(scale.size > 1),
            "scales": int(scale.size),
            "q_min": int(q.min()),
            "q_max": int(q.max()),
            "max_abs_error": err,
        }
        out[name] = x
    for name in transposed:
        out[name] = out[name].T
    for name, t in out.items():
        if t.shape != bert.w[name].shape or t.dtype != bert.w[name].dtype:
            fail(f"{name}: round trip changed {bert.w[name].shape}/{bert.w[name].dtype} to {t.shape}/{t.dtype}")
        out[name] = np.ascontiguousarray(t)
    return out, record


def main():
    if len(sys.argv) != 3:
        fail("usage: minilm_onnx.py MINILM_DIR OUT_DIR")
    model_dir, out_dir = sys.argv[1:3]
    # quantize_dynamic logs a suggestion to pre-process the model; the graph needs none.
    logging.getLogger().setLevel(logging.ERROR)
    os.makedirs(out_dir, exist_ok=True)
    if up_to_date(out_dir):
        print(f"onnx: outputs in {out_dir} match manifest.json; nothing to do", file=sys.stderr)
        return
    bert = Bert(model_dir)
    ids = bert.tokenizer.encode(SENTENCE).ids
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tools": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "sentence": SENTENCE,
        "token_ids": ids,
        "files": {},
        "variants": {},
    }
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        model, transposed = build_onnx(bert)
        fpath = os.path.join(tmp, "minilm-f32.onnx")
        onnx.save(model, fpath)
        ref = reference_embedding(bert, ids)
        got = run(fpath, ids)
        diff = float(np.abs(got - ref).max())
        print(f"onnx: float graph vs numpy reference: max abs diff {diff:.2e} over {len(ids)} tokens", file=sys.stderr)
        if not diff <= TOLERANCE:
            fail(f"the ONNX graph does not reproduce the numpy forward: max abs diff {diff} > {TOLERANCE}")
        manifest["float_graph"] = {"nodes": len(model.graph.node), "max_abs_diff_vs_numpy": diff}
        for variant, opts in VARIANTS.items():
            qpath = os.path.join(tmp, variant + ".onnx")
            quantize_dynamic(
                fpath,
                qpath,
                op_types_to_quantize=["MatMul", "Gather"],
                per_channel=opts["per_channel"],
                weight_type=QuantType.QInt8,
            )
            qmodel = onnx.load(qpath)
            qemb = run(qpath, ids)
            tensors, record = dequantize(qmodel, bert, transposed)
            ops = sorted({n.op_type for n in qmodel.graph.node})
            st = os.path.join(out_dir, variant + ".safetensors")
            atomic_write(st, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
            oq = os.path.join(out_dir, variant + ".onnx")
            os.replace(qpath, oq)  # same file system: an atomic rename
            manifest["files"][variant + ".safetensors"] = sha256(st)
            manifest["files"][variant + ".onnx"] = sha256(oq)
            manifest["variants"][variant] = {
                "per_channel": opts["per_channel"],
                "quantized_ops": [o for o in ops if "integer" in o.lower() or "quant" in o.lower()],
                "cosine_int8_vs_float_embedding": cosine(qemb, ref),
                "quantized": record,
                "kept_float": sorted(n for n in bert.w if n not in record),
            }
            print(
                f"onnx: {variant}: {len(record)} initializers quantized, "
                f"int8 model embedding cosine to float {cosine(qemb, ref):.4f}",
                file=sys.stderr,
            )
    mpath = os.path.join(out_dir, "manifest.json")

    def write_manifest(p):
        with open(p, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")

    atomic_write(mpath, write_manifest)
    print(f"onnx: wrote {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
