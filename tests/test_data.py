import pytest

from qid.data import DataError, paragraphs, sample_texts, split_documents


def test_split_is_by_document_and_seeded():
    docs = [(f"d{i}", f"text {i}") for i in range(40)]
    train, held = split_documents(docs, 0.25, seed=3)
    assert len(held) == 10 and len(train) == 30
    assert not {d for d, _ in train} & {d for d, _ in held}
    assert split_documents(docs, 0.25, seed=3) == (train, held)
    assert split_documents(docs, 0.25, seed=4) != (train, held)


def test_paragraphs_filter_short_ones():
    docs = [("a", "long enough paragraph here\n\nshort\n\n  another   long paragraph  ")]
    assert paragraphs(docs, min_chars=20) == [
        ("a#0", "long enough paragraph here"),
        ("a#2", "another long paragraph"),
    ]


def test_sampling_is_seeded_and_refuses_empty_or_too_small_sets():
    texts = [(str(i), f"t{i}") for i in range(50)]
    a = sample_texts(texts, 10, seed=0, name="x")
    assert len(a) == 10 and a.equals(sample_texts(texts, 10, seed=0, name="x"))
    with pytest.raises(DataError, match="eval set 'wiki' is empty"):
        sample_texts([], 10, seed=0, name="wiki")
    with pytest.raises(DataError, match="eval set 'x': n_texts=60 but only 50"):
        sample_texts(texts, 60, seed=0, name="x")
