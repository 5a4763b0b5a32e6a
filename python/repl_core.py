"""The REPL semantics shared by rlm's two executors.

Not a module of its own: its text is placed into the Python source of each executor, which then defines its
``Session`` as a subclass of ``SessionCore``:

* ``crates/executor-local/src/prelude.py`` (CPython embedded in the host process): ``runtime.rs`` inserts this text at
  the marker line of the prelude, after the prelude has given its module a private copy of the builtins;
* ``crates/executor-wasm/src/driver.py`` (CPython for WASI): ``lib.rs`` puts this text in front of the driver.

What lives here is what both executors must do alike: the reserved names (``context``, the sub-call functions,
``SHOW_VARS``, ``FINAL_VAR``) and their restoration after each cell, the ``answer`` dict, the user-variable queries,
the IPython-style echo of a trailing expression, the capped output buffer of a cell, short tracebacks with
``<cell N>`` file names and the context summary. What differs stays with each executor: how sub-calls reach the host,
how sys.stdout / sys.stderr reach the buffer, threads and signals.
"""

import ast  # noqa: E402
import bisect  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import re  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------------
# Output capture buffer (each executor routes sys.stdout / sys.stderr into it its own way)
# ---------------------------------------------------------------------------------------------------------------------


class _Capture:
    """stdout and stderr of one cell, capped in total characters; the rest is only counted."""

    __slots__ = ("parts", "remaining", "dropped")

    def __init__(self, limit):
        self.parts = ([], [])  # (stdout pieces, stderr pieces)
        self.remaining = limit
        self.dropped = 0

    def write(self, index, text):
        n = len(text)
        room = self.remaining
        if n <= room:
            self.parts[index].append(text)
            self.remaining = room - n
        else:
            # Keep what fits; never hold on to the rest (a `print("x" * 10**9)` flood must not grow the buffer).
            if room > 0:
                self.parts[index].append(text[:room])
                self.remaining = 0
            self.dropped += n - room
        return n


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


class _Text(str):
    """A str whose repr is itself, so that an echoed `SHOW_VARS()` reads like text rather than a quoted literal."""

    __slots__ = ()

    def __repr__(self):
        return str.__str__(self)


class _Shown(_Text):
    """A message that was already printed; the end-of-cell echo skips it so it does not appear twice."""

    __slots__ = ()


def _safe_str(value):
    try:
        return str(value)
    except BaseException as exc:  # a broken __str__ must not fail the cell bookkeeping
        return f"<str() failed: {type(exc).__name__}: {exc}>"


def _as_prompt(prompt):
    if isinstance(prompt, str):
        return prompt
    try:
        return json.dumps(prompt, ensure_ascii=False)
    except (TypeError, ValueError):
        return _safe_str(prompt)


def _as_model(model):
    return None if model is None else str(model)


def _no_input(*_args, **_kwargs):
    # There is nobody to type: without this, input() would block the cell until its time limit.
    raise EOFError("input() is not available in this REPL")


# A traceback deeper than this (a runaway recursion: up to a million frames) is described by its first and last
# _TB_KEEP frames only; extracting and formatting every frame would take longer than the cell itself.
_TB_KEEP = 50


def _cell_traceback_lines(tb):
    """The formatted frames of cell code in `tb` (with the "Traceback" line), or [] when there are none."""
    depth = 0
    entry = tb
    while entry is not None:
        depth += 1
        entry = entry.tb_next
    if depth <= 2 * _TB_KEEP:
        parts = [traceback.extract_tb(tb)]
    else:
        tail = tb
        for _ in range(depth - _TB_KEEP):
            tail = tail.tb_next
        parts = [traceback.extract_tb(tb, limit=_TB_KEEP), traceback.extract_tb(tail)]
    parts = [[f for f in part if f.filename.startswith("<cell ")] for part in parts]
    if not any(parts):
        return []
    lines = ["Traceback (most recent call last):\n"]
    for index, frames in enumerate(parts):
        if index:
            lines.append(f"  ... {depth - 2 * _TB_KEEP} more frames not shown ...\n")
        lines.extend(traceback.StackSummary.from_list(frames).format())
    return lines


def context_info(context):
    """(python_type, total_chars, chunk_lengths[:100], chunk_count) for the context value."""
    type_name = type(context).__name__
    if isinstance(context, str):
        n = len(context)
        return type_name, n, [n], 1
    if isinstance(context, dict):
        items = context.values()
    elif isinstance(context, (list, tuple)):
        items = context
    else:
        n = len(_safe_str(context))
        return type_name, n, [n], 1
    total = 0
    listed = []
    for item in items:
        n = len(item) if isinstance(item, str) else len(_safe_str(item))
        total += n
        if len(listed) < 100:
            listed.append(n)
    return type_name, total, listed, len(context)


# ---------------------------------------------------------------------------------------------------------------------
# The session core
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# search(): finding passages by words, forgiving of case, plurals and inexact phrasing (small models need that)
# ---------------------------------------------------------------------------------------------------------------------

_SEARCH_STOPWORDS = frozenset(
    "a an the of for in on at to is are was were be and or what which who whom whose how when where why does do did"
    " mentioned provided text context that this with from by as it its".split()
)


class _Passages(list):
    """The passages `search` found; prints as readable text with a one-line summary."""

    def __init__(self, passages, summary):
        super().__init__(passages)
        self.summary = summary

    def __repr__(self):
        if not self:
            return self.summary
        return self.summary + "\n" + "\n---\n".join(self)

    __str__ = __repr__


def _word_pattern(word):
    """`word` at word boundaries, matching its singular and plural forms."""
    lower = word.lower()
    if len(lower) > 4 and lower.endswith("es") and not lower.endswith("ses"):
        stem = word[:-2]
    elif len(lower) > 3 and lower.endswith("s") and not lower.endswith("ss"):
        stem = word[:-1]
    else:
        stem = word
    return r"(?<!\w)" + re.escape(stem) + r"(?:e?s)?(?!\w)"


def _searchable_text(context):
    if isinstance(context, str):
        return context
    if isinstance(context, dict):
        return "\n".join(f"{key}: {value}" for key, value in context.items())
    if isinstance(context, (list, tuple)):
        return "\n".join(str(item) for item in context)
    return str(context)


# A line of records or markup rather than prose: a list item, heading, table row, quote or JSON line; a key=value
# pair; a field delimiter with no space after it (CSV, TSV), as prose writes ", ".
_RECORD_LIKE = re.compile(r"^\s*(?:[-*#|>{\[]|\d+[.)]\s)|=|\t|[^\d\s][,;|]\S|\S\|")


def _wraps(text, newline):
    """Whether the line break at `newline` only wraps a sentence of prose (a README, a book at 70 columns), so a
    passage goes on across it. Lines of records (logs, CSV, JSON lines), headings, list items and short lines end
    where they end."""
    start = text.rfind("\n", 0, newline) + 1
    line = text[start:newline].rstrip()
    following = text[newline + 1 : text.find("\n", newline + 1) if text.find("\n", newline + 1) >= 0 else len(text)]
    if len(line) < 40 or line.count(" ") < 5 or not following.strip():
        return False
    if line[-1] in ".!?:" or not (line[-1].isalnum() or line[-1] in ",;)`'\""):
        return False
    first = following.lstrip()[:1]
    if not (first.isalnum() or first in "`(\"'"):
        return False
    return not (_RECORD_LIKE.search(line) or _RECORD_LIKE.search(following))


def _passage(text, start, end, window):
    """The sentence(s) around text[start:end], at most `window` characters beyond the match on each side."""
    lo_limit, hi_limit = max(0, start - window), min(len(text), end + window)
    lo = start
    while lo > lo_limit and not (
        (text[lo - 1] == "\n" and not _wraps(text, lo - 1))
        or (text[lo - 1] in " \t\n" and text[lo - 2 : lo - 1] in ".!?")
    ):
        lo -= 1
    hi = end
    while hi < hi_limit and not (
        (text[hi] == "\n" and not _wraps(text, hi))
        or (text[hi] in ".!?" and (hi + 1 >= len(text) or text[hi + 1] in " \n\t"))
    ):
        hi += 1
    hi = min(len(text), hi + 1)
    snippet = " ".join(text[lo:hi].split())
    return ("..." if lo > 0 and lo == lo_limit else "") + snippet + ("..." if hi < len(text) and hi > hi_limit else "")


def search_text(context, words, max_results=10, window=200):
    """Passages of `context` containing `words`: the exact phrase (ignoring case, plural endings and punctuation
    between words) when it occurs, else the places where most of its words occur close together."""
    if not isinstance(words, str) or not words.strip():
        return _Passages([], "search() needs words to look for, e.g. search(\"a name from the question\")")
    text = _searchable_text(context)
    tokens = re.findall(r"[\w][\w'-]*", words)
    if not tokens:
        return _Passages([], f"No searchable words in {words!r}.")
    max_results = max(1, int(max_results))
    window = max(40, int(window))

    def collect(spans):
        # Spans come in the order to show them (by position, or the tightest first): a span close to one already
        # taken is the same place.
        found, taken = [], []
        for start, end in spans:
            if any(t_start - window // 2 < start < t_end for t_start, t_end in taken):
                continue
            passage = _passage(text, start, end, window)
            # Two hits in one long (wrapped) sentence give the same passage, or one cut shorter by the window.
            core = passage.strip(".")
            same = next((i for i, earlier in enumerate(found) if core in earlier or earlier.strip(".") in passage), None)
            if same is None:
                found.append(passage)
            elif len(passage) > len(found[same]):
                found[same] = passage
            taken.append((start, end + window // 2))
            if len(found) >= max_results:
                break
        return found

    phrase = re.compile(r"\W+".join(_word_pattern(t) for t in tokens), re.IGNORECASE)
    spans = [m.span() for m in phrase.finditer(text)]
    if spans:
        found = collect(spans)
        return _Passages(found, _found_summary(words, len(spans), len(found)))

    content = [t for t in tokens if t.lower() not in _SEARCH_STOPWORDS] or tokens
    hits = {t: [m.span() for m in re.finditer(_word_pattern(t), text, re.IGNORECASE)] for t in dict.fromkeys(content)}
    present = {t: h for t, h in hits.items() if h}
    starts = {t: [s for s, _ in h] for t, h in present.items()}

    def distance(other, position):
        """How far the nearest occurrence of `other` is from `position`."""
        places = starts[other]
        index = bisect.bisect_left(places, position)
        return min(abs(places[i] - position) for i in (index - 1, index) if 0 <= i < len(places))

    if not present:
        # Inside longer words or identifiers, as a plain substring.
        needle = words.strip().lower()
        lowered = text.lower()
        spans, index = [], lowered.find(needle)
        while index >= 0 and len(spans) < 1000:
            spans.append((index, index + len(needle)))
            index = lowered.find(needle, index + 1)
        if spans:
            found = collect(spans)
            return _Passages(found, _found_summary(words, len(spans), len(found), " inside longer words"))
        return _Passages([], f"No match for {words!r}, nor for any of its words. Try other words.")
    scored = []
    for token, token_hits in present.items():
        for start, end in token_hits[:2000]:
            distances = [0 if other == token else distance(other, start) for other in present]
            near = [d for d in distances if d <= window]
            # Tightest first among places with as many words: "serial number for room 898" before "serial number of
            # room 5898", whose 898 is a sentence away.
            scored.append((-len(near), max(near), start, end))
    scored.sort()
    best = -scored[0][0]
    ordered = [(start, end) for neg, _, start, end in scored if -neg == best]
    found = collect(ordered)
    missing = [t for t in content if t not in present]
    note = f"; not found at all: {', '.join(missing)}" if missing else ""
    return _Passages(
        found,
        f"No exact match for {words!r}. Passages with {best} of its {len(content)} words{note}:",
    )


def _found_summary(words, total, shown, where=""):
    """The first line of a search result. A weak model reads any number here as the answer to "how many": the line
    says plainly that it counts places with the words, that the passages are only some of them, and how to count
    with code. The engine recognises it by its opening ("search found "), so it must keep that opening."""
    places = "one place" if total == 1 else f"{total} places"
    if shown >= total:
        return f"search found {words!r}{where} in {places}:"
    return (
        f"search found {words!r}{where} in {places}; only the first {shown} are shown below. That number counts "
        f"places with these words, not what the question asks. To count, add up or compare, use code over all "
        f"lines: lines_with() returns every line that has all the words you give it, one for each condition of "
        f"the question, e.g. print(len(lines_with({words!r})))"
    )


# ---------------------------------------------------------------------------------------------------------------------
# lines_with() and records(): every matching line, as text or as fields, so that code can count, add up and compare
# (search() shows a few passages; aggregates need all of them)
# ---------------------------------------------------------------------------------------------------------------------

_SHOWN_LINES = 10


class _Lines(list):
    """Every line that matched; prints as a count and the first lines, so printing it never floods the output."""

    def __init__(self, lines, summary):
        super().__init__(lines)
        self.summary = summary

    def __repr__(self):
        if not self:
            return self.summary
        shown = "\n".join(str(item) for item in self[:_SHOWN_LINES])
        rest = len(self) - _SHOWN_LINES
        more = f"\n... and {rest} more (the list holds all {len(self)})" if rest > 0 else ""
        return f"{self.summary}\n{shown}{more}"

    __str__ = __repr__


class _Line(str):
    """A line of `lines_with()`: text, whose fields can also be read by name (`line["status"]`, None when the line
    has no such field). Weak models treat the lines as records; a TypeError there ends in repeated code."""

    def __new__(cls, text, rows, index):
        line = super().__new__(cls, text)
        line._rows, line._index = rows, index
        return line

    def __getitem__(self, key):
        if not isinstance(key, str):
            return super().__getitem__(key)
        fields = self._rows.fields(self._index) or {}
        if key in fields:
            return fields[key]
        return next((value for name, value in fields.items() if str(name).lower() == key.lower()), None)

    def get(self, key, default=None):
        value = self[key]
        return default if value is None else value


# Said when code compares or adds up whole records. Weak models write max(records(...)) for "which value has the
# largest total", and Python's own message ("'>' not supported between instances of ...") does not say what to do.
_RECORDS_ARE_NOT_VALUES = (
    "{what}: a record is a dict of fields, not one value. For the record with the largest value of a field: "
    "max(rows, key=lambda r: r[\"field\"]). To add up a field: sum(r[\"field\"] for r in rows). For the value of "
    "a field with the largest total of a number field: sum_by(\"field\", \"number field\"). For the most common "
    "value of a field: count_by(\"field\")."
)


class _Record(dict):
    """The fields of one line. A field the line does not have reads as None instead of raising KeyError: records of
    one text often differ in their fields, and `r["x"] == "y"` should simply be false for those."""

    __slots__ = ()

    def __missing__(self, key):
        # r["Took_MS"] for the field "took ms": the question's spelling rather than the text's.
        if isinstance(key, str):
            wanted = _field_name(key)
            for name, value in self.items():
                if isinstance(name, str) and _field_name(name) == wanted:
                    return value
        return None

    def _not_a_value(self, *_args):
        raise TypeError(_RECORDS_ARE_NOT_VALUES.format(what="records cannot be compared or added up"))

    __lt__ = __le__ = __gt__ = __ge__ = __add__ = __radd__ = _not_a_value


_NUMBER = re.compile(r"[+-]?(?:0|[1-9]\d*)(?:\.\d+)?")
# key=value, the value quoted or running to the next space, comma, semicolon or bar.
_EQUALS_PAIR = re.compile(r"""(?<![\w.-])([A-Za-z_][\w.-]*)\s?=\s?("[^"]*"|'[^']*'|[^\s,;|]*)""")
# key: value, the value running to the next comma, semicolon or bar (a time such as 06:56:21 stays whole).
_COLON_PAIR = re.compile(r"""(?<![\w.-])([A-Za-z_][\w.-]*):\s+("[^"]*"|'[^']*'|[^,;|]*[^\s,;|])""")
# A condition written as a field and its value: "status=error", "status: error".
_CONDITION = re.compile(r"([A-Za-z_][\w.-]*)\s*[=:]\s*(\S.*)")


def _value(text):
    """A field's text as int or float when it is written as a plain number ("007" and "1e5" stay text)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if _NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    return text


def _csv_header(lines):
    """(column names, delimiter) when the first line is a delimited header that the next line fits, else (None, None)."""
    import csv

    if len(lines) < 2 or _parse_record(lines[0]) is not None:
        return None, None
    for delimiter in (",", "\t", ";", "|"):
        head = next(csv.reader([lines[0]], delimiter=delimiter))
        row = next(csv.reader([lines[1]], delimiter=delimiter))
        names = [name.strip() for name in head]
        if (
            len(names) >= 2
            and len(row) == len(names)
            and all(names)
            and len(set(names)) == len(names)
            and not any(_NUMBER.fullmatch(name) for name in names)
        ):
            return names, delimiter
    return None, None


def _field_name(name):
    """A field's name for comparison: case, and spaces, hyphens and underscores between words, do not matter."""
    return re.sub(r"[\s_-]+", "_", name.strip()).lower()


# One clause of a sentence that states a field: "the status was error", "took ms recorded as 329", "host db-1".
_PROSE_CLAUSE = re.compile(
    r"(?:the\s+)?(?P<name>[A-Za-z][\w]*(?:\s+[A-Za-z][\w]*){0,2}?)"
    r"(?:\s+(?:was|is|were|are|equals|[a-z]+ed\s+as)\s+|\s*[=:]\s*|\s+)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s\"']+)",
    re.IGNORECASE,
)
_PROSE_SPLIT = re.compile(r",\s+(?:and\s+)?|;\s+|\s+and\s+|\s+-\s+|:\s+(?=[A-Za-z])")


def _prose_record(line):
    """The fields of a sentence made of clauses that each state one ("At 06:56, the host was api-1, status error
    and took ms recorded as 87."), when at least three of its clauses do and they are most of them; else None."""
    clauses = [c.strip().rstrip(".!;") for c in _PROSE_SPLIT.split(line.strip()) if c.strip()]
    fields = {}
    for clause in clauses:
        match = _PROSE_CLAUSE.fullmatch(clause)
        if match and match.group("name").lower() not in ("at", "on", "in", "entry"):
            fields.setdefault(match.group("name").lower(), _value(match.group("value")))
    if len(fields) >= 3 and 2 * len(fields) >= len(clauses):
        return _Record(fields)
    return None


def _parse_record(line):
    """The fields of a line: its JSON object (also after a prefix, as in `RECORD {...}`), else its key=value pairs,
    else its `key: value` pairs (two or more, so that a lone "Note: ..." is not a record), else the clauses of a
    sentence that each state a field (see `_prose_record`); None when it has none."""
    start, end = line.find("{"), line.rfind("}")
    if 0 <= start < end:
        try:
            value = json.loads(line[start : end + 1])
        except ValueError:
            value = None
        if isinstance(value, dict):
            return _Record(value)
    pairs = _EQUALS_PAIR.findall(line)
    if not pairs:
        pairs = _COLON_PAIR.findall(line)
        if len(pairs) < 2:
            return _prose_record(line)
    return _Record((key, _value(value)) for key, value in pairs)


class _Rows:
    """The non-empty lines of a context, each with its fields (parsed when first needed)."""

    def __init__(self, context):
        if isinstance(context, (list, tuple)) and context and all(isinstance(item, dict) for item in context):
            self.lines = [" ".join(f"{key}={value}" for key, value in item.items()) for item in context]
            self.records = [_Record(item) for item in context]
            self.parsed = [True] * len(context)
            self.names, self.delimiter, self.first = None, None, 0
            return
        if isinstance(context, (list, tuple)):
            lines = []
            for item in context:
                lines.extend(item.splitlines() if isinstance(item, str) else [_safe_str(item)])
        else:
            lines = _searchable_text(context).splitlines()
        self.lines = [line for line in lines if line.strip()]
        self.records = [None] * len(self.lines)
        self.parsed = [False] * len(self.lines)
        self.names, self.delimiter = _csv_header(self.lines)
        # A CSV header names the fields; it is not a record itself.
        self.first = 0 if self.names is None else 1

    def fields(self, index):
        if not self.parsed[index]:
            self.parsed[index] = True
            self.records[index] = self._parse(index)
        return self.records[index]

    def _parse(self, index):
        line = self.lines[index]
        if self.names is None:
            return _parse_record(line)
        if index == 0:
            return None
        import csv

        row = next(csv.reader([line], delimiter=self.delimiter))
        return _Record(zip(self.names, map(_value, row))) if len(row) == len(self.names) else None


# The rows of the text the helpers were last called on. A cell often calls several helpers over the same context, and
# each would otherwise split it into lines and parse the fields of the lines again. Only for text (immutable) and up
# to a size where keeping the lines costs little; the text itself is kept too, so `is` cannot match another object.
# One (text, rows) tuple, replaced whole, so that threads of other sessions never see half of an entry.
_ROWS_CACHE_MAX_CHARS = 64 * 1024 * 1024
_rows_cache = None


def _rows_of(context):
    global _rows_cache
    if not isinstance(context, str) or len(context) > _ROWS_CACHE_MAX_CHARS:
        return _Rows(context)
    cached = _rows_cache
    if cached is not None and cached[0] is context:
        return cached[1]
    rows = _Rows(context)
    _rows_cache = (context, rows)
    return rows


# A condition written as words: "return_status lost", "branch is riverside", "sku name = mirror".
_WORDS_CONDITION = re.compile(
    r"([A-Za-z_][\w.-]*(?:\s+(?!(?:is|was)\s)[A-Za-z_][\w.-]*)?)\s+(?:(?:is|was|=|:)\s+)?(\S+)", re.IGNORECASE
)


class _Term:
    """One word or condition of lines_with / records: the text as written (ignoring case, at word boundaries where it
    begins or ends with a word character, so "user=u11" is not in "user=u1101" and "error" is not in "errors"); a
    condition `field=value` also matches a line whose field has that value in any layout (`status: error`,
    `"status": "error"`, a CSV column, a sentence), and so does a field and its value written as words ("status
    error", "branch is riverside"); the name of a CSV column matches every row (the header holds it)."""

    def __init__(self, text, helper):
        if not isinstance(text, str) or not text.strip():
            raise TypeError(f"{helper}() takes words as strings, e.g. {helper}(\"error\", \"user=alice\"); got {text!r}")
        self.text = text.strip()
        start = r"(?<!\w)" if re.match(r"\w", self.text) else ""
        end = r"(?!\w)" if re.search(r"\w$", self.text) else ""
        self.pattern = re.compile(start + re.escape(self.text) + end, re.IGNORECASE)
        condition = _CONDITION.fullmatch(self.text) or _WORDS_CONDITION.fullmatch(self.text)
        self.field = None
        if condition:
            self.field = (_field_name(condition.group(1)), condition.group(2).strip().strip("'\"").lower())
            # Every layout writes the value itself: lines without it are not parsed (which is slow) at all.
            self.value_pattern = re.compile(re.escape(self.field[1]), re.IGNORECASE)
        # Only `field=value` says for sure that it is a condition; "loan records" is just two words.
        self.is_condition = _CONDITION.fullmatch(self.text) is not None

    def matches(self, rows, index):
        if self.pattern.search(rows.lines[index]):
            return True
        if rows.names is not None and not self.is_condition and self.text.lower() in (n.lower() for n in rows.names):
            # A CSV column's name is written only in the header: a row "has" it when it has that column.
            return True
        if self.field is None or not self.value_pattern.search(rows.lines[index]):
            return False
        fields = rows.fields(index)
        if not fields:
            return False
        name, wanted = self.field
        return any(
            _field_name(str(key)) == name and _safe_str(value).lower() == wanted for key, value in fields.items()
        )


def _matching_rows(context, words, helper):
    """The terms, the rows, and the indexes of the rows that match every term (all rows but a CSV header when none)."""
    terms = [_Term(word, helper) for word in words]
    rows = _rows_of(context)
    indexes = [i for i in range(rows.first, len(rows.lines)) if all(term.matches(rows, i) for term in terms)]
    return [term.text for term in terms], rows, indexes


# The opening of the note printed when a word given to lines_with / records (and the helpers built on them) occurs in
# no line at all. The engine recognises it (crates/engine/src/run/answer_policy.rs): a count of 0 built on such a
# word says nothing about the question, so it must keep this opening.
ABSENT_WORDS_OPENING = "Not in any line of context: "


def _field_values(rows, name):
    """How often each value of the field `name` (any case) occurs in the rows, most common first."""
    counts = collections.Counter()
    for index in range(rows.first, len(rows.lines)):
        fields = rows.fields(index)
        if fields:
            for key, value in fields.items():
                if _field_name(str(key)) == name:
                    counts[_safe_str(value)] += 1
    return counts.most_common()


def _none_found(helper, noun, terms, rows, fixed=()):
    """Why nothing matched. A word that occurs in no line at all (often a word of the question that names what is
    counted, "loan records", which the lines never write) makes every count 0 whatever the data says: that is
    printed at once, with the count without those words, because the empty list is usually passed straight to len()
    and its own summary is never seen. A condition on a field that exists, with a value it never has, is a real
    "none": it lists the values the field has instead. `fixed`: the helper's arguments before the words."""
    parsed = [_Term(t, helper) for t in terms]
    listed = ", ".join(repr(t) for t in terms)
    indexes = range(rows.first, len(rows.lines))
    absent, never = [], []
    for term in parsed:
        if any(term.matches(rows, i) for i in indexes):
            continue
        values = _field_values(rows, term.field[0]) if term.field else []
        (never if values else absent).append((term, values))
    if absent:
        missing = ", ".join(repr(term.text) for term, _ in absent)
        rest = [t.text for t in parsed if all(t is not term for term, _ in absent)]
        call = ", ".join(repr(t) for t in (*fixed, *terms))
        note = f"{ABSENT_WORDS_OPENING}{missing}. So {helper}({call}) finds nothing; "
        note += "that says nothing about the question."
        if rest:
            others = ", ".join(repr(t) for t in rest)
            count = sum(1 for i in indexes if all(t.matches(rows, i) for t in parsed if t.text in rest))
            again = ", ".join(repr(t) for t in (*fixed, *rest))
            note += f" Without {missing}: {_count(count, 'line')} with {others}: {helper}({again})."
        else:
            note += " Find how the text writes it with search()."
        print(note)
        return f"No {noun} contains all of: {listed} (see the line above)."
    if never:
        told = "; ".join(
            f"{term.text!r} is in no line, the values of {term.field[0]!r} are: "
            + ", ".join(f"{value} ({n})" for value, n in values[:12])
            + (f" and {len(values) - 12} more" if len(values) > 12 else "")
            for term, values in never
        )
        return f"No {noun} contains all of: {listed}. {told}."
    # "lines_with('sku mirror', 'sku lamp')" for "more mirror or lamp sales?": each word's own count is what was meant.
    each = ", ".join(
        f"{term.text!r} is in {_count(sum(1 for i in indexes if term.matches(rows, i)), 'line')}" for term in parsed
    )
    return (
        f"No {noun} contains all of: {listed}. Each of them is in some line, but no line has all of them: {each}. "
        f"To count each one, give it alone: len(lines_with({terms[0]!r}))."
    )


def _count(n, noun):
    return f"1 {noun}" if n == 1 else f"{n} {noun}s"


def _describe_terms(terms):
    if len(terms) == 1:
        return f"with {terms[0]!r}"
    return "with all of " + ", ".join(repr(t) for t in terms)


def lines_with_text(context, *words):
    """Every line of `context` that contains all of `words` (see `_Term`); no words: every non-empty line."""
    terms, rows, indexes = _matching_rows(context, words, "lines_with")
    if not terms:
        every = [_Line(rows.lines[i], rows, i) for i in range(len(rows.lines))]
        return _Lines(every, f"{_count(len(rows.lines), 'line')} in context:")
    if not indexes:
        return _Lines([], _none_found("lines_with", "line", terms, rows))
    found = [_Line(rows.lines[i], rows, i) for i in indexes]
    return _Lines(found, f"{_count(len(indexes), 'line')} {_describe_terms(terms)}:")


def records_text(context, *words):
    """The lines of `context` that contain all of `words`, each parsed into a dict of its fields: a JSON object,
    `key=value` or `key: value` pairs, or the columns of a CSV whose first line names them. Numbers become int/float.
    Lines without fields are left out. A list of dicts (a JSON file) gives its dicts."""
    terms, rows, indexes = _matching_rows(context, words, "records")
    if terms and not indexes:
        return _Lines([], _none_found("records", "line", terms, rows))
    found = [record for record in (rows.fields(i) for i in indexes) if record]
    if not found:
        where = f"lines with {', '.join(repr(t) for t in terms)}" if terms else "lines"
        return _Lines(
            [],
            f"No records: no {where} with fields (key=value pairs, JSON objects or CSV columns). "
            "Look at a few lines with print(context[:500]).",
        )
    described = f"from lines {_describe_terms(terms)}" if terms else "(one per line with fields)"
    return _Lines(found, f"{_count(len(found), 'record')} {described}:")


# ---------------------------------------------------------------------------------------------------------------------
# count_by() and sum_by(): the value of a field with the most records, or with the largest total of a number field
# ("which team is most common", "summing took_ms per outcome, which is highest"). Weak models get these wrong with
# records() and Counter (they compare dicts, index the wrong thing, or answer a number seen in a passage); one call
# that prints the ranking leaves nothing to get wrong.
# ---------------------------------------------------------------------------------------------------------------------

_SHOWN_GROUPS = 15
# A number as a field may write it: "1,234", "$12.50", "87ms", "12.5 %".
_LOOSE_NUMBER = re.compile(r"[-+]?[$€£]?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*[A-Za-z%]{0,3}")


class _Pair(tuple):
    """(value, count or total). Compares by the number first, so max(), min() and sorted() over a ranking go by the
    count or total, as meant (a plain tuple compares the values' names first: max() would give the last name)."""

    def _key(self):
        return (self[1], _safe_str(self[0]))

    def __lt__(self, other):
        return self._key() < other._key() if isinstance(other, _Pair) else tuple.__lt__(self, other)

    def __le__(self, other):
        return self._key() <= other._key() if isinstance(other, _Pair) else tuple.__le__(self, other)

    def __gt__(self, other):
        return self._key() > other._key() if isinstance(other, _Pair) else tuple.__gt__(self, other)

    def __ge__(self, other):
        return self._key() >= other._key() if isinstance(other, _Pair) else tuple.__ge__(self, other)


class _Groups(list):
    """(value, count or total) pairs, largest first. Prints as a line saying what was computed, the ranking, and the
    values at both ends by name: weak models answer with the last value they read, so the list must not end on the
    smallest without saying that it is the smallest."""

    def __init__(self, pairs, summary, ends=("most common", "least common")):
        super().__init__(_Pair(pair) for pair in pairs)
        self.summary = summary
        self.ends = ends

    def most_common(self, n=None):
        """Like Counter.most_common: the first n pairs (all when n is None)."""
        return list(self) if n is None else list(self[: max(0, int(n))])

    def _end(self, label, total):
        values = [str(value) for value, n in self if n == total]
        if len(values) == 1:
            return f"{label}: {values[0]} ({total})."
        return f"{label}: a tie between {', '.join(values)} ({total} each)."

    def __repr__(self):
        if not self:
            return self.summary
        shown = "\n".join(f"  {value}: {total}" for value, total in self[:_SHOWN_GROUPS])
        rest = len(self) - _SHOWN_GROUPS
        more = f"\n  ... and {rest} more (the list holds all {len(self)})" if rest > 0 else ""
        most, least = self.ends
        ends = self._end(most[0].upper() + most[1:], self[0][1])
        if len(self) > 1 and self[0][1] != self[-1][1]:
            ends = self._end(least[0].upper() + least[1:], self[-1][1]) + "\n" + ends
        return f"{self.summary}\n{shown}{more}\n{ends}"

    __str__ = __repr__

    def _not_a_number(self, *_):
        # count_by("status", "denied") * count_by("event", "search") for "how many have both": weak models take a
        # ranking for a count. List arithmetic would repeat or join the pairs without a word; say what to do instead.
        call = self.summary.split(":", 1)[0] if self.summary.startswith(("count_by(", "sum_by(")) else "This ranking"
        raise TypeError(
            f"{call} is a ranking (each value with its count or total), not a number, so it cannot be used in "
            "arithmetic. To count the lines that meet several conditions, use len(lines_with(\"word1\", \"word2\")) "
            "with one word for each condition; one value's number is dict(ranking)[\"value\"]."
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _not_a_number
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __iadd__ = __imul__ = _not_a_number


def _field_key(records, name):
    """The key the records use for the field called `name`: as written, else ignoring case and the difference
    between spaces, hyphens and underscores ("Return Status" is "return_status"); None when no record has it."""
    if not isinstance(name, str) or not name.strip():
        return None
    for record in records:
        if name in record:
            return name
    wanted = _field_name(name)
    # "outcomes" for the field outcome, as a question's wording has it.
    singular = wanted[:-1] if len(wanted) > 3 and wanted.endswith("s") and not wanted.endswith("ss") else wanted
    for candidate in dict.fromkeys((wanted, singular)):
        for record in records:
            for key in record:
                if _field_name(str(key)) == candidate:
                    return key
    # "team value" for the field team, as "which team value is most common" has it: one word of the name, when only
    # one of its words names a field; "ms" for the field "took ms", when only one field has that word.
    words = set(wanted.split("_"))
    keys = {key for record in records[:200] for key in record}
    named = {key for key in keys if _field_name(str(key)) in words}
    if not named and len(words) == 1:
        named = {key for key in keys if wanted in _field_name(str(key)).split("_")}
    return named.pop() if len(named) == 1 else None


def _as_number(value):
    """A field's value as a number (also "1,234", "$12.50", "87ms"), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    match = _LOOSE_NUMBER.fullmatch(_safe_str(value).strip())
    if not match:
        return None
    whole = match.group(1).replace(",", "")
    return float(whole + match.group(2)) if match.group(2) else int(whole)


def _grouped_records(context, helper, words, fixed):
    """(terms, rows, records of the lines with all of `words`, None), or (terms, rows, None, why there are none)."""
    terms, rows, indexes = _matching_rows(context, words, helper)
    if terms and not indexes:
        return terms, rows, None, _none_found(helper, "line", terms, rows, fixed)
    found = [record for record in (rows.fields(i) for i in indexes) if record]
    if not found:
        return terms, rows, None, (
            f"No records: no lines {_describe_terms(terms) if terms else ''} with fields (key=value pairs, JSON "
            "objects or CSV columns). Look at a few lines with print(context[:500])."
        )
    return terms, rows, found, None


def _no_such_field(helper, name, records):
    fields = list(dict.fromkeys(str(key) for record in records[:50] for key in record))
    return ValueError(
        f"{helper}(): no record has a field {name!r}. The records have these fields: {', '.join(fields)}. "
        f"{helper}() takes field names first, then the words of lines to keep; for the total of one field over the "
        f"lines with a condition, use sum(r[\"field\"] for r in records(\"condition\"))."
    )


def _field_list(records):
    return ", ".join(dict.fromkeys(str(key) for record in records[:50] for key in record))


class _Total(_Groups):
    """One total, when sum_by() was given no field to group by: prints what was added up and the total."""

    def __repr__(self):
        return f"{self.summary}\nTotal: {self[0][1]}"

    __str__ = __repr__


def _among(terms, n):
    return f"{_count(n, 'record')}" + (f" {_describe_terms(terms)}" if terms else "")


def count_by_text(context, field, *words):
    """How many records of the lines with all of `words` have each value of `field`, most common first."""
    terms, _, found, why = _grouped_records(context, "count_by", words, (field,))
    if found is None:
        return _Groups([], why)
    key = _field_key(found, field)
    if key is None:
        # count_by("lost", "poetry") for "how many loans are lost and in poetry": values where the field belongs.
        # When the first word is in the lines, count the lines with all of the words, as lines_with() does.
        all_words = (field, *words)
        _, _, indexes = _matching_rows(context, all_words, "count_by")
        if not indexes:
            raise _no_such_field("count_by", field, found)
        lines = lines_with_text(context, *all_words)
        lines.summary = (
            f"count_by(): {field!r} is not a field of the records (their fields: {_field_list(found)}), so it was "
            f"taken as a word of the lines. {lines.summary}"
        )
        return lines
    counts = collections.Counter(record[key] for record in found if record.get(key) is not None)
    without = len(found) - sum(counts.values())
    lacking = f" ({_count(without, 'record')} without {key})" if without else ""
    summary = (
        f"count_by({', '.join(repr(t) for t in (field, *terms))}): how many of the {_among(terms, len(found))} "
        f"have each value of {key}{lacking}, most common first:"
    )
    groups = _Groups(counts.most_common(), summary, (f"most common {key}", f"least common {key}"))
    return _with_fixed_field_note(groups, key, terms, found, "count_by")


def _with_fixed_field_note(groups, key, terms, found, helper):
    """`groups`, with a note when it ranks the field that the words fixed ("count_by('kind', 'feature')" for "which
    team is most common among kind=feature": every record has kind feature, so nothing is ranked)."""
    if len(groups) != 1 or not terms:
        return groups
    only = _safe_str(groups[0][0]).lower()
    if not only or not any(only in _safe_str(term).lower() for term in terms):
        return groups
    others = [
        str(k) for k in dict.fromkeys(k for record in found[:200] for k in record)
        if k != key and 1 < len({_safe_str(r.get(k)) for r in found}) <= max(2, len(found) // 2)
    ]
    hint = f" Fields that vary among them: {', '.join(others[:8])}." if others else ""
    example = others[0] if others else "another field"
    groups.summary = (
        f"{groups.summary.rstrip(':')}. Every one of them has {key} {groups[0][0]}, the condition given, so this "
        f"ranks nothing: name the field the question asks about first, e.g. {helper}({example!r}, "
        f"{', '.join(repr(t) for t in terms)}).{hint}"
    )
    return groups


def sum_by_text(context, field, number_field, *words):
    """The total of `number_field` for each value of `field`, over the records of the lines with all of `words`,
    highest first."""
    terms, _, found, why = _grouped_records(context, "sum_by", words, (field, number_field))
    if found is None:
        return _Groups([], why)
    key, number_key = _field_key(found, field), _field_key(found, number_field)
    if key is not None and number_key is None:
        # sum_by("area", "north", "total_usd") for "the total_usd of orders where area is north": a value of the
        # field in the number field's place, and the number field among the words. Keep the lines with the value.
        given = next((w for w in words if isinstance(w, str) and _field_key(found, w) is not None), None)
        is_value = _safe_str(number_field).strip().lower() in (_safe_str(record.get(key)).lower() for record in found)
        if given is None and is_value:
            # sum_by("territory", "central") for "the total amount with territory=central": no number field named;
            # when the records have exactly one field of numbers besides, that is the one to add up.
            keys = dict.fromkeys(k for record in found[:200] for k in record if k != key)
            numeric = [
                k for k in keys
                if sum(1 for r in found if _as_number(r.get(k)) is not None) >= 0.9 * len(found)
            ]
            if len(numeric) == 1:
                given = numeric[0]
        if given is not None and is_value:
            rest = [w for w in words if w is not given]
            return sum_by_text(context, field, given, f"{key}={_safe_str(number_field).strip()}", *rest)
    if key is None and number_key is not None:
        # sum_by("order records", "amount", "territory=central") for "the total amount with territory central": no
        # field to group by, so the plain total. A first word that the lines write is a condition ("north"); one
        # they never write ("order records") names what is added up and is left out.
        with_field, rows, indexes = _matching_rows(context, (field, *words), "sum_by")
        kept = [record for record in (rows.fields(i) for i in indexes) if record]
        if kept:
            found, terms, how = kept, with_field, "so it was taken as a word of the lines"
        else:
            how = "and no line has it, so it was left out"
        amounts = [_as_number(record.get(number_key)) for record in found]
        amounts = [amount for amount in amounts if amount is not None]
        total = sum(amounts)
        total = round(total, 10) if isinstance(total, float) else total
        summary = (
            f"sum_by(): {field!r} is not a field of the records (their fields: {_field_list(found)}), {how}. "
            f"{number_key} added up over the {_among(terms, len(found))} ({_count(len(amounts), 'value')}):"
        )
        return _Total([("total", total)], summary)
    for name, resolved in ((field, key), (number_field, number_key)):
        if resolved is None:
            raise _no_such_field("sum_by", name, found)

    def numeric_share(name):
        values = [record[name] for record in found if record.get(name) is not None]
        return sum(1 for value in values if _as_number(value) is not None) / max(1, len(values))

    swapped = ""
    if numeric_share(number_key) < 0.5 <= numeric_share(key):
        # sum_by("took_ms", "outcome") for "sum took_ms by outcome": the number field is the one with numbers.
        key, number_key = number_key, key
        swapped = f" ({number_key!r} is the field with numbers, so it is the one added up)"
    totals, skipped = {}, 0
    for record in found:
        group, amount = record.get(key), _as_number(record.get(number_key))
        if group is None or amount is None:
            skipped += 1
            continue
        totals[group] = totals.get(group, 0) + amount
    ranked = sorted(
        ((group, round(total, 10) if isinstance(total, float) else total) for group, total in totals.items()),
        key=lambda pair: -pair[1],
    )
    lacking = f" ({_count(skipped, 'record')} without both fields left out)" if skipped else ""
    summary = (
        f"sum_by({', '.join(repr(t) for t in (field, number_field, *terms))}): {number_key} added up for each value "
        f"of {key} over the {_among(terms, len(found))}{lacking}{swapped}, highest total first:"
    )
    groups = _Groups(ranked, summary, (f"highest total of {number_key}", f"lowest total of {number_key}"))
    return _with_fixed_field_note(groups, key, terms, found, "sum_by")


def _prepare_quickly(source, filename):
    """`Session.prepare` for the usual cell, whose last line is an expression at the start of a line, or None.

    Why: reading a cell into a syntax tree and compiling the tree builds every node twice (as Python objects, then
    back), and that was about half of a short cell's cost. Here the lines before the last are compiled as they are, and
    the last line alone as an expression, at its own line. This is the split the tree would give: the lines before
    compile as a whole program, so the last line, at the start of a line, begins a statement of its own; compiled as
    an expression, it is one. Everything else, and any doubt, takes the tree's way.
    """
    if "FINAL" in source or "__future__" in source:
        return None
    head, newline, last = source.rstrip().rpartition("\n")
    # Indented or a comment: part of a block, or not the last statement. A backslash before it: a continued line.
    # Triple quotes in it: it could end a string the lines before it begin.
    if not last or last[0] in " \t\f#" or head.endswith(("\\", "\\\r")) or '"""' in last or "'''" in last:
        return None
    # Plainly a statement (an assignment, `import`, `for` ...): compiling it as an expression would only fail.
    if _PLAIN_STATEMENT.match(last):
        return None
    at_its_line = "\n" * (head.count("\n") + 1) + last if newline else last
    try:
        last_code = compile(at_its_line, filename, "eval", dont_inherit=True)
        body = compile(head, filename, "exec", dont_inherit=True) if newline else _NOTHING_BEFORE
    except SyntaxError:
        return None
    return body, last_code


_PLAIN_STATEMENT = re.compile(
    r"[A-Za-z_][\w.\[\]'\" ]*(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)"
    r"|(?:assert|async|break|class|continue|def|del|for|from|global|if|import|nonlocal|pass|raise|return|try|while"
    r"|with)\b"
)

# What runs before a one-line cell's expression.
_NOTHING_BEFORE = compile("", "<cell>", "exec", dont_inherit=True)


def _final_of_a_name(tree):
    """The name in a cell that ends with `FINAL(name)`, a bare name as its only argument; else None."""
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return None
    call = tree.body[-1].value
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "FINAL"
        and len(call.args) == 1
        and not call.keywords
        and isinstance(call.args[0], ast.Name)
    ):
        return call.args[0].id
    return None


def helpers_for(context):
    """The helper functions over `context` that a session starts with. Also what the conformance tests give plain
    python3, so all executors are compared with it on the same code."""

    def search(words, max_results=10, window=200):
        """Passages of `context` that contain `words` (case- and plural-insensitive; when the exact phrase is
        absent, the passages with most of the words). Shows a few places; count with lines_with()."""
        return search_text(context, words, max_results, window)

    def lines_with(*words):
        """Every line of `context` that contains all of `words` (each as written, ignoring case), as a list."""
        return lines_with_text(context, *words)

    def records(*words):
        """The lines of `context` that contain all of `words`, each as a dict of its fields (key=value, JSON or CSV
        columns; numbers as int/float; a missing field reads as None), as a list."""
        return records_text(context, *words)

    def count_by(field, *words):
        """How many records (of the lines with all of `words`) have each value of `field`, most common first, as a
        list of (value, count) pairs."""
        return count_by_text(context, field, *words)

    def sum_by(field, number_field, *words):
        """The total of `number_field` for each value of `field` (over the lines with all of `words`), highest
        first, as a list of (value, total) pairs."""
        return sum_by_text(context, field, number_field, *words)

    # Counter is the tool for "which is most common" and "how many of each"; weak models use it and forget the import.
    return {
        "search": search,
        "lines_with": lines_with,
        "records": records,
        "count_by": count_by,
        "sum_by": sum_by,
        "Counter": collections.Counter,
    }


class SessionCore:
    """One REPL namespace.

    `host_call(kind, prompts, model) -> list[str]` sends a batch of sub-calls to the host; `builtins_table` is the
    builtins dict the session's copy is made from. Subclasses provide `_capture()`: the running cell's capture (an
    object with a `dropped` count) or None.
    """

    def __init__(self, context, host_call, builtins_table):
        own_builtins = dict(builtins_table)
        own_builtins["input"] = _no_input
        self.final_var = None

        def llm_query(prompt, model=None):
            """Calls a sub-model once; returns its answer (or "Error: ..." when the call failed)."""
            return host_call("llm", [_as_prompt(prompt)], _as_model(model))[0]

        def llm_query_batched(prompts, model=None):
            """Calls a sub-model once per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host_call("llm", prompts, _as_model(model))

        def rlm_query(prompt, model=None):
            """Runs a child RLM on the prompt; returns its answer (or "Error: ...")."""
            return host_call("rlm", [_as_prompt(prompt)], _as_model(model))[0]

        def rlm_query_batched(prompts, model=None):
            """Runs one child RLM per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host_call("rlm", prompts, _as_model(model))

        def SHOW_VARS():
            """Lists your variables and their types."""
            found = {name: type(value).__name__ for name, value in self.user_variables().items()}
            if not found:
                return _Text("No variables created yet.")
            return _Text(f"Available variables: {found}")

        def FINAL_VAR(name):
            """Marks the variable called `name` as the final answer; returns its str()."""
            if not isinstance(name, str):
                # A common slip: FINAL_VAR(result) instead of FINAL_VAR("result"). Find the variable by identity.
                matches = [k for k, v in self.user_variables().items() if v is name]
                if not matches:
                    message = _Shown("Error: FINAL_VAR expects the name of a variable as a string, e.g. FINAL_VAR(\"result\")")
                    print(message)
                    return message
                name = matches[0]
            key = name.strip().strip("'\"`").strip()
            if not self.is_visible(key):
                # FINAL_VAR(result) where `result` holds text: the text is no name, but a variable holds it.
                holders = [k for k, v in self.user_variables().items() if v is name]
                if holders:
                    key = holders[0]
            if self.is_visible(key):
                value = _safe_str(self.globals[key])
                self.final_var = (key, value)
                return _Text(value)
            self.final_var = (key, None)
            message = _Shown(
                f"Error: variable {key!r} not found. Available variables: {sorted(self.user_variables())}"
            )
            print(message)
            return message

        self.reserved = {
            "context": context,
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "SHOW_VARS": SHOW_VARS,
            "FINAL_VAR": FINAL_VAR,
        }
        # Also put back after every cell, though not "reserved names" in the protocol's sense: without them later
        # cells would not run properly.
        self.restored = {"__name__": "__main__", "__builtins__": own_builtins, **self.reserved}
        self.globals = dict(self.restored)
        self.answer_slot = {"content": None, "ready": False}
        self.globals["answer"] = self.answer_slot

        def FINAL(value):
            """Ends the run with str(value) as the answer, like answer["content"] = value; answer["ready"] = True.
            Models often write FINAL(...) inside code, where it would otherwise be a NameError."""
            self.final_call = _safe_str(value)

        self.final_call = None
        # Provided but not restored after each cell: code may define its own `search`, `FINAL`, ... .
        self.globals.update(helpers_for(context))
        self.globals["FINAL"] = FINAL
        # Names that exist before any user code ran are never "user variables".
        self.baseline = frozenset(self.globals)

    def _capture(self):
        raise NotImplementedError

    # -- namespace queries ------------------------------------------------------------------------------------------

    def is_user_variable(self, name, value):
        if name.startswith("_") or isinstance(value, types.ModuleType):
            return False
        # `answer` starts as the answer dict; code that stores its own result under that name made a variable of it.
        return name not in self.baseline or (name == "answer" and value is not self.answer_slot)

    def user_variables(self):
        return {name: value for name, value in self.globals.items() if self.is_user_variable(name, value)}

    def is_visible(self, name):
        """Whether FINAL_VAR / get_variable may read `name`: any existing name except dunders."""
        return isinstance(name, str) and bool(name) and not name.startswith("__") and name in self.globals

    def variable_names(self):
        return sorted(self.user_variables())

    def get_variable(self, name):
        if not self.is_visible(name):
            return None
        value = self.globals[name]
        if name in self.baseline and not self.is_user_variable(name, value):
            return None
        return _safe_str(value)

    # -- running cells ----------------------------------------------------------------------------------------------

    def prepare(self, source, cell_number):
        """Compiles a cell; returns (body, last_expression_or_None). Raises SyntaxError."""
        filename = f"<cell {cell_number}>"
        # Lets tracebacks (also of functions defined here and called from later cells) show the source lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        quick = _prepare_quickly(source, filename)
        if quick is not None:
            self.final_word = None
            return quick
        tree = ast.parse(source, filename, "exec")
        self.final_word = _final_of_a_name(tree)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval", dont_inherit=True)
        body = compile(tree, filename, "exec", dont_inherit=True)
        return body, last

    def run(self, prepared, echo_limit):
        """Runs a prepared cell. Like IPython, echoes the repr of a last expression whose value is not None."""
        body, last = prepared
        exec(body, self.globals)
        if last is None:
            return
        try:
            value = eval(last, self.globals)
        except NameError as exc:
            # FINAL(kilo) for the answer "kilo": a word written as the answer, not a variable. (Only a name that is
            # undefined: FINAL(total) with a variable `total` is that variable's value.)
            word = getattr(self, "final_word", None)
            if word is None or getattr(exc, "name", None) != word:
                raise
            self.final_call = word
            return
        if value is None or isinstance(value, _Shown):
            return
        if isinstance(value, (str, bytes)) and len(value) > echo_limit:
            # `context` as the last line of a cell over a 1 GB context: do not build a 1 GB repr just to drop it.
            print(repr(value[:echo_limit]) + " ...")
            capture = self._capture()
            if capture is not None:
                capture.dropped += len(value) - echo_limit
            return
        print(repr(value))

    def describe_error(self, exc, tb=None):
        """(type name, str(exc), short traceback with only the frames of cell code).

        `tb` is passed separately because an exception fetched from C (Python 3.11) may have no __traceback__ yet.
        """
        if tb is None:
            tb = exc.__traceback__
        lines = _cell_traceback_lines(tb)
        lines.extend(traceback.format_exception_only(type(exc), exc))
        return type(exc).__name__, _safe_str(exc), "".join(lines).rstrip("\n")

    def finish(self):
        """After every cell: restores the reserved names; returns (answer or None, (name, value) or None)."""
        self.globals.update(self.restored)
        answer, self.final_call = self.final_call, None
        candidate = self.globals.get("answer")
        try:
            if answer is None and isinstance(candidate, dict) and candidate.get("ready"):
                answer = _safe_str(candidate.get("content"))
        except BaseException:  # a `ready` whose truth value raises: not an answer
            answer = None
        final_var, self.final_var = self.final_var, None
        return answer, final_var
