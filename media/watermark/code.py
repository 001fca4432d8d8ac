"""Per-delivery codewords: Reed–Solomon over GF(16), one bit per segment.

A delivery's id (`message`) is K random 4-bit symbols; the codeword is its RS(n, K)
encoding, n = min(15, segments // 4) symbols, written out as 4n bits. Segment i of the
video plays variant codeword[i % 4n] (0 = A, 1 = B), so a lesson longer than the
codeword repeats it, and segments lost to trimming at the ends are found again in the
repetition. Any two codewords differ in at least n - K + 1 symbols; the decoder corrects
e wrong symbols and f erased ones (symbols with an uncertain segment) while
2e + f <= n - K. Why RS and not a Tardos code, and the figures: docs/forensic-watermark.md.
"""

import math
import secrets
import threading
from dataclasses import dataclass
from functools import lru_cache

import reedsolo

SYMBOL_BITS = 4
MAX_SYMBOLS = 2**SYMBOL_BITS - 1  # RS length limit over GF(16)
ID_SYMBOLS = 5  # 20-bit ids: about a million deliveries per video
MIN_PARITY = 4  # corrects 2 wrong symbols, or 4 erased ones
# A segment whose A/B estimate lies closer than this to the midpoint (0.5) is erased,
# not guessed: wrong guesses cost twice what erasures cost.
DECISION_MARGIN = 0.2

_lock = threading.Lock()  # reedsolo swaps module-level tables per codec


class CodeTooShort(Exception):
    """The video has too few segments to carry a codeword."""


@dataclass(frozen=True)
class CodeParams:
    n: int  # symbols in a codeword
    k: int = ID_SYMBOLS  # symbols of id

    @property
    def bits(self) -> int:
        return self.n * SYMBOL_BITS

    @property
    def parity(self) -> int:
        return self.n - self.k

    @property
    def id_space(self) -> int:
        return 2 ** (self.k * SYMBOL_BITS)

    @classmethod
    def for_segments(cls, segments: int, k: int = ID_SYMBOLS) -> "CodeParams":
        n = min(MAX_SYMBOLS, segments // SYMBOL_BITS)
        if n - k < MIN_PARITY:
            raise CodeTooShort(
                f"It has {segments} segments; a forensic watermark needs at least "
                f"{min_segments(k)}."
            )
        return cls(n=n, k=k)

    def as_json(self) -> dict:
        return {"n": self.n, "k": self.k}


def min_segments(k: int = ID_SYMBOLS) -> int:
    return (k + MIN_PARITY) * SYMBOL_BITS


@lru_cache(maxsize=32)
def _codec(n: int, k: int) -> reedsolo.RSCodec:
    return reedsolo.RSCodec(nsym=n - k, nsize=n, c_exp=SYMBOL_BITS)


def _symbols(message: int, k: int) -> list[int]:
    return [(message >> (SYMBOL_BITS * (k - 1 - i))) & 0xF for i in range(k)]


def _message(symbols) -> int:
    value = 0
    for symbol in symbols:
        value = (value << SYMBOL_BITS) | symbol
    return value


def _bits(symbols) -> str:
    return "".join(format(symbol, f"0{SYMBOL_BITS}b") for symbol in symbols)


def encode(message: int, params: CodeParams) -> str:
    """The codeword of `message`, as a string of "0" (A) and "1" (B)."""
    if not 0 <= message < params.id_space:
        raise ValueError(f"message {message} is outside the {params.k}-symbol id space")
    with _lock:
        symbols = _codec(params.n, params.k).encode(bytearray(_symbols(message, params.k)))
    return _bits(symbols)


def random_message(params: CodeParams) -> int:
    """A fresh id; 0 is never issued (its codeword is all A: an unmarked copy)."""
    return secrets.randbelow(params.id_space - 1) + 1


def segment_variants(codeword: str, segments: int) -> str:
    return "".join(codeword[i % len(codeword)] for i in range(segments))


@dataclass
class Decoded:
    message: int | None
    codeword: str | None
    erased_symbols: int
    corrected_symbols: int
    reason: str = ""


def positions_from_segments(
    betas: list[float | None], weights: list[float], params: CodeParams
) -> list[float | None]:
    """Fold per-segment estimates (0 = A, 1 = B, None = not seen) onto codeword positions,
    averaging repeats by weight (frames seen)."""
    total = [0.0] * params.bits
    weight = [0.0] * params.bits
    for i, (beta, w) in enumerate(zip(betas, weights, strict=True)):
        if beta is None or w <= 0:
            continue
        total[i % params.bits] += beta * w
        weight[i % params.bits] += w
    return [t / w if w > 0 else None for t, w in zip(total, weight, strict=True)]


def hard_bits(positions: list[float | None]) -> list[int | None]:
    return [
        None if p is None or abs(p - 0.5) < DECISION_MARGIN else int(p > 0.5) for p in positions
    ]


def decode(positions: list[float | None], params: CodeParams) -> Decoded:
    """Errors-and-erasures decoding of the folded estimates."""
    bits = hard_bits(positions)
    symbols, erased = [], []
    for s in range(params.n):
        chunk = bits[s * SYMBOL_BITS : (s + 1) * SYMBOL_BITS]
        if any(b is None for b in chunk):
            erased.append(s)
            symbols.append(0)
        else:
            symbols.append(int("".join(str(b) for b in chunk), 2))
    if len(erased) > params.parity:
        return Decoded(None, None, len(erased), 0, "too many segments could not be read")
    try:
        with _lock:
            message, full, _errata = _codec(params.n, params.k).decode(
                bytearray(symbols), erase_pos=erased or None
            )
    except reedsolo.ReedSolomonError:
        return Decoded(None, None, len(erased), 0, "the segments read form no codeword")
    corrected = sum(1 for s in range(params.n) if s not in erased and full[s] != symbols[s])
    if 2 * corrected + len(erased) > params.parity:
        # reedsolo may return a wrong word beyond the code's capability: refuse it.
        return Decoded(None, None, len(erased), corrected, "beyond what the code can correct")
    return Decoded(_message(message), _bits(full), len(erased), corrected)


def agreement(positions: list[float | None], codeword: str) -> tuple[int, int]:
    """(agreeing, compared): confident positions that match `codeword`."""
    agree = compared = 0
    for bit, expected in zip(hard_bits(positions), codeword, strict=True):
        if bit is None:
            continue
        compared += 1
        agree += bit == int(expected)
    return agree, compared


def chance_of_match(agree: int, compared: int, candidates: int) -> float:
    """How likely it is that at least one of `candidates` codewords unrelated to the
    recording agrees on `agree` or more of `compared` bits by chance: a binomial tail
    (each bit a coin toss), times the candidates (union bound)."""
    if compared == 0:
        return 1.0
    tail = sum(math.comb(compared, i) for i in range(agree, compared + 1)) / 2**compared
    return min(1.0, tail * max(1, candidates))
