"""Type stubs for hallmark's PyO3 extension (use the `hallmark` package, not this module)."""

from os import PathLike
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Error(Exception):
    """Every error hallmark raises; the message is the CLI's."""

class RegistryError(Error):
    """A registry directory or entry that cannot be used."""

class InputError(Error):
    """A suspect, key or argument that cannot be used (the CLI's exit code 2)."""

class SignatureError(Error):
    """A signature bundle or signing key that cannot be used."""

_Path = Union[str, "PathLike[str]"]

class Registry:
    def __init__(self, path: Optional[_Path] = None) -> None: ...
    @property
    def path(self) -> str: ...
    def entries(self) -> List[Tuple[str, str, str]]: ...
    def detect_texts_json(
        self, texts: Sequence[str], inputs: Sequence[str], alpha: float
    ) -> List[str]: ...
    def detect_path_json(self, path: _Path, alpha: float) -> str: ...
    def detect_weights_json(self, path: _Path, alpha: float) -> str: ...

class WatermarkKey:
    @staticmethod
    def load(path: _Path) -> "WatermarkKey": ...
    @property
    def path(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def context(self) -> str: ...
    @property
    def tokenizer_source(self) -> str: ...
    def encode(self, text: str) -> List[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...

class Sampler:
    def __init__(
        self,
        key: WatermarkKey,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
    ) -> None: ...
    def reset(self) -> None: ...
    def choose_batch(
        self, input_ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
    ) -> List[int]: ...
    def force(
        self,
        input_ids: Union[npt.NDArray[np.int32], npt.NDArray[np.int64]],
        scores: npt.NDArray[np.float32],
    ) -> int: ...
    def choose(
        self,
        input_ids: Union[npt.NDArray[np.int32], npt.NDArray[np.int64]],
        scores: npt.NDArray[np.float32],
    ) -> int: ...

def sign_json(
    model: _Path,
    key: _Path,
    sig: Optional[_Path] = None,
    hash: Optional[str] = None,
    shard_size: Optional[int] = None,
    ignore: Sequence[str] = ...,
    allow_symlinks: bool = False,
) -> str: ...
def verify_json(
    model: _Path,
    pub: _Path,
    sig: Optional[_Path] = None,
    allow_ignored_weights: bool = False,
    ignore: Sequence[_Path] = (),
) -> str: ...
