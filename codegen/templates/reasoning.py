"""The experts' reasoning loops: the code no state value changes.

Every expert is a generic reasoner over a story's integer-coded facts (layout: the
``opcodes`` module). It writes raw evidence for candidates into its own score rows, one row
per evidence channel; the ``scoring`` module weighs the rows. Candidates
``0 .. n_words-1`` are words; candidate ``n_words + k`` is composite answer ``k`` (a list or
a path), whose word ids are ``comp[k, :]``.

What a state specializes arrives as tables from the generated ``experts`` module:

- ``roster``: one row per expert, in the state's order: ``(kind code, first score row)``
  (codes: ``opcodes.EXPERT_CODES``);
- ``fixed``: the fixed ids of yes, no, maybe and nothing (indices ``FIXED_*``; -1 when the
  word is not in the state's vocabulary, so it cannot be answered);
- ``numbers``: ``numbers[n]`` is the fixed id of the number word for ``n`` (-1: none);
- ``directions``: one row per direction index: ``(dx, dy, opposite index, path word id)``.

A story costs one call from the generated module: the loops over questions and experts run
here, typed.
"""

import cython

from . import opcodes

__all__ = ["FIXED_YES", "FIXED_NO", "FIXED_MAYBE", "FIXED_NOTHING", "run_story"]

MAX_COMPOSITE: cython.int = opcodes.MAX_COMPOSITE
COMPOSITE_WIDTH: cython.int = opcodes.COMPOSITE_WIDTH

#: Indices into the ``fixed`` table.
FIXED_YES: int = 0
FIXED_NO: int = 1
FIXED_MAYBE: int = 2
FIXED_NOTHING: int = 3

WANTED: cython.int = opcodes.WANTED

F_MOVE: cython.int = opcodes.F_MOVE
F_NOTIN: cython.int = opcodes.F_NOTIN
F_EITHER: cython.int = opcodes.F_EITHER
F_TAKE: cython.int = opcodes.F_TAKE
F_DROP: cython.int = opcodes.F_DROP
F_GIVE: cython.int = opcodes.F_GIVE
F_DIR: cython.int = opcodes.F_DIR
F_SMALLER: cython.int = opcodes.F_SMALLER
F_ISA: cython.int = opcodes.F_ISA
F_REL: cython.int = opcodes.F_REL
F_ATTR: cython.int = opcodes.F_ATTR

Q_WHERE: cython.int = opcodes.Q_WHERE
Q_BEFORE: cython.int = opcodes.Q_BEFORE
Q_IS_IN: cython.int = opcodes.Q_IS_IN
Q_COUNT: cython.int = opcodes.Q_COUNT
Q_CARRY: cython.int = opcodes.Q_CARRY
Q_GIVE: cython.int = opcodes.Q_GIVE
Q_DIR: cython.int = opcodes.Q_DIR
Q_DIR_YN: cython.int = opcodes.Q_DIR_YN
Q_SIZE_YN: cython.int = opcodes.Q_SIZE_YN
Q_PATH: cython.int = opcodes.Q_PATH
Q_REL: cython.int = opcodes.Q_REL
Q_ATTR: cython.int = opcodes.Q_ATTR
Q_WILL_GO: cython.int = opcodes.Q_WILL_GO
Q_WHY: cython.int = opcodes.Q_WHY

E_TRACKING: cython.int = opcodes.EXPERT_CODES["tracking"]
E_COUNTING: cython.int = opcodes.EXPERT_CODES["counting"]
E_DEDUCTION: cython.int = opcodes.EXPERT_CODES["deduction"]
E_SPATIAL: cython.int = opcodes.EXPERT_CODES["spatial"]
E_MOTIVATION: cython.int = opcodes.EXPERT_CODES["motivation"]
E_EMBEDDING: cython.int = opcodes.EXPERT_CODES["embedding"]

# Work rows (one int per word each).
W_LOC: cython.int = 0
W_HOLDER: cython.int = 1
W_FIRST: cython.int = 2
W_KIND: cython.int = 3
W_ALT1: cython.int = 4
W_ALT2: cython.int = 5
W_QUEUE: cython.int = 6
W_SEEN: cython.int = 7
W_VIA: cython.int = 8
W_X: cython.int = 9
W_Y: cython.int = 10
W_HIST: cython.int = 11
W_FIRST_BY: cython.int = 12
W_IDS: cython.int = 13
W_NCOMP: cython.int = 14


@cython.boundscheck(False)
@cython.wraparound(False)
def run_story(
    facts: cython.int[:, ::1],
    queries: cython.int[:, ::1],
    n_questions: cython.int,
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, :, ::1],
    comp: cython.int[:, :, ::1],
    n_cand: cython.int[::1],
    mentions: cython.int[:, ::1],
    attn: cython.double[:, ::1],
    word_vecs: cython.double[:, ::1],
    qvecs: cython.double[:, ::1],
    roster: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> None:
    """Run the experts of ``roster`` on every query of a story (one query: a story of one);
    ``n_cand[q]`` gets its candidate count."""
    q: cython.int
    for q in range(n_questions):
        n_cand[q] = n_words + _run_one(
            facts,
            queries[q],
            n_words,
            work,
            scores[q],
            comp[q],
            mentions,
            attn[q],
            word_vecs,
            qvecs[q],
            roster,
            fixed,
            numbers,
            directions,
        )


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _run_one(
    facts: cython.int[:, ::1],
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    comp: cython.int[:, ::1],
    mentions: cython.int[:, ::1],
    attn: cython.double[::1],
    word_vecs: cython.double[:, ::1],
    qvec: cython.double[::1],
    roster: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.int:
    n_facts: cython.int = query[4]
    r: cython.int
    c: cython.int
    e: cython.int
    kind: cython.int
    row: cython.int
    for r in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            scores[r, c] = 0.0
    work[W_NCOMP, 0] = 0
    for e in range(roster.shape[0]):
        kind = roster[e, 0]
        row = roster[e, 1]
        if kind == E_EMBEDDING:
            _embedding(facts, n_facts, query, n_words, scores, row, mentions, attn, word_vecs, qvec)
        elif kind == E_TRACKING:
            _tracking(
                facts, n_facts, query, n_words, work, scores, row, comp, fixed, numbers, directions
            )
        elif kind == E_COUNTING:
            _counting(
                facts, n_facts, query, n_words, work, scores, row, comp, fixed, numbers, directions
            )
        elif kind == E_DEDUCTION:
            _deduction(
                facts, n_facts, query, n_words, work, scores, row, comp, fixed, numbers, directions
            )
        elif kind == E_SPATIAL:
            _spatial(
                facts, n_facts, query, n_words, work, scores, row, comp, fixed, numbers, directions
            )
        elif kind == E_MOTIVATION:
            _motivation(
                facts, n_facts, query, n_words, work, scores, row, comp, fixed, numbers, directions
            )
    return work[W_NCOMP, 0]


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _number_id(numbers: cython.int[::1], n: cython.int) -> cython.int:
    """Fixed id of the number word for ``n`` (-1: none in the vocabulary)."""
    return numbers[n] if 0 <= n < numbers.shape[0] else -1


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _direction(
    directions: cython.int[:, ::1], d: cython.int, column: cython.int, missing: cython.int
) -> cython.int:
    """Column ``column`` of direction ``d``'s row; ``missing`` for an index not in the table."""
    return directions[d, column] if 0 <= d < directions.shape[0] else missing


@cython.cfunc
def _dir_dx(directions: cython.int[:, ::1], d: cython.int) -> cython.int:
    return _direction(directions, d, 0, 0)


@cython.cfunc
def _dir_dy(directions: cython.int[:, ::1], d: cython.int) -> cython.int:
    return _direction(directions, d, 1, 0)


@cython.cfunc
def _dir_opposite(directions: cython.int[:, ::1], d: cython.int) -> cython.int:
    return _direction(directions, d, 2, -1)


@cython.cfunc
def _dir_short(directions: cython.int[:, ::1], d: cython.int) -> cython.int:
    """Fixed id of the word a path answer uses for direction ``d`` (-1: not in vocabulary)."""
    return _direction(directions, d, 3, -1)


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _composite(comp: cython.int[:, ::1], work: cython.int[:, ::1], n: cython.int) -> cython.int:
    """Slot of the composite answer ``work[W_IDS, :n]`` (made on first use; -1 when full).

    ``work[W_NCOMP, 0]`` counts the composites made for the current question.
    """
    k: cython.int
    j: cython.int
    same: cython.bint
    for k in range(work[W_NCOMP, 0]):
        same = True
        for j in range(COMPOSITE_WIDTH):
            if comp[k, j] != (work[W_IDS, j] if j < n else -1):
                same = False
        if same:
            return k
    if work[W_NCOMP, 0] >= MAX_COMPOSITE:
        return -1
    k = work[W_NCOMP, 0]
    for j in range(COMPOSITE_WIDTH):
        comp[k, j] = work[W_IDS, j] if j < n else -1
    work[W_NCOMP, 0] = k + 1
    return k


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _simulate(
    facts: cython.int[:, ::1], n_facts: cython.int, n_words: cython.int, work: cython.int[:, ::1]
) -> cython.void:
    """Replay moves, takes, drops and gives: where everything is and who holds what."""
    i: cython.int
    w: cython.int
    op: cython.int
    a: cython.int
    b: cython.int
    c: cython.int
    for w in range(n_words):
        work[W_LOC, w] = -1
        work[W_HOLDER, w] = -1
        work[W_FIRST, w] = -1
        work[W_FIRST_BY, w] = -1
        work[W_KIND, w] = 0
    for i in range(n_facts):
        op = facts[i, 0]
        a = facts[i, 1]
        b = facts[i, 2]
        c = facts[i, 3]
        if op == F_MOVE:
            work[W_LOC, a] = b
            work[W_KIND, a] = 1
            for w in range(n_words):
                if work[W_HOLDER, w] == a:
                    work[W_LOC, w] = b
        elif op == F_NOTIN:
            work[W_LOC, a] = -1
            work[W_KIND, a] = 2
            work[W_ALT1, a] = b
        elif op == F_EITHER:
            work[W_LOC, a] = -1
            work[W_KIND, a] = 3
            work[W_ALT1, a] = b
            work[W_ALT2, a] = c
        elif op == F_TAKE:
            work[W_HOLDER, b] = a
            work[W_LOC, b] = work[W_LOC, a]
            # Lists follow the order in which the holder first took each thing.
            if work[W_FIRST_BY, b] != a:
                work[W_FIRST, b] = i
                work[W_FIRST_BY, b] = a
        elif op == F_DROP:
            if work[W_HOLDER, b] == a:
                work[W_HOLDER, b] = -1
            work[W_LOC, b] = work[W_LOC, a]
        elif op == F_GIVE:
            work[W_HOLDER, b] = c
            work[W_LOC, b] = work[W_LOC, c]
            if work[W_FIRST_BY, b] != c:
                work[W_FIRST, b] = i
                work[W_FIRST_BY, b] = c


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _is_actor(facts: cython.int[:, ::1], n_facts: cython.int, x: cython.int) -> cython.bint:
    i: cython.int
    for i in range(n_facts):
        if facts[i, 1] == x and (facts[i, 0] == F_MOVE or facts[i, 0] == F_TAKE):
            return True
    return False


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _tracking(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    row: cython.int,
    comp: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.void:
    """Where things are and were: moves, carrying, giving, time order."""
    qop: cython.int = query[0]
    x: cython.int = query[1]
    i: cython.int
    j: cython.int
    n: cython.int
    loc: cython.int
    actor: cython.bint
    if qop == Q_WHERE and x >= 0:
        _simulate(facts, n_facts, n_words, work)
        loc = work[W_LOC, x]
        if loc >= 0:
            actor = _is_actor(facts, n_facts, x)
            scores[row + (0 if actor else 1), loc] += 1.0
    elif qop == Q_BEFORE and x >= 0 and query[2] >= 0:
        # History of x's locations ordered by (time word, story order); the answer is the
        # place before the last visit to the asked place.
        _simulate_history(facts, n_facts, n_words, x, work)
        n = work[W_HIST, 0]
        for i in range(n - 1, 0, -1):
            if work[W_QUEUE, i] == query[2]:
                scores[row + 1, work[W_QUEUE, i - 1]] += 1.0
                break
    elif qop == Q_GIVE:
        for i in range(n_facts - 1, -1, -1):
            if facts[i, 0] != F_GIVE:
                continue
            if query[1] >= 0 and facts[i, 1] != query[1]:
                continue
            if query[2] >= 0 and facts[i, 2] != query[2]:
                continue
            if query[3] >= 0 and facts[i, 3] != query[3]:
                continue
            for j in range(1, 4):
                if query[j] == WANTED:
                    scores[row, facts[i, j]] += 1.0
            break


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _simulate_history(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    n_words: cython.int,
    x: cython.int,
    work: cython.int[:, ::1],
) -> cython.void:
    """Distinct consecutive locations of ``x``: ``work[W_QUEUE, :n]``, n in ``work[W_HIST, 0]``."""
    i: cython.int
    j: cython.int
    w: cython.int
    n: cython.int = 0
    loc: cython.int
    key: cython.int
    holder: cython.int = -1
    cap: cython.int = work.shape[1]
    for w in range(n_words):
        work[W_LOC, w] = -1
    for i in range(n_facts):
        loc = -1
        if facts[i, 0] == F_MOVE:
            work[W_LOC, facts[i, 1]] = facts[i, 2]
            if facts[i, 1] == x or facts[i, 1] == holder:
                loc = facts[i, 2]
        elif facts[i, 0] == F_TAKE and facts[i, 2] == x:
            holder = facts[i, 1]
            loc = work[W_LOC, holder]
        elif facts[i, 0] == F_DROP and facts[i, 2] == x:
            holder = -1
        elif facts[i, 0] == F_GIVE and facts[i, 2] == x:
            holder = facts[i, 3]
            loc = work[W_LOC, holder]
        if loc < 0 or n >= cap:
            continue
        key = facts[i, 4] * 100000 + i
        # Insertion by (time, order): untimed stories keep story order.
        j = n
        while j > 0 and work[W_SEEN, j - 1] > key:
            work[W_QUEUE, j] = work[W_QUEUE, j - 1]
            work[W_SEEN, j] = work[W_SEEN, j - 1]
            j -= 1
        work[W_QUEUE, j] = loc
        work[W_SEEN, j] = key
        n += 1
    # Collapse repeats of the same place.
    j = 0
    for i in range(n):
        if j == 0 or work[W_QUEUE, i] != work[W_QUEUE, j - 1]:
            work[W_QUEUE, j] = work[W_QUEUE, i]
            j += 1
    work[W_HIST, 0] = j


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _counting(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    row: cython.int,
    comp: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.void:
    """How many, which ones, and yes/no/maybe about where someone is."""
    qop: cython.int = query[0]
    x: cython.int = query[1]
    place: cython.int = query[2]
    w: cython.int
    k: cython.int
    n: cython.int = 0
    best: cython.int
    slot: cython.int
    kind: cython.int
    answer: cython.int = -1
    ids: cython.int[::1]
    if x < 0 or not (qop == Q_COUNT or qop == Q_CARRY or qop == Q_IS_IN):
        return
    _simulate(facts, n_facts, n_words, work)
    if qop == Q_IS_IN:
        kind = work[W_KIND, x]
        if kind == 1:
            answer = fixed[FIXED_YES] if work[W_LOC, x] == place else fixed[FIXED_NO]
        elif kind == 2:
            answer = fixed[FIXED_NO] if work[W_ALT1, x] == place else fixed[FIXED_MAYBE]
        elif kind == 3:
            answer = (
                fixed[FIXED_MAYBE]
                if (work[W_ALT1, x] == place or work[W_ALT2, x] == place)
                else fixed[FIXED_NO]
            )
        if answer >= 0:
            scores[row, answer] += 1.0
        return
    for w in range(n_words):
        if work[W_HOLDER, w] == x:
            n += 1
    if qop == Q_COUNT:
        if _number_id(numbers, n) >= 0:
            scores[row, _number_id(numbers, n)] += 1.0
        return
    if n == 0:
        if fixed[FIXED_NOTHING] >= 0:
            scores[row, fixed[FIXED_NOTHING]] += 1.0
        return
    # The carried objects, first taken first.
    ids = work[W_IDS, :]
    for k in range(min(n, COMPOSITE_WIDTH)):
        best = -1
        for w in range(n_words):
            if work[W_HOLDER, w] == x and (best < 0 or work[W_FIRST, w] < work[W_FIRST, best]):
                best = w
        ids[k] = best
        work[W_HOLDER, best] = -2
    if n == 1:
        scores[row, ids[0]] += 1.0
        return
    slot = _composite(comp, work, min(n, COMPOSITE_WIDTH))
    if slot >= 0:
        scores[row, n_words + slot] += 1.0


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _deduction(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    row: cython.int,
    comp: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.void:
    """Relations through is-a chains (deduction) and attributes shared by kind (induction)."""
    qop: cython.int = query[0]
    x: cython.int = query[1]
    rel: cython.int = query[2]
    i: cython.int
    j: cython.int
    depth: cython.int
    kind: cython.int
    z: cython.int
    if x < 0 or not (qop == Q_REL or qop == Q_ATTR):
        return
    if qop == Q_REL:
        for depth in range(4):
            for i in range(n_facts - 1, -1, -1):
                if facts[i, 0] == F_REL and facts[i, 1] == x and (rel < 0 or facts[i, 2] == rel):
                    scores[row + (0 if depth == 0 else 1), facts[i, 3]] += 1.0
                    return
            x = _kind_of(facts, n_facts, x)
            if x < 0:
                return
        return
    for i in range(n_facts - 1, -1, -1):
        if facts[i, 0] == F_ATTR and facts[i, 1] == x:
            scores[row, facts[i, 2]] += 1.0
            return
    kind = _kind_of(facts, n_facts, x)
    if kind < 0:
        return
    # Induction: the attribute of the most recently introduced other member of x's kind.
    for i in range(n_facts - 1, -1, -1):
        if facts[i, 0] != F_ISA or facts[i, 2] != kind or facts[i, 1] == x:
            continue
        z = facts[i, 1]
        for j in range(n_facts - 1, -1, -1):
            if facts[j, 0] == F_ATTR and facts[j, 1] == z:
                scores[row + 1, facts[j, 2]] += 1.0
                return


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _kind_of(facts: cython.int[:, ::1], n_facts: cython.int, x: cython.int) -> cython.int:
    i: cython.int
    for i in range(n_facts - 1, -1, -1):
        if facts[i, 0] == F_ISA and facts[i, 1] == x:
            return facts[i, 2]
    return -1


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _spatial(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    row: cython.int,
    comp: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.void:
    """Directions, relative positions, paths (graph search) and sizes (transitive closure)."""
    qop: cython.int = query[0]
    a: cython.int = query[1]
    d: cython.int = query[2]
    c: cython.int = query[3]
    i: cython.int
    n: cython.int
    k: cython.int
    dot: cython.int
    slot: cython.int
    ids: cython.int[::1]
    if qop == Q_DIR:
        for i in range(n_facts - 1, -1, -1):
            if facts[i, 0] != F_DIR:
                continue
            if facts[i, 2] == d:
                if a == WANTED and facts[i, 3] == c:
                    scores[row, facts[i, 1]] += 1.0
                    return
                if c == WANTED and facts[i, 1] == a:
                    scores[row, facts[i, 3]] += 1.0
                    return
            if facts[i, 2] == _dir_opposite(directions, d):
                if a == WANTED and facts[i, 1] == c:
                    scores[row + 1, facts[i, 3]] += 1.0
                    return
                if c == WANTED and facts[i, 3] == a:
                    scores[row + 1, facts[i, 1]] += 1.0
                    return
    elif qop == Q_DIR_YN and a >= 0 and c >= 0:
        if not _place(facts, n_facts, n_words, c, work, directions):
            return
        if work[W_SEEN, a] == 0:
            return
        dot = work[W_X, a] * _dir_dx(directions, d) + work[W_Y, a] * _dir_dy(directions, d)
        k = fixed[FIXED_YES] if dot > 0 else fixed[FIXED_NO]
        if k >= 0:
            scores[row + 1, k] += 1.0
    elif qop == Q_PATH and a >= 0 and c >= 0:
        n = _path(facts, n_facts, n_words, a, c, work, directions)
        if n <= 0 or n > COMPOSITE_WIDTH:
            return
        ids = work[W_IDS, :]
        for k in range(n):
            ids[k] = _dir_short(directions, work[W_HIST, k])
            if ids[k] < 0:
                return
        if n == 1:
            scores[row + 1, ids[0]] += 1.0
            return
        slot = _composite(comp, work, n)
        if slot >= 0:
            scores[row + 1, n_words + slot] += 1.0
    elif qop == Q_SIZE_YN and a >= 0 and c >= 0:
        if _reaches(facts, n_facts, n_words, a, c, work):
            k = fixed[FIXED_YES]
        else:
            k = fixed[FIXED_NO]
        if k >= 0:
            scores[row + 1, k] += 1.0


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _place(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    n_words: cython.int,
    origin: cython.int,
    work: cython.int[:, ::1],
    directions: cython.int[:, ::1],
) -> cython.bint:
    """Coordinates of everything connected to ``origin`` by direction facts (BFS)."""
    i: cython.int
    w: cython.int
    head: cython.int = 0
    tail: cython.int = 1
    a: cython.int
    c: cython.int
    d: cython.int
    for w in range(n_words):
        work[W_SEEN, w] = 0
    work[W_SEEN, origin] = 1
    work[W_X, origin] = 0
    work[W_Y, origin] = 0
    work[W_QUEUE, 0] = origin
    while head < tail:
        w = work[W_QUEUE, head]
        head += 1
        for i in range(n_facts):
            if facts[i, 0] != F_DIR:
                continue
            a = facts[i, 1]
            d = facts[i, 2]
            c = facts[i, 3]
            if c == w and work[W_SEEN, a] == 0:
                work[W_SEEN, a] = 1
                work[W_X, a] = work[W_X, w] + _dir_dx(directions, d)
                work[W_Y, a] = work[W_Y, w] + _dir_dy(directions, d)
                work[W_QUEUE, tail] = a
                tail += 1
            elif a == w and work[W_SEEN, c] == 0:
                work[W_SEEN, c] = 1
                work[W_X, c] = work[W_X, w] - _dir_dx(directions, d)
                work[W_Y, c] = work[W_Y, w] - _dir_dy(directions, d)
                work[W_QUEUE, tail] = c
                tail += 1
    return True


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _path(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    n_words: cython.int,
    src: cython.int,
    dst: cython.int,
    work: cython.int[:, ::1],
    directions: cython.int[:, ::1],
) -> cython.int:
    """Shortest path by direction facts; its directions in ``work[W_HIST, :n]``; n or -1."""
    i: cython.int
    w: cython.int
    n: cython.int
    head: cython.int = 0
    tail: cython.int = 1
    a: cython.int
    c: cython.int
    for w in range(n_words):
        work[W_SEEN, w] = -1
    work[W_SEEN, src] = src
    work[W_QUEUE, 0] = src
    while head < tail and work[W_SEEN, dst] < 0:
        w = work[W_QUEUE, head]
        head += 1
        for i in range(n_facts):
            if facts[i, 0] != F_DIR:
                continue
            a = facts[i, 1]
            c = facts[i, 3]
            # "a is d of c": from c go d to a; from a go opposite(d) to c.
            if c == w and work[W_SEEN, a] < 0:
                work[W_SEEN, a] = w
                work[W_VIA, a] = facts[i, 2]
                work[W_QUEUE, tail] = a
                tail += 1
            elif a == w and work[W_SEEN, c] < 0:
                work[W_SEEN, c] = w
                work[W_VIA, c] = _dir_opposite(directions, facts[i, 2])
                work[W_QUEUE, tail] = c
                tail += 1
    if work[W_SEEN, dst] < 0 or dst == src:
        return -1
    n = 0
    w = dst
    while w != src and n < work.shape[1]:
        work[W_QUEUE, n] = work[W_VIA, w]
        w = work[W_SEEN, w]
        n += 1
    for i in range(n):
        work[W_HIST, i] = work[W_QUEUE, n - 1 - i]
    return n


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _reaches(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    n_words: cython.int,
    src: cython.int,
    dst: cython.int,
    work: cython.int[:, ::1],
) -> cython.bint:
    """Whether ``src`` is smaller than ``dst`` by a chain of size facts."""
    i: cython.int
    w: cython.int
    head: cython.int = 0
    tail: cython.int = 1
    for w in range(n_words):
        work[W_SEEN, w] = 0
    work[W_SEEN, src] = 1
    work[W_QUEUE, 0] = src
    while head < tail:
        w = work[W_QUEUE, head]
        head += 1
        for i in range(n_facts):
            if facts[i, 0] == F_SMALLER and facts[i, 1] == w and work[W_SEEN, facts[i, 3]] == 0:
                if facts[i, 3] == dst:
                    return True
                work[W_SEEN, facts[i, 3]] = 1
                work[W_QUEUE, tail] = facts[i, 3]
                tail += 1
    return False


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
def _motivation(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    work: cython.int[:, ::1],
    scores: cython.double[:, ::1],
    row: cython.int,
    comp: cython.int[:, ::1],
    fixed: cython.int[::1],
    numbers: cython.int[::1],
    directions: cython.int[:, ::1],
) -> cython.void:
    """Why someone acts: their state. Learned associations (row + 1) are the ``knowledge``
    module's, which the model runs after the experts."""
    qop: cython.int = query[0]
    x: cython.int = query[1]
    i: cython.int
    attr: cython.int = -1
    if x < 0 or not (qop == Q_WILL_GO or qop == Q_WHY):
        return
    for i in range(n_facts - 1, -1, -1):
        if facts[i, 0] == F_ATTR and facts[i, 1] == x:
            attr = facts[i, 2]
            break
    if qop == Q_WHY and attr >= 0:
        scores[row, attr] += 1.0


@cython.cfunc
@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def _embedding(
    facts: cython.int[:, ::1],
    n_facts: cython.int,
    query: cython.int[::1],
    n_words: cython.int,
    scores: cython.double[:, ::1],
    row: cython.int,
    mentions: cython.int[:, ::1],
    attn: cython.double[::1],
    word_vecs: cython.double[:, ::1],
    qvec: cython.double[::1],
) -> cython.void:
    """Soft evidence: word-embedding similarity, attention over sentences, latest mention."""
    n_sent: cython.int = query[5]
    x: cython.int = query[1]
    w: cython.int
    s: cython.int
    m: cython.int
    t: cython.int
    dim: cython.int = qvec.shape[0]
    acc: cython.double
    total: cython.double = 0.0
    for w in range(n_words):
        acc = 0.0
        for t in range(dim):
            acc += word_vecs[w, t] * qvec[t]
        if acc > 0.0:
            scores[row, w] += acc
    # Attention weights arrive unnormalized over the whole story: renormalizing over the
    # sentences before the question is exactly causal softmax attention.
    for s in range(min(n_sent, attn.shape[0])):
        total += attn[s]
    if total > 0.0:
        for s in range(min(n_sent, attn.shape[0])):
            for m in range(mentions.shape[1]):
                w = mentions[s, m]
                if w >= 0:
                    scores[row + 1, w] += attn[s] / total
    if x < 0:
        return
    for s in range(min(n_sent, mentions.shape[0]) - 1, -1, -1):
        for m in range(mentions.shape[1]):
            if mentions[s, m] == x:
                for t in range(mentions.shape[1]):
                    w = mentions[s, t]
                    if w >= 0 and w != x:
                        scores[row + 2, w] += 1.0
                return
