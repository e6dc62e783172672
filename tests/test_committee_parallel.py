"""ProcessCommittee (members in their own processes, tinybert/committee_parallel.py) against the slow reference,
committee.member_by_member: the same logits, with and without padding, and clear errors."""

import pytest
import torch

from tinybert.committee import member_by_member
from tinybert.committee_parallel import ProcessCommittee
from tinybert.config import make_model_config
from tinybert.model import BertForSequenceClassification


def _members(k=2, labels=3, **kw):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        config = make_model_config("tiny", vocab_size=50, dropout=0.0, **kw)
        out.append(BertForSequenceClassification(config, labels).eval())
    return out


def test_process_committee_matches_member_by_member():
    members = _members(2) + _members(1, conv_layers=1, conv_channels=2)  # two architectures in one committee
    ids = torch.randint(5, 50, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 6:] = False
    with torch.no_grad():
        ref, ref_mask = member_by_member(members, ids), member_by_member(members, ids, mask)
    with ProcessCommittee(members, max_batch=8, max_length=16) as committee:
        assert len(committee) == 3
        got = committee(ids)
        got_mask = committee(ids, mask)
        again = committee(ids[:2, :5])  # smaller inputs reuse the buffers
        with pytest.raises(ValueError, match="exceeds the committee's buffers"):
            committee(torch.zeros(9, 4, dtype=torch.long))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_mask, ref_mask, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(again, member_by_member(members, ids[:2, :5]), atol=1e-5, rtol=1e-5)
    assert not got_mask[:, 1].allclose(got[:, 1])  # the mask reached the workers


def test_process_committee_refuses_mixed_labels():
    with pytest.raises(ValueError, match="same number of labels"):
        ProcessCommittee(_members(1, labels=3) + _members(1, labels=4))
