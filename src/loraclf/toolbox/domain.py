"""A domain classifier between a run's training texts and a new file: how different are they, and which rows?

If a cheap classifier can tell a file's rows from the training rows, the file is shifted, and the rows it is surest
about are the least typical. The classifier works on surface features that need no model: hashed word uni- and
bigrams and character 3-5-grams within word boundaries (spelling, garbling, numbers, punctuation), TF-IDF weighted
(sublinear term frequency), and a logistic regression with balanced class weights, so a probability of 0.5 means
"no evidence either way" whatever the two sides' sizes. Hashing keeps memory fixed and needs no vocabulary pass.

It is scored by stratified 5-fold cross-validation: the ROC AUC of the out-of-fold probabilities (0.5: the file
looks like training; 1.0: every row is told apart). Each file row's **atypicality** is its out-of-fold probability
of belonging to the file. At most :data:`MAX_ROWS` rows a side are used (sampled with the seed); file rows beyond
them are scored by a classifier fitted on all sampled rows, which never saw them either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ROWS = 5000  # rows a side: the AUC's standard error at this size is well under 0.01
FOLDS = 5
HASH_FEATURES = 2**18  # per analyser: few collisions for 10,000 news texts; larger only slows each fit


@dataclass
class DomainResult:
    """The domain classifier's verdict.

    ``auc`` is the cross-validated ROC AUC (None when a side has fewer than two rows); ``fold_aucs`` per fold;
    ``target_scores`` the atypicality of every file row, shape (file rows,); ``train_scores`` the out-of-fold
    probability of "file" of the sampled training rows, shape (``n_train``,), for comparison.
    """

    auc: float | None
    fold_aucs: list[float]
    target_scores: np.ndarray
    train_scores: np.ndarray
    n_train: int
    n_target: int


def hashed_counts(texts: list[str]):
    """Hashed word 1-2-gram and char_wb 3-5-gram counts, a sparse matrix of shape (rows, 2 · HASH_FEATURES).

    Hashing is stateless (nothing is fitted), so the rows are counted once and the folds reuse them.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import HashingVectorizer

    def hashed(**kw):
        return HashingVectorizer(n_features=HASH_FEATURES, alternate_sign=False, norm=None, **kw)

    word, char = hashed(analyzer="word", ngram_range=(1, 2)), hashed(analyzer="char_wb", ngram_range=(3, 5))
    return hstack([word.transform(texts), char.transform(texts)]).tocsr()


def pipeline(seed: int):
    """TF-IDF (sublinear term frequency, fitted on the rows it is given) → balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfTransformer(sublinear_tf=True),
        LogisticRegression(
            C=1.0, class_weight="balanced", max_iter=1000, solver="liblinear", random_state=seed
        ),
    )


def domain_classifier(train_texts: list[str], target_texts: list[str], seed: int = 0) -> DomainResult:
    """Fit and cross-validate the classifier "file row vs training row" (see the module docstring).

    Args:
        train_texts: The run's training texts (a sample of them is taken).
        target_texts: The file's texts; every one gets an atypicality score.
        seed: Sampling, fold and solver seed.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(train_texts))[:MAX_ROWS]
    tg = rng.permutation(len(target_texts))[:MAX_ROWS]
    scores = np.full(len(target_texts), 0.5)
    if min(len(tr), len(tg)) < 2:  # too few rows a side to cross-validate anything
        return DomainResult(None, [], scores, np.full(len(tr), 0.5), len(tr), len(tg))
    x = hashed_counts([train_texts[i] for i in tr] + [target_texts[i] for i in tg])
    y = np.r_[np.zeros(len(tr), int), np.ones(len(tg), int)]
    oof = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=min(FOLDS, len(tr), len(tg)), shuffle=True, random_state=seed)
    fold_aucs = []
    for fit_rows, held in folds.split(x, y):
        oof[held] = pipeline(seed).fit(x[fit_rows], y[fit_rows]).predict_proba(x[held])[:, 1]
        fold_aucs.append(float(roc_auc_score(y[held], oof[held])))
    scores[tg] = oof[len(tr) :]
    rest = np.setdiff1d(np.arange(len(target_texts)), tg)
    if len(rest):
        model = pipeline(seed).fit(x, y)
        scores[rest] = model.predict_proba(hashed_counts([target_texts[i] for i in rest]))[:, 1]
    return DomainResult(float(roc_auc_score(y, oof)), fold_aucs, scores, oof[: len(tr)], len(tr), len(tg))
