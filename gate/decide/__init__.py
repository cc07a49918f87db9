"""Deciding: the policy, its intervals and statistics, and the comparison with a baseline."""
