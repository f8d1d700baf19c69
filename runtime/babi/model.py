"""The bAbI model: a build's generated modules behind ``answer(story, question)``.

A story is encoded once (``encoding`` module) into integer-coded facts, per-story buffers and
attention weights; then each question costs one ``experts.run_story`` (typed loops, on a
story of that one question), one ``knowledge.run_story`` (the learned associations) and one
``scoring.decide_story``. The model never sees a task number or a file name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from codegen.errors import RSIError
from codegen.plan import COMPOSITE_WIDTH, MAX_COMPOSITE, WORK_ROWS, Plan
from runtime.kernels import reference

__all__ = ["MODEL_MODULES", "ModelError", "Prepared", "BabiModel", "reference_sdpa"]

logger = logging.getLogger(__name__)

#: Generated modules the model needs (``attention`` is optional: see :class:`BabiModel`).
MODEL_MODULES: tuple[str, ...] = ("encoding", "experts", "knowledge", "scoring")

#: ``(q, k, v, mask) -> out``: float32 ``(n, D)`` arrays and a uint8 ``(n,)`` key mask.
Attend = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class ModelError(RSIError):
    """A build lacks a module or a function the model needs."""


def reference_sdpa(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """The NumPy reference attention (:func:`runtime.kernels.reference.sdpa`) as float32."""
    out: np.ndarray = reference.sdpa(q, k, v, mask).astype(np.float32)
    return out


@dataclass
class Prepared:
    """One encoded story with every buffer its questions need (reused across questions)."""

    encoded: Any
    n_words: int
    route_flags: np.ndarray
    work: np.ndarray
    scores: np.ndarray
    comp: np.ndarray
    attn: np.ndarray
    word_vecs: np.ndarray
    qvecs: np.ndarray

    @property
    def n_questions(self) -> int:
        """How many questions the story carries."""
        return len(self.encoded.question_tokens)


class BabiModel:
    """Answers bAbI questions with one build's generated modules (:data:`MODEL_MODULES`).

    ``plan`` is the plan of the state the build was rendered from (:func:`codegen.plan.plan`):
    the model reads the score rows, routing words and usable evidence from it.
    ``attend`` is the attention kernel ``(q, k, v) -> out`` on float32 ``(n, D)`` arrays; by
    default the build's generated ``attention.sdpa`` (see :meth:`_attention`).
    ``full_evidence`` computes every evidence row even where the state's weights zero it.
    """

    def __init__(
        self,
        modules: Mapping[str, ModuleType],
        *,
        plan: Plan,
        tier: str = "python",
        attend: Attend | None = None,
        full_evidence: bool = False,
    ) -> None:
        missing = [name for name in MODEL_MODULES if name not in modules]
        if missing:
            raise ModelError(f"build lacks generated module(s) {', '.join(missing)}")
        self.plan = plan
        self.encoding = modules["encoding"]
        self.experts = modules["experts"]
        self.knowledge = modules["knowledge"]
        self.scoring = modules["scoring"]
        attention = modules.get("attention")
        self.n_keys, self.dim = _attention_shape(attention, self.encoding)
        self.causal = False
        self.attend: Attend = reference_sdpa
        if attend is not None:
            self.attend = attend
        elif attention is not None and hasattr(attention, "sdpa"):
            # An interpreted kernel that only takes N rows costs seconds per story: there
            # the NumPy reference stands in (same math).
            if tier != "python" or _accepts_fewer_rows(attention.sdpa, self.dim):
                self.attend = attention.sdpa
                self.causal = bool(getattr(attention, "CAUSAL", False))
        self.fixed_rows = not _accepts_fewer_rows(self.attend, self.dim)
        self._vectors: dict[str, np.ndarray] = {}
        # Evidence the scoring multiplies by zero need not be computed, except when every
        # row is wanted (collecting evidence to screen other weights).
        self.use_similarity = full_evidence or plan.uses_similarity
        self.use_attention = full_evidence or plan.uses_attention

    def prepare(self, sentences: Sequence[str], questions: Sequence[tuple[str, int]]) -> Prepared:
        """Encode a story and its ``(question, statements before it)`` pairs once."""
        enc = self.encode(sentences, questions)
        n_words = len(enc.words)
        n_facts = enc.facts.shape[0]
        width = max(n_words, n_facts, len(sentences)) + 4
        rows = self.plan.n_rows
        n_q = max(1, len(questions))
        if self.use_similarity or self.use_attention:
            word_vecs = np.stack([self._vector(w.lower()) for w in enc.words])
            qvecs = np.stack(
                [self._text_vector(toks) for toks in enc.question_tokens] or [np.zeros(self.dim)]
            )
        else:
            word_vecs = np.zeros((n_words, self.dim), dtype=np.float64)
            qvecs = np.zeros((n_q, self.dim), dtype=np.float64)
        if self.use_attention:
            svecs = [self._text_vector(toks) for toks in enc.sentence_tokens]
            attn = self._attention(qvecs, svecs, [p for _, p in questions])
        else:
            attn = np.zeros((n_q, max(1, len(sentences))), dtype=np.float64)
        return Prepared(
            encoded=enc,
            n_words=n_words,
            route_flags=self._route_flags(enc.question_tokens),
            work=np.zeros((WORK_ROWS, width), dtype=np.int32),
            scores=np.zeros((rows, n_words + MAX_COMPOSITE), dtype=np.float64),
            comp=np.full((MAX_COMPOSITE, COMPOSITE_WIDTH), -1, dtype=np.int32),
            attn=attn,
            word_vecs=word_vecs,
            qvecs=qvecs,
        )

    def encode(self, sentences: Sequence[str], questions: Sequence[tuple[str, int]]) -> Any:
        """The build's ``encoding.encode`` of a story, with the plan's fixed-id words."""
        return self.encoding.encode(list(sentences), list(questions), self.plan.vocabulary)

    def evidence(self, prepared: Prepared, index: int) -> int:
        """Run the experts on question ``index``; fill ``prepared.scores``; return candidates."""
        enc = prepared.encoded
        n_cand = np.zeros(1, dtype=np.int32)
        one = slice(index, index + 1)  # a story of this one question: the same typed loop
        self.experts.run_story(
            enc.facts,
            enc.queries[one],
            1,
            prepared.n_words,
            prepared.work,
            prepared.scores[np.newaxis],
            prepared.comp[np.newaxis],
            n_cand,
            enc.mentions,
            prepared.attn[one],
            prepared.word_vecs,
            prepared.qvecs[one],
        )
        self.knowledge.run_story(enc.facts, enc.queries[one], 1, prepared.scores[np.newaxis])
        return int(n_cand[0])

    def choose(self, prepared: Prepared, index: int) -> tuple[int, float]:
        """``(candidate index, confidence)`` for question ``index`` of a prepared story."""
        n_cand = np.array([self.evidence(prepared, index)], dtype=np.int32)
        best = np.zeros(1, dtype=np.int32)
        confidence = np.zeros(1, dtype=np.float64)
        flags = prepared.route_flags[index : index + 1]
        self.scoring.decide_story(prepared.scores[np.newaxis], n_cand, flags, 1, best, confidence)
        return int(best[0]), float(confidence[0])

    def answer_all(self, prepared: Prepared) -> list[tuple[str, float]]:
        """``(choice, confidence)`` for every question of a prepared story (one typed loop)."""
        n_q = prepared.n_questions
        if n_q == 0:
            return []
        enc = prepared.encoded
        rows, width = prepared.scores.shape
        scores = np.zeros((n_q, rows, width), dtype=np.float64)
        comp = np.full((n_q, *prepared.comp.shape), -1, dtype=np.int32)
        n_cand = np.zeros(n_q, dtype=np.int32)
        best = np.zeros(n_q, dtype=np.int32)
        confidence = np.zeros(n_q, dtype=np.float64)
        self.experts.run_story(
            enc.facts,
            enc.queries,
            n_q,
            prepared.n_words,
            prepared.work,
            scores,
            comp,
            n_cand,
            enc.mentions,
            prepared.attn,
            prepared.word_vecs,
            prepared.qvecs,
        )
        self.knowledge.run_story(enc.facts, enc.queries, n_q, scores)
        self.scoring.decide_story(scores, n_cand, prepared.route_flags, n_q, best, confidence)
        words = enc.words
        out = []
        for q in range(n_q):
            b = int(best[q])
            if 0 <= b < prepared.n_words:
                text = str(words[b])
            elif b >= prepared.n_words:
                text = ",".join(str(words[w]) for w in comp[q, b - prepared.n_words] if w >= 0)
            else:
                text = ""
            out.append((text, float(confidence[q])))
        return out

    def answer_prepared(self, prepared: Prepared, index: int) -> tuple[str, float]:
        """``(choice, confidence)`` for question ``index`` of a prepared story."""
        best, confidence = self.choose(prepared, index)
        return self.candidate_text(prepared, best), confidence

    def answer(self, sentences: Sequence[str], question: str) -> tuple[str, float]:
        """Answer ``question`` about the story ``sentences`` (all of them precede it)."""
        prepared = self.prepare(sentences, [(question, len(sentences))])
        return self.answer_prepared(prepared, 0)

    def candidate_text(self, prepared: Prepared, index: int) -> str:
        """The answer text of candidate ``index`` (a word, or a comma-joined composite)."""
        words = prepared.encoded.words
        if index < 0:
            return ""
        if index < prepared.n_words:
            return str(words[index])
        row = prepared.comp[index - prepared.n_words]
        return ",".join(str(words[w]) for w in row if w >= 0)

    def _attention(
        self, qvecs: np.ndarray, svecs: list[np.ndarray], positions: list[int]
    ) -> np.ndarray:
        """Unnormalized attention of each question over the story's sentences.

        One kernel call per block of questions: keys are the sentences of a window that ends
        at the block's last question, values one-hot sentence slots, so ``out[i, j]`` is the
        attention weight of question i on window sentence j. The experts renormalize over the
        sentences before each question, which is exactly causal attention; padding keys are
        masked. A causal kernel lets row i see keys up to i only, so there each question gets
        its own call, read at the last row.
        """
        n_sent = len(svecs)
        # Evidence arrays are float64 in both tiers: NumPy 2 keeps float32 scalar arithmetic
        # in float32 where C promotes to double, so float32 inputs would split the tiers.
        out = np.zeros((max(1, len(positions)), max(1, n_sent)), dtype=np.float64)
        slots = min(self.n_keys, self.dim)
        step = 1 if self.causal else self.n_keys
        for start in range(0, len(positions), step):
            block = positions[start : start + step]
            end = max(block) if block else 0
            lo = max(0, end - slots)
            m = end - lo
            if m <= 0:
                continue
            rows = self.n_keys if self.fixed_rows else max(len(block), m)
            q = np.zeros((rows, self.dim), dtype=np.float32)
            if self.causal:
                q[:] = qvecs[start]
            else:
                q[: len(block)] = qvecs[start : start + len(block)]
            k = np.zeros((rows, self.dim), dtype=np.float32)
            k[:m] = np.stack(svecs[lo:end])
            v = np.zeros((rows, self.dim), dtype=np.float32)
            v[np.arange(m), np.arange(m)] = 1.0
            mask = np.zeros(rows, dtype=np.uint8)
            mask[:m] = 1
            result = np.asarray(self.attend(q, k, v, mask), dtype=np.float32)
            if self.causal:
                out[start, lo:end] = result[m - 1, :m]
            else:
                out[start : start + len(block), lo:end] = result[: len(block), :m]
        return out

    def _route_flags(self, question_tokens: list[list[str]]) -> np.ndarray:
        """One 0/1 flag per routing word (``plan.route_words``) for every question."""
        words = self.plan.route_words
        rows = [[1 if w in set(toks) else 0 for w in words] or [0] for toks in question_tokens]
        return np.array(rows or [[0]], dtype=np.uint8)

    def _text_vector(self, toks: list[str]) -> np.ndarray:
        total = np.zeros(self.dim, dtype=np.float64)
        for tok in toks:
            if tok not in _FUNCTION_WORDS:
                total += self._vector(tok)
        norm = float(np.linalg.norm(total))
        return total / norm if norm > 0 else total

    def _vector(self, word: str) -> np.ndarray:
        """A fixed pseudo-random unit vector per word (hashed, so no table to ship)."""
        vec = self._vectors.get(word)
        if vec is None:
            seed = int.from_bytes(word.encode()[:32].ljust(32, b"\0"), "little") % (2**63)
            rng = np.random.default_rng(seed)
            vec = rng.standard_normal(self.dim)
            vec /= np.linalg.norm(vec)
            self._vectors[word] = vec
        return vec


_FUNCTION_WORDS = frozenset(
    "the a an is are was to of in and or did do does will what where who why how is".split()
)


def _accepts_fewer_rows(attend: Attend, dim: int) -> bool:
    """Whether the kernel takes any row count up to N (else exactly N rows)."""
    probe = np.zeros((1, dim), dtype=np.float32)
    try:
        attend(probe, probe, probe, np.ones(1, dtype=np.uint8))
    except ValueError:
        return False
    return True


def _attention_shape(attention: ModuleType | None, encoding: ModuleType) -> tuple[int, int]:
    if attention is not None and hasattr(attention, "N") and hasattr(attention, "D"):
        return int(attention.N), int(attention.D)
    return 32, int(getattr(encoding, "EMBEDDING_DIM", 64))
