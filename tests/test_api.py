import condimmune


def test_every_public_name_exists_and_is_listed_once():
    assert len(condimmune.__all__) == len(set(condimmune.__all__))
    missing = [name for name in condimmune.__all__ if not hasattr(condimmune, name)]
    assert missing == []
