"""Network faults: what does the shop do when its pricing service is cut off or slow?

`network.partition(a, b)` drops all traffic between two containers until `network.heal()`;
`network.delay(container, ms)` holds back every packet to a container. The shop waits at most
PRICING_TIMEOUT (1 s) for a price and then serves the last one it saw, marked stale.
Timings are only ever checked from below ("took at least the delay"): a busy machine may be
slower, never faster.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from pytest_pycontain import wait


def price(shop, item: str) -> tuple[int, str]:
    """GET /cgi-bin/price?item=ITEM from the shop: (status, body)."""
    host, port = shop.address(8080)
    url = f"http://{host}:{port}/cgi-bin/price?item={item}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def set_price(pricing, item: str, value: int) -> None:
    """Change a price upstream, behind the shop's back."""
    pricing.exec(f"sed -i 's/^{item} .*/{item} {value}/' /srv/prices", timeout=10)


def test_prices_come_fresh_from_upstream(shop):
    assert price(shop, "coffee") == (200, "coffee costs 12 (fresh)\n")


def test_cut_off_it_serves_the_last_known_price_and_recovers(shop, pricing, network):
    assert price(shop, "bread") == (200, "bread costs 5 (fresh)\n")
    set_price(pricing, "bread", 6)

    network.partition(shop, pricing)
    assert price(shop, "bread") == (200, "bread costs 5 (stale)\n")
    wait.until_ready(shop, wait.log("price: pricing:7000 gave no price for bread", timeout=10))

    network.heal()
    assert price(shop, "bread") == (200, "bread costs 6 (fresh)\n")


def test_cut_off_with_nothing_to_fall_back_on_is_a_503(shop, pricing, network):
    network.partition(shop, pricing)
    assert price(shop, "apple") == (503, "no price for apple\n")


def test_a_slow_upstream_is_still_waited_for(shop, pricing, network):
    """100 ms on every packet to pricing: slower (at least the delay), but within the timeout."""
    network.delay(pricing, 100)
    started = time.monotonic()
    assert price(shop, "apple") == (200, "apple costs 3 (fresh)\n")
    assert time.monotonic() - started >= 0.1


def test_an_upstream_slower_than_the_timeout_counts_as_down(shop, pricing, network):
    """2.5 s per packet is past the shop's 1 s timeout: the cached price it is."""
    assert price(shop, "coffee")[1].endswith("(fresh)\n")
    network.delay(pricing, 2500)
    assert price(shop, "coffee") == (200, "coffee costs 12 (stale)\n")
    network.delay(pricing, 0)
    assert price(shop, "coffee") == (200, "coffee costs 12 (fresh)\n")
