"""The story encoder: the parser no state value changes, over a state's lexicon.

Parses a story once into integer-coded facts so the experts run as typed loops over ints.
The generated ``encoding`` module bakes the state's word classes into a :class:`Lexicon` and
calls :func:`encode` once per story. Word ids are local to a story: ids
``0 .. len(vocabulary) - 1`` are the words with fixed ids (the plan's ``vocabulary``), story
words follow. Fact and query rows are laid out as the ``opcodes`` module says.
"""

import numpy as np

from . import opcodes

__all__ = ["Encoded", "Lexicon", "encode", "question_words", "tokens"]

WIDTH: int = 8
MAX_MENTIONS: int = 6

#: Words that end a noun phrase whatever the lexicon says.
_GRAMMAR_STOP: frozenset[str] = frozenset(
    {
        "is",
        "are",
        "was",
        "and",
        "or",
        "to",
        "in",
        "inside",
        "than",
        "either",
        "a",
        "an",
        "the",
        "from",
        "did",
        "do",
        "does",
        "will",
        "before",
        "carrying",
        "longer",
    }
)
_DETERMINERS: frozenset[str] = frozenset({"the", "a", "an"})

#: One parse of a sentence out of context: (phrases, fact templates, new subjects or None).
_Parse = tuple[tuple[str, ...], tuple[tuple[int, ...], ...], tuple[int, ...] | None]


class Lexicon:
    """A state's word classes (``codegen.state.Lexicon``) as the encoder reads them.

    ``words`` maps each word-class field (``move``, ``take``, ..., ``bigger``) to its words;
    ``times`` is in chronological order and ``directions`` in direction-index order. It also
    keeps the sentence parses made with it (they depend on the lexicon, not on the story).
    """

    def __init__(
        self,
        words: dict[str, frozenset[str]],
        times: list[str],
        directions: list[str],
        plurals: dict[str, str],
    ) -> None:
        self.move = words["move"]
        self.take = words["take"]
        self.drop = words["drop"]
        self.give = words["give"]
        self.receive = words["receive"]
        self.pronouns = words["pronouns"]
        self.particles = words["particles"]
        self.discourse = words["discourse"]
        self.negation = words["negation"]
        self.relations = words["relations"]
        self.smaller = words["smaller"]
        self.bigger = words["bigger"]
        self.time_rank: dict[str, int] = {w: i + 1 for i, w in enumerate(times)}
        self.direction_index: dict[str, int] = {w: i for i, w in enumerate(directions)}
        self.plurals = plurals
        self.stop: frozenset[str] = (
            self.move
            | self.take
            | self.drop
            | self.give
            | self.receive
            | self.relations
            | self.smaller
            | self.bigger
            | self.negation
            | frozenset(self.direction_index)
            | frozenset(self.time_rank)
            | _GRAMMAR_STOP
        )
        self.parses: dict[str, _Parse] = {}


class Encoded:
    """One story, integer-coded, with its questions."""

    def __init__(
        self,
        words: list[str],
        facts: np.ndarray,
        mentions: np.ndarray,
        queries: np.ndarray,
        question_tokens: list[list[str]],
        sentence_tokens: list[list[str]],
    ) -> None:
        self.words = words
        self.facts = facts
        self.mentions = mentions
        self.queries = queries
        self.question_tokens = question_tokens
        self.sentence_tokens = sentence_tokens


def tokens(text: str) -> list[str]:
    """Lowercase words of a sentence, punctuation dropped."""
    return text.replace(",", " ").replace(".", " ").replace("?", " ").lower().split()


def question_words(text: str) -> frozenset[str]:
    """The words routing rules look at."""
    return frozenset(tokens(text))


def encode(
    lex: Lexicon,
    sentences: list[str],
    questions: list[tuple[str, int]],
    vocabulary: tuple[str, ...],
) -> Encoded:
    """Encode ``sentences`` and ``(question text, statements before it)`` pairs.

    ``vocabulary`` words get ids ``0 .. len(vocabulary) - 1`` in every story.
    """
    enc = _Encoder(lex, vocabulary)
    facts: list[list[int]] = []
    mention_rows: list[list[int]] = []
    fact_count_after: list[int] = []
    sentence_tokens: list[list[str]] = []
    for index, sentence in enumerate(sentences):
        toks, cased = _split(sentence)
        for low, shown in cased:
            if low not in enc.cased:
                enc.cased[low] = shown
        sentence_tokens.append(toks)
        before = len(facts)
        enc.statement(sentence, toks, index, facts)
        seen: list[int] = []
        for row in facts[before:]:
            for slot in (1, 2, 3):
                if (
                    row[slot] >= 0
                    and row[slot] not in seen
                    and (row[0] != opcodes.F_DIR or slot != 2)
                ):
                    seen.append(row[slot])
        seen = seen[:MAX_MENTIONS]
        mention_rows.append(seen + [-1] * (MAX_MENTIONS - len(seen)))
        fact_count_after.append(len(facts))
    query_rows: list[list[int]] = []
    question_tokens: list[list[str]] = []
    for text, position in questions:
        raw = text.replace(",", " ").replace(".", " ").replace("?", " ").split()
        enc.remember_display(raw)
        toks = [t.lower() for t in raw]
        question_tokens.append(toks)
        qop, a, b, c = enc.question(toks)
        before = fact_count_after[position - 1] if position > 0 else 0
        query_rows.append([qop, a, b, c, before, position, 0, 0])
    # Arrays are made once from lists: per-element numpy stores cost more than the parsing.
    return Encoded(
        enc.display,
        np.array(facts or [[0] * WIDTH], dtype=np.int32),
        np.array(mention_rows or [[-1] * MAX_MENTIONS], dtype=np.int32),
        np.array(query_rows or [[0] * WIDTH], dtype=np.int32),
        question_tokens,
        sentence_tokens,
    )


#: Sentence text → (lowercase tokens, (lowercase, as written) for capitalized tokens).
_SPLITS: dict[str, tuple[list[str], tuple[tuple[str, str], ...]]] = {}


def _split(sentence: str) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    entry = _SPLITS.get(sentence)
    if entry is None:
        raw = sentence.replace(",", " ").replace(".", " ").replace("?", " ").split()
        toks = [t.lower() for t in raw]
        entry = (toks, tuple((low, t) for low, t in zip(toks, raw, strict=True) if low != t))
        if len(_SPLITS) < _MAX_PARSES:
            _SPLITS[sentence] = entry
    return entry


_MAX_PARSES = 200000
_PLACEHOLDER = -100
_PRONOUN = -50


def _resolve(value: int, ids: list[int]) -> int:
    return ids[_PLACEHOLDER - value] if value <= _PLACEHOLDER else value


def _singular(word: str, plurals: dict[str, str]) -> str:
    if word in plurals:
        return plurals[word]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


class _Encoder:
    """Word ids and the last subjects (for pronouns) while a story is read."""

    def __init__(self, lex: Lexicon, vocabulary: tuple[str, ...], recording: bool = False) -> None:
        self.lex = lex
        self.display: list[str] = list(vocabulary)
        self.ids: dict[str, int] = {w: i for i, w in enumerate(vocabulary)}
        self.cased: dict[str, str] = {}
        self.subjects: list[int] = []
        # Recording mode parses a sentence out of context: word ids become placeholders
        # for the phrases in order of first use, and a pronoun subject becomes _PRONOUN.
        self.recording = recording
        self.recorded: list[str] = []
        self.new_subjects: list[int] | None = None

    def remember_display(self, raw: list[str]) -> None:
        for token in raw:
            low = token.lower()
            if low != token and low not in self.cased:
                self.cased[low] = token

    def word(self, phrase: str) -> int:
        if self.recording:
            if phrase not in self.recorded:
                self.recorded.append(phrase)
            return _PLACEHOLDER - self.recorded.index(phrase)
        if phrase not in self.ids:
            self.ids[phrase] = len(self.display)
            self.display.append(self.cased.get(phrase, phrase))
        return self.ids[phrase]

    def lookup(self, phrase: str) -> int:
        return self.ids.get(phrase, opcodes.ANY)

    def noun_phrase(self, toks: list[str], i: int) -> tuple[str, int]:
        """The phrase starting at ``toks[i]`` (determiners skipped) and the index after it."""
        n = len(toks)
        while i < n and toks[i] in _DETERMINERS:
            i += 1
        words: list[str] = []
        while i < n:
            tok = toks[i]
            if tok == "of":
                if words and i + 1 < n and toks[i + 1] not in self.lex.stop:
                    words.append(tok)
                    i += 1
                    continue
                break
            if tok in self.lex.stop or tok in self.lex.particles:
                break
            words.append(tok)
            i += 1
        return " ".join(words), i

    def statement(self, key: str, toks: list[str], index: int, out: list[list[int]]) -> None:
        """Append the facts of one sentence; parses are cached by sentence, out of context."""
        entry = self.lex.parses.get(key)
        if entry is None:
            recorder = _Encoder(self.lex, (), recording=True)
            rows: list[list[int]] = []
            recorder.parse_statement(toks, rows)
            subjects = recorder.new_subjects
            entry = (
                tuple(recorder.recorded),
                tuple(tuple(row) for row in rows),
                None if subjects is None else tuple(subjects),
            )
            if len(self.lex.parses) < _MAX_PARSES:
                self.lex.parses[key] = entry
        phrases, templates, new_subjects = entry
        ids = [self.word(phrase) for phrase in phrases]
        for row in templates:
            if _PRONOUN in (row[1], row[2], row[3]):
                for s in self.subjects:
                    out.append(
                        [
                            row[0],
                            s if row[1] == _PRONOUN else _resolve(row[1], ids),
                            _resolve(row[2], ids),
                            _resolve(row[3], ids),
                            row[4],
                            index,
                            0,
                            0,
                        ]
                    )
            else:
                out.append(
                    [
                        row[0],
                        _resolve(row[1], ids),
                        _resolve(row[2], ids),
                        _resolve(row[3], ids),
                        row[4],
                        index,
                        0,
                        0,
                    ]
                )
        if new_subjects is not None:
            self.subjects = [_resolve(v, ids) for v in new_subjects]

    def parse_statement(self, toks: list[str], out: list[list[int]]) -> None:
        time = 0
        kept: list[str] = []
        for tok in toks:
            if tok in self.lex.time_rank:
                time = self.lex.time_rank[tok]
            elif tok == "this" or tok in self.lex.particles:
                continue
            else:
                kept.append(tok)
        while kept and kept[0] in self.lex.discourse:
            kept.pop(0)
        if not kept:
            return
        subjects, plural, i = self.subject(kept)
        if not subjects or i >= len(kept):
            return
        verb = kept[i]
        i += 1
        rows = self.predicate(verb, kept, i, subjects, plural)
        for row in rows:
            out.append([row[0], row[1], row[2], row[3], time])

    def subject(self, toks: list[str]) -> tuple[list[int], bool, int]:
        if toks[0] in self.lex.pronouns:
            return ([_PRONOUN] if self.recording else list(self.subjects)), False, 1
        phrase, i = self.noun_phrase(toks, 0)
        if not phrase:
            return [], False, i
        names = [phrase]
        while i < len(toks) and toks[i] == "and":
            other, i = self.noun_phrase(toks, i + 1)
            if other:
                names.append(other)
        plural = i < len(toks) and toks[i] == "are" and len(names) == 1
        if plural:
            names = [_singular(name, self.lex.plurals) for name in names]
        ids = [self.word(name) for name in names]
        self.subjects = ids
        self.new_subjects = ids
        return ids, plural, i

    def predicate(
        self, verb: str, toks: list[str], i: int, subjects: list[int], plural: bool
    ) -> list[tuple[int, int, int, int]]:
        n = len(toks)
        rows: list[tuple[int, int, int, int]] = []
        if verb in self.lex.move:
            while i < n and toks[i] == "to":
                i += 1
            place, i = self.noun_phrase(toks, i)
            if place:
                loc = self.word(place)
                rows = [(opcodes.F_MOVE, s, loc, opcodes.ANY) for s in subjects]
        elif verb in self.lex.take or verb in self.lex.drop:
            thing, i = self.noun_phrase(toks, i)
            if thing:
                obj = self.word(thing)
                op = opcodes.F_TAKE if verb in self.lex.take else opcodes.F_DROP
                rows = [(op, s, obj, opcodes.ANY) for s in subjects]
        elif verb in self.lex.give:
            thing, i = self.noun_phrase(toks, i)
            if i < n and toks[i] == "to" and thing:
                other, i = self.noun_phrase(toks, i + 1)
                if other:
                    obj, to = self.word(thing), self.word(other)
                    rows = [(opcodes.F_GIVE, s, obj, to) for s in subjects]
        elif verb in self.lex.smaller:
            while i < n and toks[i] in ("inside", "in"):
                i += 1
            other, i = self.noun_phrase(toks, i)
            if other:
                rows = [(opcodes.F_SMALLER, s, opcodes.ANY, self.word(other)) for s in subjects]
        elif verb in ("is", "are"):
            rows = self.copula(toks, i, subjects, plural)
        return rows

    def copula(
        self, toks: list[str], i: int, subjects: list[int], plural: bool
    ) -> list[tuple[int, int, int, int]]:
        n = len(toks)
        if i >= n:
            return []
        tok = toks[i]
        if tok == "in":
            place, _ = self.noun_phrase(toks, i + 1)
            return (
                [(opcodes.F_MOVE, s, self.word(place), opcodes.ANY) for s in subjects]
                if place
                else []
            )
        if tok in self.lex.negation:
            while i < n and toks[i] != "in":
                i += 1
            place, _ = self.noun_phrase(toks, i + 1)
            return (
                [(opcodes.F_NOTIN, s, self.word(place), opcodes.ANY) for s in subjects]
                if place
                else []
            )
        if tok == "either":
            first, j = self.noun_phrase(toks, i + 2 if i + 1 < n and toks[i + 1] == "in" else i + 1)
            if j < n and toks[j] == "or" and first:
                second, _ = self.noun_phrase(toks, j + 1)
                if second:
                    a, b = self.word(first), self.word(second)
                    return [(opcodes.F_EITHER, s, a, b) for s in subjects]
            return []
        if tok in ("a", "an"):
            kind, _ = self.noun_phrase(toks, i + 1)
            return (
                [(opcodes.F_ISA, s, self.word(kind), opcodes.ANY) for s in subjects] if kind else []
            )
        if tok in self.lex.relations:
            other, _ = self.noun_phrase(toks, i + 2 if i + 1 < n and toks[i + 1] == "of" else i + 1)
            if not other:
                return []
            target = self.word(_singular(other, self.lex.plurals) if plural else other)
            return [(opcodes.F_REL, s, self.word(tok), target) for s in subjects]
        if tok in self.lex.bigger:
            other, _ = self.noun_phrase(
                toks, i + 2 if i + 1 < n and toks[i + 1] == "than" else i + 1
            )
            return (
                [(opcodes.F_SMALLER, self.word(other), opcodes.ANY, s) for s in subjects]
                if other
                else []
            )
        direction, j = self.direction(toks, i)
        if direction >= 0:
            other, _ = self.noun_phrase(toks, j)
            return (
                [(opcodes.F_DIR, s, direction, self.word(other)) for s in subjects] if other else []
            )
        if i == n - 1:
            return [(opcodes.F_ATTR, s, self.word(tok), opcodes.ANY) for s in subjects]
        return []

    def direction(self, toks: list[str], i: int) -> tuple[int, int]:
        """Direction index of ``[to the] DIR [of]`` at ``toks[i]`` and the index after it."""
        n = len(toks)
        while i < n and toks[i] in ("to", "the"):
            i += 1
        if i < n and toks[i] in self.lex.direction_index:
            d = self.lex.direction_index[toks[i]]
            i += 1
            if i < n and toks[i] == "of":
                i += 1
            return d, i
        return -1, i

    def question(self, toks: list[str]) -> tuple[int, int, int, int]:
        toks = [t for t in toks if t not in self.lex.particles]
        n = len(toks)
        if n < 2:
            return (opcodes.Q_UNKNOWN, opcodes.ANY, opcodes.ANY, opcodes.ANY)
        head = toks[0]
        if head == "where" and toks[1] == "is":
            who, _ = self.noun_phrase(toks, 2)
            return (opcodes.Q_WHERE, self.lookup(who), opcodes.ANY, opcodes.ANY)
        if head == "where" and toks[1] == "was":
            who, i = self.noun_phrase(toks, 2)
            if i < n and toks[i] == "before":
                place, _ = self.noun_phrase(toks, i + 1)
                return (opcodes.Q_BEFORE, self.lookup(who), self.lookup(place), opcodes.ANY)
            return (opcodes.Q_WHERE, self.lookup(who), opcodes.ANY, opcodes.ANY)
        if head == "where" and toks[1] == "will":
            who, _ = self.noun_phrase(toks, 2)
            return (opcodes.Q_WILL_GO, self.lookup(who), opcodes.ANY, opcodes.ANY)
        if head == "why" and toks[1] == "did":
            who, i = self.noun_phrase(toks, 2)
            i += 1
            while i < n and toks[i] == "to":
                i += 1
            what, _ = self.noun_phrase(toks, i)
            return (opcodes.Q_WHY, self.lookup(who), self.lookup(what), opcodes.ANY)
        if head == "how" and toks[1] == "many":
            i = toks.index("is") + 1 if "is" in toks else n
            who, _ = self.noun_phrase(toks, i)
            return (opcodes.Q_COUNT, self.lookup(who), opcodes.ANY, opcodes.ANY)
        if head == "how" and "from" in toks:
            src, i = self.noun_phrase(toks, toks.index("from") + 1)
            dst, _ = self.noun_phrase(toks, i + 1)
            return (opcodes.Q_PATH, self.lookup(src), opcodes.ANY, self.lookup(dst))
        if head == "who":
            return self.who(toks)
        if head == "what" and toks[1] == "did":
            who, i = self.noun_phrase(toks, 2)
            if i + 1 < n and toks[i] in self.lex.give and toks[i + 1] == "to":
                other, _ = self.noun_phrase(toks, i + 2)
                return (opcodes.Q_GIVE, self.lookup(who), opcodes.WANTED, self.lookup(other))
            return (opcodes.Q_UNKNOWN, opcodes.ANY, opcodes.ANY, opcodes.ANY)
        if head == "what" and toks[1] == "is":
            direction, i = self.direction(toks, 2)
            if direction >= 0:
                other, _ = self.noun_phrase(toks, i)
                return (opcodes.Q_DIR, opcodes.WANTED, direction, self.lookup(other))
            who, i = self.noun_phrase(toks, 2)
            if i < n and toks[i] == "carrying":
                return (opcodes.Q_CARRY, self.lookup(who), opcodes.ANY, opcodes.ANY)
            if i < n and toks[i] in self.lex.relations:
                return (opcodes.Q_REL, self.lookup(who), self.lookup(toks[i]), opcodes.ANY)
            direction, _ = self.direction(toks, i)
            if direction >= 0:
                return (opcodes.Q_DIR, self.lookup(who), direction, opcodes.WANTED)
            return (opcodes.Q_UNKNOWN, opcodes.ANY, opcodes.ANY, opcodes.ANY)
        if head == "what" and n > 3 and toks[2] == "is":
            who, _ = self.noun_phrase(toks, 3)
            return (opcodes.Q_ATTR, self.lookup(who), self.lookup(toks[1]), opcodes.ANY)
        if head == "is":
            who, i = self.noun_phrase(toks, 1)
            if i < n and toks[i] == "in":
                place, _ = self.noun_phrase(toks, i + 1)
                return (opcodes.Q_IS_IN, self.lookup(who), self.lookup(place), opcodes.ANY)
            if i < n and toks[i] in self.lex.bigger:
                other, _ = self.noun_phrase(toks, i + 2)
                return (opcodes.Q_SIZE_YN, self.lookup(other), opcodes.ANY, self.lookup(who))
            direction, j = self.direction(toks, i)
            if direction >= 0:
                other, _ = self.noun_phrase(toks, j)
                return (opcodes.Q_DIR_YN, self.lookup(who), direction, self.lookup(other))
        if head == "does":
            who, i = self.noun_phrase(toks, 1)
            if i < n and toks[i] in self.lex.smaller:
                i += 1
                while i < n and toks[i] in ("in", "inside"):
                    i += 1
                other, _ = self.noun_phrase(toks, i)
                return (opcodes.Q_SIZE_YN, self.lookup(who), opcodes.ANY, self.lookup(other))
        return (opcodes.Q_UNKNOWN, opcodes.ANY, opcodes.ANY, opcodes.ANY)

    def who(self, toks: list[str]) -> tuple[int, int, int, int]:
        n = len(toks)
        if toks[1] in self.lex.give:
            thing, i = self.noun_phrase(toks, 2)
            other = ""
            if i < n and toks[i] == "to":
                other, _ = self.noun_phrase(toks, i + 1)
            target = self.lookup(other) if other else opcodes.ANY
            return (opcodes.Q_GIVE, opcodes.WANTED, self.lookup(thing), target)
        if toks[1] in self.lex.receive:
            thing, _ = self.noun_phrase(toks, 2)
            return (opcodes.Q_GIVE, opcodes.ANY, self.lookup(thing), opcodes.WANTED)
        if toks[1] == "did":
            who, i = self.noun_phrase(toks, 2)
            if i < n and toks[i] in self.lex.give:
                thing, _ = self.noun_phrase(toks, i + 1)
                return (opcodes.Q_GIVE, self.lookup(who), self.lookup(thing), opcodes.WANTED)
        return (opcodes.Q_UNKNOWN, opcodes.ANY, opcodes.ANY, opcodes.ANY)
