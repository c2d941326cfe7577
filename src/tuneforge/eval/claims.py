"""Identity claims: does an answer assert a name ("I am Conch", "我叫Conch"), and credit a maker, without negating it?

A name merely mentioned does not count: "I am not Conch." and "Conch is not my name." deny it, and "Conch is a
shell." claims nothing. The answer is cut into clauses at sentence and clause punctuation; a clause claims the
name when it holds the name, refers to the speaker (I, me, my, 我, "you're talking to", "this is", or the name
alone) and no negation comes before the name in that clause or negates it right after. A maker is credited the
same way, without the need for a self-reference ("developed by tuneforge", "由tuneforge开发").
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["claims_name", "credits_maker"]

_CLAUSE_END = re.compile(r"[.!?;:,\n。！？；：，、]+")
_NEGATION_EN = re.compile(
    r"\b(?:not|no|never|neither|nor|none|nobody|nothing|cannot|instead|rather|unlike|pretend\w*|impersonat\w*)\b"
    r"|n't\b"
)
_NEGATION_ZH = re.compile(
    r"不(?!错|客气|仅|但|过|少|同)|没(?!错)|并非|绝非|别(?!人)|无法|未"
)  # not 不错 "fine", 非常 "very"
_NEGATED_AFTER = re.compile(
    r"^\W*(?:(?:is|was|'s|are|did|does|do|has|have|had)\s+not\b|(?:is|was|are|did|does|do|has|have|had)n't\b"
    r"|不|没|并非|并不)"
)
_SELF_EN = re.compile(
    r"\b(?:i|i'm|im|i've|i'd|i'll|me|my|myself|mine|we|we're|us|our)\b"
    r"|\byou(?:'re| are)\s+(?:talking|speaking|chatting)\b|\bthis is\b|\bit(?:'s| is)\b"
)
_SELF_ZH = re.compile(r"我|本人|本助手|这里是|这是")
_GREETING = re.compile(r"^(?:(?:hi|hello|hey|here|yes|sure|ok|okay)\b|\W)*$")


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'").lower()


def _occurrences(clause: str, word: str) -> list[re.Match[str]]:
    """Where `word` occurs in `clause`, as a whole word when it is written in ASCII letters and digits."""
    pattern = re.escape(word)
    if word[:1].isalnum() and word.isascii():
        pattern = r"(?<![a-z0-9])" + pattern
    if word[-1:].isalnum() and word.isascii():
        pattern += r"(?![a-z0-9])"
    return list(re.finditer(pattern, clause))


def _negated(clause: str, match: re.Match[str]) -> bool:
    before, after = clause[: match.start()], clause[match.end() :]
    return bool(_NEGATION_EN.search(before) or _NEGATION_ZH.search(before) or _NEGATED_AFTER.search(after))


def _refers_to_speaker(clause: str, match: re.Match[str]) -> bool:
    rest = clause[: match.start()] + " " + clause[match.end() :]
    return bool(_SELF_EN.search(clause) or _SELF_ZH.search(clause) or _GREETING.match(rest.strip()))


def _asserted(answer: str, word: str, need_self: bool) -> bool:
    word = _normalise(word).strip()
    if not word:
        return False
    for clause in _CLAUSE_END.split(_normalise(answer)):
        for match in _occurrences(clause, word):
            if not _negated(clause, match) and (not need_self or _refers_to_speaker(clause, match)):
                return True
    return False


def claims_name(answer: str, name: str) -> bool:
    """True when a clause of `answer` asserts that the speaker is `name` (see the module docstring)."""
    return _asserted(answer, name, need_self=True)


def credits_maker(answer: str, maker: str) -> bool:
    """True when a clause of `answer` names `maker` and does not negate it."""
    return _asserted(answer, maker, need_self=False)
