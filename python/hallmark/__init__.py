"""hallmark: prove where a generative model and its output came from.

The Python face of the ``hallmark`` Rust library, the same code as the ``hallmark`` CLI:

* :class:`Registry` tests texts and weight files against every registered key and fingerprint
  (``detect``), with the CLI's exact verdicts and p-values;
* :meth:`WatermarkKey.logits_processor` applies a text watermark inside HF transformers' or
  llama-cpp-python's sampling;
* :mod:`hallmark.spark` runs detection over a Spark DataFrame.

Every error is a :class:`hallmark.Error` subclass carrying the CLI's message.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from . import _native
from ._native import Error, InputError, RegistryError, SignatureError

__all__ = [
    "Error",
    "InputError",
    "RegistryError",
    "SignatureError",
    "Registry",
    "WatermarkKey",
    "LogitsProcessor",
    "sign",
    "verify",
    "__version__",
]

__version__: str = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < a < 1.0):
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    return a


class Registry:
    """A registry directory: signer keys (``.pub``), watermark keys (``.wmkey``) and
    fingerprints (``.fp``), as ``hallmark register`` writes it.

    ``Registry()`` follows the CLI's rules: ``$HALLMARK_REGISTRY``, else ``./keys``.
    """

    def __init__(self, path: Optional[PathLike] = None) -> None:
        self._inner = _native.Registry(None if path is None else os.fspath(path))

    @property
    def path(self) -> str:
        """The registry directory."""
        return os.fspath(self._inner.path)

    def entries(self) -> List[Dict[str, str]]:
        """Every registered entry: ``{"name", "kind", "path"}``."""
        return [
            {"name": n, "kind": k, "path": os.fspath(p)} for n, k, p in self._inner.entries()
        ]

    def detect_texts(self, texts: Iterable[str], alpha: float = 1e-3) -> List[Dict[str, Any]]:
        """Test each text against every registered text watermark key.

        Returns one dict per text, in order, with the fields of ``hallmark detect --json``
        (``match``, ``p_value``, ``decided``, ``scored_tokens``, ``status``, ``results``, ...);
        ``input`` is ``texts[i]``. ``alpha`` bounds the family-wise false-positive rate across
        all registered keys. The texts are tested in parallel with the GIL released.
        """
        a = _check_alpha(alpha)
        if isinstance(texts, (str, bytes)):
            raise TypeError("detect_texts takes a sequence of str, not a single string")
        items = list(texts)
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
        inputs = [f"texts[{i}]" for i in range(len(items))]
        return [json.loads(s) for s in self._inner.detect_texts_json(items, inputs, a)]

    def detect_text(self, text: str, alpha: float = 1e-3) -> Dict[str, Any]:
        """:meth:`detect_texts` for one text."""
        return self.detect_texts([text], alpha)[0]

    def detect_weights(self, path: PathLike, alpha: float = 1e-3) -> Dict[str, Any]:
        """Test a weight file or directory (safetensors, sharded, GGUF) against every
        registered fingerprint, weight-mark key and signer key: the ``detect --json`` dict."""
        return json.loads(self._inner.detect_weights_json(os.fspath(path), _check_alpha(alpha)))

    def detect_path(self, path: PathLike, alpha: float = 1e-3) -> Dict[str, Any]:
        """Test a file by what it holds (weights or UTF-8 text), like ``hallmark detect PATH``."""
        return json.loads(self._inner.detect_path_json(os.fspath(path), _check_alpha(alpha)))

    def __repr__(self) -> str:
        return f"Registry({self.path!r})"


class WatermarkKey:
    """A secret text watermark key, as ``hallmark wm-key`` writes it."""

    def __init__(self, inner: "_native.WatermarkKey") -> None:
        self._inner = inner

    @classmethod
    def load(cls, path: PathLike) -> "WatermarkKey":
        """Read and validate a ``.wmkey`` file."""
        return cls(_native.WatermarkKey.load(os.fspath(path)))

    @property
    def scheme(self) -> str:
        """``kgw`` or ``gumbel``."""
        return self._inner.scheme

    @property
    def context(self) -> str:
        """The context rule, e.g. ``left:1``."""
        return self._inner.context

    @property
    def tokenizer_source(self) -> str:
        """The tokenizer the key was made with (detection tokenizes with it)."""
        return self._inner.tokenizer_source

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` under the key's own tokenizer."""
        return list(self._inner.encode(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids under the key's own tokenizer (special tokens skipped)."""
        return self._inner.decode([int(i) for i in ids])

    def logits_processor(
        self,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
    ) -> "LogitsProcessor":
        """A logits processor that watermarks generation with this key.

        Use it as an HF transformers ``LogitsProcessor`` (in a ``LogitsProcessorList``) or as a
        llama-cpp-python ``logits_processor``. At each step it samples the next token exactly
        as ``hallmark generate`` would (``temperature``, ``top_k`` and ``top_p`` are applied
        first, then the watermark), and returns logits that force that token: every other
        token gets ``-inf``, so any downstream sampler, greedy or multinomial, keeps it. Give
        the downstream sampler no repetition penalty or other logit changes of its own.
        ``seed`` makes the sampler's own randomness reproducible.
        """
        return LogitsProcessor(self, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)

    def __repr__(self) -> str:
        return repr(self._inner)


class LogitsProcessor:
    """See :meth:`WatermarkKey.logits_processor`. One processor serves one generation at a
    time (any batch size); a call whose ``input_ids`` do not extend the previous call's by one
    token starts a new generation."""

    def __init__(
        self,
        key: WatermarkKey,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
    ) -> None:
        if seed is not None and not (0 <= int(seed) < 2**64):
            raise InputError(f"seed must be in 0..2^64, got {seed}")
        self.key = key
        self._sampler = _native.Sampler(key._inner, float(temperature), top_k, top_p, seed)
        self.last_tokens: List[int] = []

    def reset(self) -> None:
        """Forget the current generation."""
        self._sampler.reset()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        if isinstance(scores, np.ndarray):
            return self._numpy(np, input_ids, scores)
        if type(scores).__module__.startswith("torch"):
            return self._torch(np, input_ids, scores)
        raise TypeError(
            f"scores must be a numpy array or a torch tensor, not {type(scores).__name__}"
        )

    def _numpy(self, np: Any, input_ids: Any, scores: Any) -> Any:
        ids = np.asarray(input_ids)
        if scores.ndim == 1:
            if (
                scores.dtype == np.float32
                and scores.flags.writeable
                and isinstance(input_ids, np.ndarray)
                and input_ids.dtype in (np.int32, np.int64)
            ):
                # llama-cpp-python hands over a (strided) view of its own float32 candidate
                # records and copies the result back: sample and force in place, in one
                # native call.
                tok = self._sampler.force(input_ids, scores)
                self.last_tokens = [tok]
                return scores
            logits = np.ascontiguousarray(scores, dtype=np.float32)
            if ids.dtype not in (np.int32, np.int64):
                ids = ids.astype(np.int64)
            tok = self._sampler.choose(np.ascontiguousarray(ids), logits)
            self.last_tokens = [tok]
            out = scores if scores.flags.writeable else np.empty_like(scores)
            out.fill(-np.inf)
            out[tok] = 0.0
            return out
        if scores.ndim != 2:
            raise InputError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
        toks = self._sampler.choose_batch(
            np.ascontiguousarray(ids, dtype=np.int64), np.ascontiguousarray(scores, dtype=np.float32)
        )
        self.last_tokens = list(toks)
        out = np.full_like(scores, -np.inf)
        out[np.arange(len(toks)), toks] = 0.0
        return out

    def _torch(self, np: Any, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.dim() != 2:
            raise InputError(f"scores must be (batch, vocab), got shape {tuple(scores.shape)}")
        logits = scores.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        ids = input_ids.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy()
        toks = self._sampler.choose_batch(ids, logits)
        self.last_tokens = list(toks)
        # Built in numpy and handed to torch once: a few small torch ops per step cost more
        # than the whole sampling step on a busy CPU.
        out = np.full(logits.shape, -np.inf, dtype=np.float32)
        out[np.arange(len(toks)), toks] = 0.0
        return torch.from_numpy(out).to(device=scores.device, dtype=scores.dtype)


def sign(
    path: PathLike,
    key: PathLike,
    sig: Optional[PathLike] = None,
    hash: Optional[str] = None,
    shard_size: Optional[int] = None,
    ignore: Sequence[str] = (),
    allow_symlinks: bool = False,
) -> Dict[str, Any]:
    """Sign a model file or directory with a private key (PKCS#8 PEM), as ``hallmark sign``:
    writes the OMS v1.0 bundle atomically to ``sig`` (default ``MODEL/model.sig`` or
    ``MODEL.sig``). ``hash`` defaults to sha256 for P-256 keys and with ``shard_size``, blake3
    for Ed25519; ``ignore`` lists paths relative to the model directory. Returns what was
    signed, and ``model_signing_cli_gaps``: why model_signing's CLI could not verify the bundle
    (empty when it can)."""
    return json.loads(
        _native.sign_json(
            os.fspath(path),
            os.fspath(key),
            None if sig is None else os.fspath(sig),
            hash,
            shard_size,
            [str(i) for i in ignore],
            bool(allow_symlinks),
        )
    )


def verify(
    path: PathLike,
    pub: PathLike,
    sig: Optional[PathLike] = None,
    allow_ignored_weights: bool = False,
    ignore: Iterable[PathLike] = (),
) -> Dict[str, Any]:
    """Verify a model against its signature bundle with a public key (SPKI PEM): the object
    ``hallmark verify --json`` prints. ``valid`` is the answer; a changed, missing, extra or
    renamed file, and every changed tensor, is named under ``files``. ``ignore`` lists paths
    inside the model (relative to it, or absolute inside it) to leave out, as
    ``verify --ignore``; every other file the signature does not cover fails verification.
    Unusable input (a missing model or bundle, a malformed bundle or key) raises a
    :class:`hallmark.Error`."""
    if isinstance(ignore, (str, bytes, os.PathLike)):
        raise TypeError("ignore= takes a list of paths, not one path")
    return json.loads(
        _native.verify_json(
            os.fspath(path),
            os.fspath(pub),
            None if sig is None else os.fspath(sig),
            bool(allow_ignored_weights),
            [os.fspath(p) for p in ignore],
        )
    )
