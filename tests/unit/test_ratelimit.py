"""The rate limiter's bucket key: IPv4 per address, IPv6 per /64, IPv4-mapped as IPv4."""

import pytest

from bridge.api.ratelimit import TokenBucketLimiter, bucket_key


@pytest.mark.parametrize("ip, key", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:0:0:0:1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::1", "::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("::ffff:cb00:7107", "203.0.113.7"),
    ("unknown", "unknown"),
    ("not an address", "not an address"),
])
def test_bucket_key(ip, key):
    assert bucket_key(ip) == key


def test_one_64_shares_one_bucket():
    now = [0.0]
    limiter = TokenBucketLimiter(60, 2, clock=lambda: now[0])
    # an attacker rotating through its /64 gets the burst once, not once per address
    results = [limiter.take(bucket_key(f"2001:db8:0:1::{i:x}")) for i in range(1, 6)]
    assert results[:2] == [0.0, 0.0] and all(r > 0 for r in results[2:])
    assert limiter.take(bucket_key("2001:db8:0:2::1")) == 0.0
    assert len(limiter) == 2
