"""Held-out by template, not only by text: "What is the capital of Japan?" is not held out when the training data
asks "What is the capital of Germany?".

A question's template is its tokens (words and numbers lower-cased, Chinese, Japanese and Korean characters one by
one, as tuneforge.eval.scores tokenises) with every number replaced by "#". Two questions share a template when
their template tokens line up in order (at least 3 tokens, and 55% of the longer question's) and either differ in
one place only (a swapped name, number or phrase: "capital of France" / "capital of the United Kingdom",
"15 plus 27" / "2 + 3", "中国的首都" / "日本的首都") or share a content word, not only function words ("What is
the ... of ...?" alone is no template).
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import SequenceMatcher

from tuneforge.eval.scores import tokenize

__all__ = ["MIN_SHARED", "SHARED_SHARE", "question_template", "shared_templates", "shares_template"]

MIN_SHARED = 3
SHARED_SHARE = 0.55


def question_template(text: str) -> tuple[str, ...]:
    """The question's tokens with numbers replaced by '#'."""
    return tuple("#" if token.isdigit() else token for token in tokenize(text))


_FUNCTION_WORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be do does did what which who whom whose how "
    "many much why when where this that these those it its there their your you i me my we our can could would "
    "should will please".split()
    + list("的是了吗呢在和与把被有个什么哪里谁吧啊")
)


def shares_template(a: str, b: str) -> bool:
    """True when questions `a` and `b` share a template (see the module docstring)."""
    x, y = question_template(a), question_template(b)
    if not x or not y:
        return False
    if x == y:
        return True
    matcher = SequenceMatcher(None, x, y, autojunk=False)
    blocks = [block for block in matcher.get_matching_blocks() if block.size]
    matched = sum(block.size for block in blocks)
    if matched < MIN_SHARED or matched < SHARED_SHARE * max(len(x), len(y)):
        return False
    one_slot = sum(1 for tag, *_ in matcher.get_opcodes() if tag != "equal") <= 1
    shared_words = {token for block in blocks for token in x[block.a : block.a + block.size]}
    return one_slot or bool(shared_words - _FUNCTION_WORDS - {"#"})


def shared_templates(held_out: Iterable[str], seen: Iterable[str]) -> list[tuple[str, str]]:
    """Every (held-out question, seen question) pair that shares a template."""
    seen = list(seen)
    return [(question, other) for question in held_out for other in seen if shares_template(question, other)]
