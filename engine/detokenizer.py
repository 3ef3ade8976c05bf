"""Streaming text out of token ids: incremental detokenization and stop strings.

Decoding one token at a time is wrong for byte-level BPE: a character such as "東" or "😀" may span
several tokens, and decoding a prefix of its bytes yields U+FFFD. Decoding the whole output on every step
is correct but quadratic. ``IncrementalDetokenizer`` decodes a short window instead: the text of
``ids[prefix:read]`` (already emitted) and of ``ids[prefix:]``; the difference is the new text. When the
new text ends in U+FFFD the bytes are incomplete, so nothing is emitted and the window grows until the
character is whole. A few tokens of context before ``read`` keep merges and leading spaces right.

``StopStringMatcher`` finds stop strings in the streamed text, including ones that straddle tokens, and
holds back a tail that could still become a stop string so that it is never emitted and then retracted.
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int], skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(prompt_ids)
        self.prefix_offset = max(len(self.ids) - CONTEXT_TOKENS, 0)
        self.read_offset = len(self.ids)
        self.text = ""
        self._before: str | None = None  # decode of ids[prefix_offset:read_offset], kept while they stand

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes ("" while a character is incomplete)."""
        self.ids.append(int(token_id))
        decode = self.tokenizer.decode
        before = self._before
        if before is None:
            before = decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=self.skip_special_tokens)
            self._before = before
        after = decode(self.ids[self.prefix_offset:], skip_special_tokens=self.skip_special_tokens)
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHAR):
            return ""
        new_text = after[len(before):]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        self._before = None
        self.text += new_text
        return new_text


class StopStringMatcher:
    """Feed streamed text; get back the text safe to emit and whether a stop string was reached.

    The stop string itself is not part of the output (as in the OpenAI API).
    """

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # all text seen, truncated at the stop string once found
        self.emitted = 0
        self.stopped: str | None = None

    def push(self, new_text: str) -> tuple[str, bool]:
        if not self.stops:  # most requests: nothing to match or hold back, and no text to keep
            return new_text, False
        if self.stopped is not None:
            return "", True
        search_from = max(0, len(self.text) - self.longest + 1)
        self.text += new_text
        hit = None
        for stop in self.stops:
            index = self.text.find(stop, search_from)
            if index >= 0 and (hit is None or index < hit[0]):
                hit = (index, stop)
        if hit is not None:
            self.text = self.text[:hit[0]]
            self.stopped = hit[1]
            return self._emit(len(self.text)), True
        return self._emit(len(self.text) - self._holdback()), False

    def flush(self) -> str:
        """The held-back tail, to emit when the sequence finishes for another reason."""
        return self._emit(len(self.text))

    def _holdback(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        for size in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0

    def _emit(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = self.text[self.emitted:upto]
        self.emitted = upto
        return out
