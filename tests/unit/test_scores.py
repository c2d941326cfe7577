"""Scorers on small hand-computed cases, English and Chinese."""

from __future__ import annotations

import math

import pytest

from tuneforge.eval.scores import bleu4, contains, corpus_bleu4, exact_match, rouge_l, rouge_n, tokenize

PRED = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_tokenize_splits_words_and_single_cjk_characters():
    assert tokenize("The cat, 猫在垫子上! It's 42.") == ["the", "cat", "猫", "在", "垫", "子", "上", "it's", "42"]
    assert tokenize("Ｐａｒｉｓ。") == ["paris"]  # full-width letters are folded (NFKC)


def test_exact_match_ignores_case_punctuation_and_spacing():
    assert exact_match("  Paris. ", ["paris"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    assert exact_match("北京。", ["上海", "北京"]) == 1.0


def test_contains_needs_whole_adjacent_tokens():
    assert contains("The capital is Paris.", ["paris"]) == 1.0
    assert contains("Parisian food", ["Paris"]) == 0.0
    assert contains("我住在北京市", ["北京"]) == 1.0
    assert contains("new the york", ["new york"]) == 0.0


def test_rouge_on_english():
    # unigrams: the×2, cat, on, mat shared → 5 of 6 each way
    assert rouge_n(PRED, [REF], 1) == pytest.approx(5 / 6)
    # bigrams: "the cat", "on the", "the mat" shared → 3 of 5 each way
    assert rouge_n(PRED, [REF], 2) == pytest.approx(3 / 5)
    # LCS "the cat on the mat" = 5 tokens of 6
    assert rouge_l(PRED, [REF]) == pytest.approx(5 / 6)


def test_rouge_on_chinese_counts_characters():
    assert rouge_n("我爱北京", ["我爱上海"], 1) == pytest.approx(0.5)
    assert rouge_n("我爱北京", ["我爱上海"], 2) == pytest.approx(1 / 3)
    # LCS of 我爱北京天安门 and 我爱天安门 is 我爱天安门 (5): P = 5/7, R = 5/5
    assert rouge_l("我爱北京天安门", ["我爱天安门"]) == pytest.approx(2 * (5 / 7) * 1 / (5 / 7 + 1))


def test_best_reference_wins_and_empty_scores_zero():
    assert rouge_l(PRED, ["dogs bark", REF]) == pytest.approx(5 / 6)
    assert rouge_l("", [REF]) == 0.0 and bleu4("", [REF]) == 0.0 and rouge_n(PRED, [""], 1) == 0.0


def test_sentence_bleu4_with_add_one_smoothing():
    # clipped precisions: 1-gram 5/6; 2-gram 3/5 → (3+1)/(5+1); 3-gram 1/4 → 2/5; 4-gram 0/3 → 1/4; equal lengths
    expected = (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert bleu4(PRED, [REF]) == pytest.approx(expected)
    assert bleu4(REF, [REF]) == pytest.approx(1.0)


def test_bleu_brevity_penalty():
    # "the cat" vs 6-token reference: precisions 1, (1+1)/(1+1), (0+1)/(0+1), (0+1)/(0+1); BP = exp(1 - 6/2)
    assert bleu4("the cat", [REF]) == pytest.approx(math.exp(1 - 6 / 2))


def test_chinese_bleu():
    # 我爱北京 vs 我爱北京天安门: all n-grams match, BP = exp(1 - 7/4)
    assert bleu4("我爱北京", ["我爱北京天安门"]) == pytest.approx(math.exp(1 - 7 / 4))


def test_corpus_bleu_sums_counts_over_answers():
    assert corpus_bleu4([REF, "我爱北京"], [[REF], ["我爱北京"]]) == pytest.approx(1.0)
    # one answer with no 4-gram match and another too short for 4-grams: corpus 4-gram precision 0 → 0
    assert corpus_bleu4([PRED, "ok"], [[REF], ["ok"]]) == 0.0
